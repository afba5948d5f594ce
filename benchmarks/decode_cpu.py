"""CPU time of ``audio.stream_mono`` per audio second, fast (amovie) against careful (per packet), one process.

    .venv/bin/python benchmarks/decode_cpu.py FILE [FILE ...] [--repeats 3]

Each file is decoded to 32 kHz mono in 10 s blocks both ways, alternating, best of ``--repeats``
(``time.process_time``: this process's CPU, so other load on the machine matters less than for wall time).
Also checks that both ways give the same samples and says which way the fast call took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import numpy as np

    from musicpipe import audio

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{os.cpu_count()} cores; best of {args.repeats}")
    print(f"{'file':<28}{'audio s':>9}{'careful ms/s':>14}{'fast ms/s':>11}{'fast/careful':>14}  fast path, same")
    for f in args.files:
        best = {False: float("inf"), True: float("inf")}
        out = {}
        for _ in range(args.repeats):
            for fast in (False, True):
                stats: dict = {}
                start = time.process_time()
                blocks = list(audio.stream_mono(f, 32000, 10.0, stats=stats, fast=fast))
                best[fast] = min(best[fast], time.process_time() - start)
                out[fast] = (np.concatenate(blocks), stats.get("path"))
        seconds = out[False][0].size / 32000
        same = out[False][0].size == out[True][0].size and np.array_equal(out[False][0], out[True][0])
        careful_ms, fast_ms = best[False] * 1000 / seconds, best[True] * 1000 / seconds
        print(f"{Path(f).name:<28}{seconds:>9.1f}{careful_ms:>14.3f}{fast_ms:>11.3f}{best[True] / best[False]:>14.2f}  {out[True][1]}, {'bit-identical' if same else 'DIFFERENT'}",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
