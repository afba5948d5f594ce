"""GPU-only: the demo codec and LM trained on CUDA with bf16 autocast for the LM. Skipped cleanly without a GPU."""

import math

import pytest
import torch

from musicpipe import training

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_demo_loop_on_cuda(workspace, demo_data):
    codec = training.train_codec("demo_cpu", "synthetic_demo", workspace, echo=False,
                                 overrides=["device=cuda", "optim.epochs=1", "label=gpu"])
    assert codec.checkpoint.exists() and math.isfinite(codec.history()[-1]["train"]["sisnr"])
    lm = training.train_lm("demo_cpu", codec.sig, "synthetic_demo", workspace, conditioning="genre", echo=False,
                           overrides=["device=cuda", "autocast=true", "autocast_dtype=bfloat16",
                                      "optim.ema.device=cuda", "optim.epochs=1"])
    assert lm.checkpoint.exists() and math.isfinite(lm.history()[-1]["train"]["ce"])
