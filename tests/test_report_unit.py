"""musicpipe.report without training: health rules on real-shaped histories, reports of XP folders built here."""

from __future__ import annotations

import copy
import html
import json
import math
import typing as tp
from pathlib import Path

import pytest

from musicpipe import report
from musicpipe.report import ReportError, health_findings, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# history.json of a real tiny EnCodec run (demo_cpu preset, 2 epochs, evaluate/generate every 2).
CODEC_HISTORY: tp.List[dict] = [
    {"train": {"bandwidth": 1.600000023841858, "d_loss": 1.9991814851760865, "d_msstftd": 1.9991814851760865,
               "adv_msstftd": 0.0029504795558750628, "feat_msstftd": 0.005342476256191731, "l1": 0.1339188262820244,
               "msspec": 2.1480658769607546, "penalty": 0.0027343697269934355, "ratio1": 0.11525439311492391,
               "g_loss": 44.06088390350342, "ratio2": 81.35448913574218, "mel": 3.144646167755127,
               "sisnr": 35.5513557434082, "adv": 0.0029504795558750628, "feat": 0.005342476256191731,
               "duration": 15.931896209716797},
     "valid": {"bandwidth": 1.600000023841858, "adv_msstftd": -0.0002471759944455698,
               "feat_msstftd": 0.005914709996432066, "l1": 0.13710900396108627, "msspec": 2.1331212520599365,
               "mel": 3.185600161552429, "sisnr": 34.90633583068848, "adv": -0.0002471759944455698,
               "feat": 0.005914709996432066, "duration": 1.0020341873168945}},
    {"train": {"bandwidth": 1.600000023841858, "d_loss": 1.993130588531494, "d_msstftd": 1.993130588531494,
               "adv_msstftd": -0.006770238094031811, "feat_msstftd": 0.0065405587665736675,
               "l1": 0.10365412682294846, "msspec": 1.7243805885314942, "penalty": 0.07717051021754742,
               "ratio1": 1.5392352998256684, "g_loss": 6.588551461696625, "ratio2": 116.19160766601563,
               "mel": 2.4259568214416505, "sisnr": 31.810523986816406, "adv": -0.006770238094031811,
               "feat": 0.0065405587665736675, "duration": 12.624410629272461},
     "valid": {"bandwidth": 1.600000023841858, "adv_msstftd": -0.0011458612862043083,
               "feat_msstftd": 0.010664932895451784, "l1": 0.13527853041887283, "msspec": 2.0194644927978516,
               "mel": 3.0344525575637817, "sisnr": 32.9598445892334, "adv": -0.0011458612862043083,
               "feat": 0.010664932895451784, "duration": 0.9988715648651123},
     "evaluate": {"sisnr": 33.01557159423828, "duration": 7.664549112319946},
     "generate": {"duration": 0.5147819519042969}},
]


def lm_epoch(ce: float, valid_ce: tp.Optional[float], lr: float = 0.001, grad_norm: float = 3.5) -> dict:
    """One epoch shaped like a real musicgen history entry (4 codebooks)."""
    def stage(c: float) -> dict:
        d = {"ce": c, "ppl": math.exp(c) if math.isfinite(c) else c}
        for q in range(1, 5):
            d[f"ce_q{q}"] = c + 0.1 * (q - 2)
            d[f"ppl_q{q}"] = math.exp(c + 0.1 * (q - 2)) if math.isfinite(c) else c
        return d
    epoch = {"train": {"lr": lr, "grad_norm": grad_norm, **stage(ce), "duration": 0.21}}
    if valid_ce is not None:
        epoch["valid"] = {**stage(valid_ce), "duration": 0.05}
    return epoch


