"""The T5 check before text-conditioned training: local cache, hub over loopback, or a clear refusal."""

import json
import socket
import time

import pytest

from loopback import LoopbackServer
from musicpipe import training


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refuses_quickly_with_the_model_and_url_when_neither_cache_nor_hub(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(training.TrainingInputError) as err:
        training.check_t5("t5-base", cache_dir=str(tmp_path), endpoint=endpoint)
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "'t5-base'" in msg and f"{endpoint}/t5-base/resolve/main/config.json" in msg and "--conditioning genre" in msg


def test_hub_reachable_over_loopback(tmp_path):
    root = tmp_path / "hub"
    (root / "t5-small" / "resolve" / "main").mkdir(parents=True)
    (root / "t5-small" / "resolve" / "main" / "config.json").write_text("{}")
    with LoopbackServer(root) as server:
        assert training.check_t5("t5-small", cache_dir=str(tmp_path / "cache"), endpoint=server.url) == "hub"
        assert any(r[0] == "HEAD" and r[1] == "/t5-small/resolve/main/config.json" for r in server.requests)
        with pytest.raises(training.TrainingInputError, match="HTTP 404"):
            training.check_t5("t5-large", cache_dir=str(tmp_path / "cache"), endpoint=server.url)


def test_local_cache_is_enough(tmp_path):
    repo = tmp_path / "models--t5-base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 64, "num_layers": 1}))
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    assert training.check_t5("t5-base", cache_dir=str(tmp_path), endpoint=endpoint) == "cache"
