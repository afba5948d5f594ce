"""Training runs shared by the integration tests (one session: trained once, asserted on by many)."""

import pytest

from musicpipe import training
from conftest import run_cli


@pytest.fixture(scope="session")
def codec(workspace, demo_data, outputs):
    # codec quality checks after both epochs, through the Dora entry package's hook
    return training.train_codec("demo_cpu", "synthetic_demo", workspace, echo=False, outputs=outputs,
                                codec_check_every=1, codec_check_samples=2)


@pytest.fixture(scope="session")
def lm_none(workspace, codec, outputs):
    return training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, conditioning="none", echo=False,
                             outputs=outputs)


@pytest.fixture(scope="session")
def lm_genre(workspace, codec, outputs):
    # through the seed's script, as users run it
    res = run_cli("train-lm", "--preset", "demo_cpu", "--dataset", "synthetic_demo", "--workspace", str(workspace),
                  "--codec", codec.sig, "--conditioning", "genre", "--outputs", str(outputs), script="musicgen_train.py")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sigs = [line[4:].strip() for line in res.stdout.splitlines() if line.startswith("xp: ")]
    assert len(sigs) == 1, res.stdout[-2000:]
    assert f"train-lm: xp {sigs[0]} done, 2 epoch(s)" in res.stdout
    return sigs[0]