# history.json of a real tiny MusicGen run (genre-conditioned, 2 epochs).
LM_HISTORY: tp.List[dict] = [
    {"train": {"lr": 0.001, "grad_norm": 6.056760025024414, "ce": 4.431636047363281, "ppl": 150.02725944519042,
               "ce_q1": 4.249608087539673, "ppl_q1": 124.2649772644043, "ce_q2": 4.132393312454224,
               "ppl_q2": 101.72949523925782, "ce_q3": 4.748773002624512, "ppl_q3": 255.569909286499,
               "ce_q4": 4.5957705020904545, "ppl_q4": 162.9035587310791, "duration": 0.24495577812194824},
     "valid": {"ce": 2.61832058429718, "ppl": 13.719500541687012, "ce_q1": 2.498317837715149,
               "ppl_q1": 12.18138837814331, "ce_q2": 2.433752417564392, "ppl_q2": 11.439074993133545,
               "ce_q3": 2.674224376678467, "ppl_q3": 14.50836706161499, "ce_q4": 2.8669873476028442,
               "ppl_q4": 17.62693691253662, "duration": 0.05538773536682129}},
    {"train": {"lr": 0.001, "grad_norm": 3.678028440475464, "ce": 2.209892511367798, "ppl": 9.510777759552003,
               "ce_q1": 2.1317837476730346, "ppl_q1": 8.98750352859497, "ce_q2": 2.077939486503601,
               "ppl_q2": 8.351146411895751, "ce_q3": 2.2580464839935304, "ppl_q3": 9.8201340675354,
               "ce_q4": 2.3718002319335936, "ppl_q4": 11.182478332519532, "duration": 0.2100841999053955},
     "valid": {"ce": 1.7163966298103333, "ppl": 5.564446687698364, "ce_q1": 1.7045101523399353,
               "ppl_q1": 5.500488519668579, "ce_q2": 1.57726389169693, "ppl_q2": 4.842388153076172,
               "ce_q3": 1.7583833932876587, "ppl_q3": 5.803094148635864, "ce_q4": 1.825429081916809,
               "ppl_q4": 6.20561146736145, "duration": 0.0529329776763916},
     "evaluate": {"duration": 0.0002677440643310547},
     "generate": {"rtf": 0.061226725578308105, "duration": 0.7004656791687012}},
]

# A few lines of a real solver.log.0 (ANSI colours as AudioCraft writes them).
LM_LOG = "\n".join([
    "[\x1b[36m11-25 10:08:10\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - Instantiating solver "
    "MusicGenSolver for XP 08e4d3f1\x1b[0m",
    "[\x1b[36m11-25 10:08:12\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - Train | Epoch 1 | 1/5 | "
    "4.01 it/sec | lr 1.00E-03 | grad_norm 6.012E+00 | ce 5.581 | ppl 265.411\x1b[0m",
    "[\x1b[36m11-25 10:08:12\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - Train | Epoch 1 | 2/5 | "
    "4.11 it/sec | lr 1.00E-03 | grad_norm 6.1E+00 | ce 4.370 | ppl 79.0\x1b[0m",
    "[\x1b[36m11-25 10:08:13\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - \x1b[1mTrain Summary | "
    "Epoch 1 | lr=1.00E-03 | ce=4.432 | ppl=150.027 | duration=0.245\x1b[0m",
    "[\x1b[36m11-25 10:08:13\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - Valid | Epoch 1 | 1/2 | "
    "20.0 it/sec | ce 2.6 | ppl 13.7\x1b[0m",
    "[\x1b[36m11-25 10:08:14\x1b[0m][\x1b[34mflashy.solver\x1b[0m][\x1b[32mINFO\x1b[0m] - Train | Epoch 2 | 1/5 | "
    "4.00 it/sec | lr 1.00E-03 | grad_norm 3.1E+00 | ce 2.520 | ppl 12.4\x1b[0m",
    "[\x1b[36m11-25 10:08:15\x1b[0m][\x1b[34maudiocraft.x\x1b[0m][\x1b[31mERROR\x1b[0m] - something <bad> happened"
    "\x1b[0m",
    "",
])


def make_xp(ws: Path, sig: str, history: tp.Any, solver: str = "musicgen", argv: tp.Optional[list] = None,
            log: tp.Optional[str] = None, epochs: int = 2, raw_history: tp.Optional[str] = None) -> Path:
    """A Dora-shaped XP folder: history.json, .hydra/config.yaml, .hydra/hydra.yaml, .argv.json, solver.log.0."""
    folder = ws / "experiments" / "audiocraft" / "xps" / sig
    (folder / ".hydra").mkdir(parents=True)
    (folder / "history.json").write_text(raw_history if raw_history is not None else json.dumps(history))
    cfg = [f"solver: {solver}", "optim:", "  lr: 0.001", "  optimizer: adamw", f"  epochs: {epochs}",
           "dataset:", "  batch_size: 2", "datasource:",
           "  train: ${oc.env:MUSICPIPE_WORKSPACE,/ws}/data/synthetic_demo/egs/train"]
    if solver == "musicgen":
        cfg += ["transformer_lm:", "  n_q: 4", "  card: 256", "  dim: 64"]
    else:
        cfg += ["rvq:", "  n_q: 4", "  bins: 256"]
    (folder / ".hydra" / "config.yaml").write_text("\n".join(cfg) + "\n")
    hydra = "hydra:\n  runtime:\n    choices:\n      dset: audio/synthetic_demo\n"
    (folder / ".hydra" / "hydra.yaml").write_text(hydra)
    argv = argv if argv is not None else [f"solver={solver}/x", "dset=audio/synthetic_demo", "optim.lr=1e-3"]
    (folder / ".argv.json").write_text(json.dumps(argv))
    if log is not None:
        (folder / "solver.log.0").write_text(log)
    return folder


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 400, (path, img.shape)
    assert img.std() > 0.01, f"{path} is blank"


def codes(findings: tp.Sequence[dict]) -> tp.Dict[str, dict]:
    return {f["code"]: f for f in findings}


# ---------------------------------------------------------------------------------------------- health rules

def test_decreasing_lm_is_healthy():
    found = health_findings(LM_HISTORY, "musicgen", planned_epochs=2, card=256)
    assert {f["level"] for f in found} == {"ok"}
    c = codes(found)
    assert c["train_trend"]["message"] == "train ce decreased from 4.432 (epoch 1) to 2.21 (epoch 2) (-50.1%)"
    assert c["valid_trend"]["message"] == "valid ce decreased from 2.618 (epoch 1) to 1.716 (epoch 2) (-34.4%)"
    assert c["complete"]["message"] == "all 2 planned epochs in history"
    assert "5.564" in c["ppl_uniform"]["message"] and "256" in c["ppl_uniform"]["message"]


def test_codec_sisnr_is_negated_loss():
    found = codes(health_findings(CODEC_HISTORY, "compression"))
    # history's sisnr falls 34.9 -> 33.0: it is AudioCraft's loss (-SI-SNR), so SI-SNR improved -34.9 -> -33.0 dB
    assert found["sisnr_trend"]["level"] == "ok"
    assert found["sisnr_trend"]["message"] == "valid SI-SNR improved from -34.91 dB (epoch 1) to -32.96 dB (epoch 2)"
    assert found["sisnr_level"]["level"] == "warn" and "-32.96 dB" in found["sisnr_level"]["message"]
    assert found["valid_trend"]["message"].startswith("valid mel decreased from 3.186 (epoch 1) to 3.034")
    assert report.sisnr_db(33.0) == -33.0


def test_nan_is_a_failure_naming_epoch_and_metric():
    history = copy.deepcopy(LM_HISTORY) + [lm_epoch(float("nan"), 1.5), lm_epoch(1.8, float("inf"))]
    found = health_findings(history, "musicgen")
    assert found[0]["level"] == "fail" and found[0]["code"] == "non_finite"
    assert found[0]["epochs"] == [3, 4]
    assert found[0]["message"].startswith("non-finite values at epochs 3, 4; first at epoch 3: train/ce=nan")
    assert "valid/ce=inf" in found[0]["metrics"]["4"]
    # trends use the finite values only
    assert codes(found)["train_trend"]["message"].endswith("to 1.8 (epoch 4) (-59.4%)")


def test_overfitting_valid_rising_while_train_falls():
    history = [lm_epoch(4.0, 2.6), lm_epoch(3.0, 2.0), lm_epoch(2.5, 1.8), lm_epoch(2.0, 1.9), lm_epoch(1.5, 2.1)]
    found = codes(health_findings(history, "musicgen"))
    assert found["overfitting"]["level"] == "warn"
    assert found["overfitting"]["message"] == ("valid ce rising for the last 2 epochs (1.8 at epoch 3 to 2.1 at "
                                               "epoch 5) while train ce falls (2.5 to 1.5): overfitting?")
    assert found["valid_trend"]["level"] == "ok"  # still below epoch 1: both facts are reported


def test_valid_rising_without_train_falling_is_not_called_overfitting():
    history = [lm_epoch(2.0, 2.0), lm_epoch(2.0, 2.1), lm_epoch(2.1, 2.2)]
    found = codes(health_findings(history, "musicgen"))
    assert "overfitting" not in found
    assert found["valid_rising"]["level"] == "warn"
    assert found["train_trend"]["level"] == "warn" and "is the model learning?" in found["train_trend"]["message"]
    assert found["valid_trend"]["message"].startswith("valid ce did not decrease: 2 (epoch 1) to 2.2 (epoch 3)")


def test_one_epoch_only():
    found = health_findings(LM_HISTORY[:1], "musicgen", planned_epochs=2)
    c = codes(found)
    assert c["single_epoch"] == {"level": "warn", "code": "single_epoch", "message": "only 1 epoch: trends unavailable"}
    assert c["incomplete"]["message"].startswith("1 of 2 planned epochs in history")
    assert "train_trend" not in c and "valid_trend" not in c


def test_empty_history():
    assert health_findings([], "musicgen") == [{
        "level": "fail", "code": "empty_history",
        "message": "no epoch finished: history.json is empty (the run crashed or was stopped before the end of "
                   "epoch 1)"}]


def test_no_validation_metrics():
    history = [{"train": dict(e["train"])} for e in LM_HISTORY]
    assert codes(health_findings(history, "musicgen"))["no_valid"]["level"] == "warn"


def test_sparse_valid_and_optimiser_rules():
    history = [lm_epoch(4.0, None), lm_epoch(3.0, 2.5), lm_epoch(2.5, None), lm_epoch(2.0, 2.0, grad_norm=80.0),
               lm_epoch(1.9, None, lr=0.0)]
    found = codes(health_findings(history, "musicgen", card=2048))
    assert found["valid_trend"]["message"] == "valid ce decreased from 2.5 (epoch 2) to 2 (epoch 4) (-20.0%)"
    assert found["grad_spike"]["message"].startswith("grad_norm spike at epoch 4: 80, 23x the median 3.5")
    assert found["zero_lr"]["message"] == "learning rate is 0 at epoch 5"


def test_perplexity_near_uniform_warns():
    history = [lm_epoch(5.6, 5.5), lm_epoch(5.5, 5.45)]  # exp(5.45) = 233 of 256 codes
    assert codes(health_findings(history, "musicgen", card=256))["ppl_uniform"]["level"] == "warn"


def test_findings_are_sorted_most_severe_first():
    history = copy.deepcopy(LM_HISTORY)
    history[1]["valid"]["ppl"] = float("nan")
    levels = [f["level"] for f in health_findings(history, "musicgen", planned_epochs=3)]
    assert levels == sorted(levels, key=report.LEVELS.index) and levels[0] == "fail"


@pytest.mark.parametrize("bad, message", [
    ({"train": {}}, "expected a list of epochs, got dict"),
    ([["train"]], "epoch 1 is a list, not a dict of stages"),
    ([{"train": 1.0}], "epoch 1 stage 'train' is a float, not a dict of metrics"),
    ([{"train": {"ce": "1.0"}}], "epoch 1 train/ce = '1.0' is not a number"),
    ([{"train": {"ce": None}}], "epoch 1 train/ce = None is not a number"),
])
def test_malformed_history_is_rejected(bad, message):
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        health_findings(bad, "musicgen")


def test_solver_log_parsing(tmp_path):
    path = tmp_path / "solver.log.0"
    path.write_text(LM_LOG)
    log = report.parse_solver_log(path)
    assert log is not None and log.launches == 1 and log.errors == ["something <bad> happened"]
    train = [u for u in log.updates if u["stage"] == "train"]
    assert [(u["epoch"], u["step"], u["total"]) for u in train] == [(1, 1, 5), (1, 2, 5), (2, 1, 5)]
    assert train[0]["metrics"] == {"lr": 0.001, "grad_norm": 6.012, "ce": 5.581, "ppl": 265.411}
    found = codes(report.log_findings(log, LM_HISTORY[:1]))
    assert "epoch 2 (up to 1/5) that history.json lacks" in found["unfinished_epoch"]["message"]
    assert found["log_errors"]["level"] == "warn"
    assert report.parse_solver_log(tmp_path / "missing") is None


# ---------------------------------------------------------------------------------------------- write_report

def test_codec_report(tmp_path):
    make_xp(tmp_path / "ws", "c0dec001", CODEC_HISTORY, solver="compression")
    out = write_report("c0dec001", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    assert out == tmp_path / "out" / "reports" / "c0dec001"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == ["losses.png", "sisnr.png", "mel.png", "index.html", "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"])
    for name in summary["files"][:3]:
        check_png(out / name)
    assert (summary["sig"], summary["solver"], summary["kind"], summary["epochs"]) == ("c0dec001", "compression",
                                                                                       "codec", 2)
    assert summary["dataset"] == "synthetic_demo" and summary["planned_epochs"] == 2
    assert summary["last_metrics"]["valid"]["mel"] == CODEC_HISTORY[1]["valid"]["mel"]
    assert summary["stages"]["evaluate"] == [2]
    sisnr = {s["stage"]: s for s in summary["plots"][1]["panels"][0]["series"]}
    assert sisnr["valid"]["epochs"] == [1, 2]
    assert sisnr["valid"]["values"] == [-CODEC_HISTORY[0]["valid"]["sisnr"], -CODEC_HISTORY[1]["valid"]["sisnr"]]
    assert sisnr["evaluate"]["epochs"] == [2]  # a stage run every 2 epochs sits at epoch 2, not at index 1
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "c0dec001" in page and "compression" in page and "synthetic_demo" in page
    assert f'title="{CODEC_HISTORY[1]["valid"]["mel"]!r}">3.034<' in page
    assert f'title="{-CODEC_HISTORY[1]["valid"]["sisnr"]!r}">-32.96<' in page  # the SI-SNR row, in dB
    assert "SI-SNR (dB, higher is better)" in page
    for f in summary["findings"]:
        assert html.escape(f["message"]) in page
    assert ">WARN</span>" in page and ">OK</span>" in page and "#9a6700" in page
    assert '<img src="sisnr.png"' in page and "http" not in page.replace("http-equiv", "")


def test_lm_report_with_log_gaps_and_nan(tmp_path):
    history = [lm_epoch(4.0, None), lm_epoch(3.0, 2.5), lm_epoch(float("nan"), None), lm_epoch(2.0, 2.0)]
    history[3]["evaluate"] = {"duration": 0.1}
    make_xp(tmp_path / "ws", "1a2b3c4d", history, log=LM_LOG, epochs=4)
    out = write_report("1a2b3c4d", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == ["losses.png", "codebooks.png", "optim.png", "updates.png", "index.html",
                                "summary.json"]
    for name in summary["files"][:4]:
        check_png(out / name)
    ce = {s["stage"]: s for s in summary["plots"][0]["panels"][0]["series"]}
    assert ce["train"]["epochs"] == [1, 2, 3, 4] and ce["train"]["values"] == [4.0, 3.0, None, 2.0]
    assert ce["valid"]["epochs"] == [2, 4] and ce["valid"]["values"] == [2.5, 2.0]
    assert [s["label"] for s in summary["plots"][1]["panels"][0]["series"]] == ["q1", "q2", "q3", "q4"]
    assert summary["plots"][3]["panels"][0]["series"][0]["x"] == [0.2, 0.4, 1.2]
    assert summary["findings"][0]["code"] == "non_finite" and summary["health"] == "fail"
    assert summary["log"]["errors"] == 1 and summary["last_epoch"]["valid"] == 4
    page = (out / "index.html").read_text(encoding="utf-8")
    assert ">FAIL</span>non-finite values at epoch 3: train/ce=nan" in page
    assert "something &lt;bad&gt; happened" in page and "<bad>" not in page


def test_one_epoch_report(tmp_path):
    make_xp(tmp_path / "ws", "0e0e0e0e", LM_HISTORY[:1])
    out = write_report("0e0e0e0e", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    check_png(out / "losses.png")
    assert summary["plots"][0]["panels"][0]["series"][0]["epochs"] == [1]
    assert "only 1 epoch: trends unavailable" in (out / "index.html").read_text(encoding="utf-8")


def test_empty_history_gives_a_report(tmp_path):
    make_xp(tmp_path / "ws", "deadbeef", [], log=LM_LOG)
    out = write_report("deadbeef", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 0 and summary["health"] == "fail"
    assert summary["files"] == ["updates.png", "index.html", "summary.json"]  # the log still shows progress
    assert codes(summary["findings"])["unfinished_epoch"]["level"] == "warn"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "No epoch finished" in page and "history.json is empty" in page


def test_strings_are_escaped_and_rerun_removes_only_stale_plots(tmp_path):
    make_xp(tmp_path / "ws", "e5c4e5c4", LM_HISTORY, argv=["label=<script>alert('x')</script>", "dset=a&b"])
    out = write_report("e5c4e5c4", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a&amp;b" in page
    # a plot an earlier report listed but this one does not write goes; a file of the user's stays
    summary = json.loads((out / "summary.json").read_text())
    summary["files"].append("old.png")
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "old.png").write_bytes(PNG_SIGNATURE)
    (out / "notes.png").write_bytes(PNG_SIGNATURE)
    write_report("e5c4e5c4", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    assert not (out / "old.png").exists() and (out / "notes.png").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_missing_config_guesses_the_solver(tmp_path):
    folder = make_xp(tmp_path / "ws", "ab12ab12", CODEC_HISTORY, solver="compression")
    (folder / ".hydra" / "config.yaml").unlink()
    (folder / ".argv.json").unlink()
    out = write_report("ab12ab12", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver"] == "compression" and summary["overrides"] == {}
    assert codes(summary["findings"])["no_config"]["level"] == "warn"


def test_errors_name_the_file(tmp_path):
    ws = tmp_path / "ws"
    with pytest.raises(ReportError, match=r"XP folder .*nosuchxp does not exist"):
        write_report("nosuchxp", workspace=ws, outputs=tmp_path / "out")
    with pytest.raises(ReportError, match="not an XP signature"):
        write_report("../etc", workspace=ws, outputs=tmp_path / "out")
    folder = make_xp(ws, "a1", LM_HISTORY)
    (folder / "history.json").unlink()
    with pytest.raises(ReportError, match=r"history\.json is missing"):
        write_report("a1", workspace=ws, outputs=tmp_path / "out")
    make_xp(ws, "a2", None, raw_history='[{"train": {"ce": 1.0}')
    with pytest.raises(ReportError, match=r"a2/history\.json is malformed: not valid JSON"):
        write_report("a2", workspace=ws, outputs=tmp_path / "out")
    make_xp(ws, "a3", {"train": {"ce": 1.0}})
    with pytest.raises(ReportError, match=r"a3/history\.json is malformed: expected a list"):
        write_report("a3", workspace=ws, outputs=tmp_path / "out")
    folder = make_xp(ws, "a4", LM_HISTORY)
    (folder / ".hydra" / "config.yaml").write_text("solver: [unclosed\n")
    with pytest.raises(ReportError, match=r"a4/\.hydra/config\.yaml is malformed"):
        write_report("a4", workspace=ws, outputs=tmp_path / "out")
    assert issubclass(ReportError, ValueError)
    assert not (tmp_path / "out").exists()


def test_hostile_values_are_escaped_in_text_and_attributes(tmp_path):
    genre = "<script>alert(1)</script>"
    folder = make_xp(tmp_path / "ws", "e5c4e5c5", LM_HISTORY, argv=[f"genre={genre}", 'dset=audio/a&"<b'])
    (folder / "musicpipe.json").write_text(json.dumps({"conditioning": genre, "preset": 'x" onmouseover="alert(1)'}))
    out = write_report("e5c4e5c5", workspace=tmp_path / "ws", outputs=tmp_path / "out")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and 'onmouseover="' not in page
    assert "<tr><th>conditioning</th><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr>" in page
    assert "<tr><th>preset</th><td>x&quot; onmouseover=&quot;alert(1)</td></tr>" in page
    assert "<tr><th><code>genre</code></th><td><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></td></tr>" in page
    assert "<td><code>audio/a&amp;&quot;&lt;b</code></td>" in page
    # the page function itself: a signature and a plot file name with &"< stay inside their attribute and text
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    summary.update(sig='&"<sig', plots=[{"file": 'a&"<b.png', "title": "t'<"}])
    page = report.render_html(summary, report.last_metrics(LM_HISTORY))
    assert "<title>musicpipe report: XP &amp;&quot;&lt;sig</title>" in page
    assert '<img src="a&amp;&quot;&lt;b.png" alt="t&#x27;&lt;">' in page
    assert "<figcaption>t&#x27;&lt; (<code>a&amp;&quot;&lt;b.png</code>)</figcaption>" in page
