"""runpod_ssh_sync.py end to end: a loopback server answering like RunPod's GraphQL API, a temporary HOME,
and the real OpenSSH client (``ssh -G``) reading the config the script wrote.

The script runs as users run it, in a subprocess, with ``python -I -S`` (no site-packages: standard library only).
"""

from __future__ import annotations

import ast
import doctest
import http.server
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import typing as tp
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "runpod_ssh_sync.py"
KEY = "rpa_TESTKEY_7f3a9c0d5e1b2468ACE"
HOSTILE_NAME = 'evil\n  ProxyCommand touch /tmp/PWNED; `id` $(reboot) "q" # x'
HOSTILE_ALIAS = "evil-proxycommand-touch-tmp-pwned-id-reboot-q-x"
ALLOWED_KEYWORDS = {"HostName", "Port", "User", "IdentityFile", "IdentitiesOnly", "StrictHostKeyChecking",
                    "ServerAliveInterval"}
USER_CONFIG = """# my own settings
ForwardAgent no

Host github.com
    User git
    IdentityFile ~/.ssh/github

Host *
    User nobody
    ServerAliveInterval 60
"""


def load_module() -> tp.Any:
    spec = importlib.util.spec_from_file_location("runpod_ssh_sync", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["runpod_ssh_sync"] = module
    spec.loader.exec_module(module)
    return module


rss = load_module()


# -- a loopback RunPod API -----------------------------------------------------------------------------------

def ssh_port(ip: tp.Any, public: tp.Any, private: tp.Any = 22, is_public: tp.Any = True, kind: str = "tcp") -> dict:
    return {"ip": ip, "isIpPublic": is_public, "privatePort": private, "publicPort": public, "type": kind}


def running(pod_id: str, name: str, *ports: dict) -> dict:
    return {"id": pod_id, "name": name, "desiredStatus": "RUNNING", "runtime": {"ports": list(ports)}}


def stopped(pod_id: str, name: str) -> dict:
    return {"id": pod_id, "name": name, "desiredStatus": "EXITED", "runtime": None}


def first_pods() -> tp.List[dict]:
    return [
        running("pod1aaa", "train-box",
                ssh_port("100.64.0.2", 22, is_public=False),                      # the private side of 22
                ssh_port("203.0.113.10", 40888, private=8888, kind="http"),
                ssh_port("203.0.113.10", 40022)),
        running("pod2bbb", "Jupyter Only",                                        # no public port from 22
                ssh_port("100.64.0.3", 22, is_public=False),
                ssh_port("203.0.113.11", 8888, private=8888, kind="http")),
        stopped("pod3ccc", "old-run"),
        running("pod4ddd", HOSTILE_NAME, ssh_port("203.0.113.12", 40044)),
        running("pod5eee", "bad-ip", ssh_port("203.0.113.13\n  ProxyCommand touch /tmp/PWNED", 40055)),
        running("pod6fff", "bad-port", ssh_port("fe80::1%eth0\nProxyCommand x", "22 -oProxyCommand=x")),
        running("../../x;rm -rf ~", "bad-id", ssh_port("203.0.113.14", 40066)),
    ]


class FakeRunPod:
    """``POST /graphql`` answering like RunPod: checks the bearer key, serves ``pods``; ``mode`` injects failures
    (``"graphql-error"``, ``"not-json"``, ``"500"``, ``"redirect"``). Every request is recorded."""

    def __init__(self) -> None:
        self.pods: tp.List[dict] = first_pods()
        self.mode = "ok"
        self.requests: tp.List[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: tp.Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json",
                      headers: tp.Optional[dict] = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                owner.requests.append({"method": "GET", "path": self.path,
                                       "auth": self.headers.get("Authorization")})
                self._send(404, b"{}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                owner.requests.append({"method": "POST", "path": self.path, "auth": auth,
                                       "body": json.loads(body or b"null")})
                received = (auth or "").removeprefix("Bearer ")
                if auth != f"Bearer {KEY}":
                    # a hostile or careless server echoing the key it got: the script must not print it
                    self._send(401, json.dumps({"errors": [{"message": f"invalid api key {received}"}]}).encode())
                elif owner.mode == "graphql-error":
                    self._send(200, json.dumps({"data": None, "errors": [
                        {"message": f"Something went wrong for key {received}"}]}).encode())
                elif owner.mode == "not-json":
                    self._send(200, b"<html>maintenance</html>", "text/html")
                elif owner.mode == "500":
                    self._send(500, b"oops", "text/plain")
                elif owner.mode == "redirect":
                    self._send(302, b"", headers={"Location": "/elsewhere"})
                else:
                    self._send(200, json.dumps({"data": {"myself": {"pods": owner.pods}}}).encode())

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/graphql"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "FakeRunPod":
        self._thread.start()
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def api() -> tp.Iterator[FakeRunPod]:
    with FakeRunPod() as server:
        yield server


@pytest.fixture(scope="module")
def ssh_client() -> str:
    """The real OpenSSH client (`make setup` installs Debian's openssh-client)."""
    exe = shutil.which("ssh")
    assert exe, "the OpenSSH client (ssh) is missing: `make setup` installs it (apt-get install openssh-client)"
    return exe


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A scratch HOME (with a space in its path) holding an ed25519 key and the user's own ssh config."""
    h = tmp_path / "home dir"
    (h / ".ssh").mkdir(parents=True, mode=0o700)
    key = h / ".ssh" / "id_ed25519"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    (h / ".ssh" / "config").write_text(USER_CONFIG)
    (h / ".ssh" / "config").chmod(0o600)
    return h


def sync(home: Path, api: tp.Optional[FakeRunPod], *args: str, key: tp.Optional[str] = KEY,
         extra_env: tp.Optional[dict] = None) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "no_proxy": "127.0.0.1,localhost"}
    if key is not None:
        env["RUNPOD_API_KEY"] = key
    env.update(extra_env or {})
    url = ["--api-url", api.url] if api is not None else []
    res = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *url, *args], capture_output=True, text=True,
                         env=env, timeout=120)
    for stream in (res.stdout, res.stderr):
        assert KEY not in stream, "the API key leaked into the output"
        assert "Traceback" not in stream
    return res


def ssh_g(ssh: str, config: Path, alias: str) -> tp.Dict[str, tp.List[str]]:
    res = subprocess.run([ssh, "-G", "-F", str(config), alias], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert res.returncode == 0, res.stderr
    out: tp.Dict[str, tp.List[str]] = {}
    for line in res.stdout.splitlines():
        k, _, v = line.partition(" ")
        out.setdefault(k, []).append(v)
    return out


def block_of(text: str) -> tp.List[str]:
    lines = text.splitlines()
    begin = next(i for i, l in enumerate(lines) if l.startswith("# >>> runpod_ssh_sync"))
    end = next(i for i, l in enumerate(lines) if l.startswith("# <<< runpod_ssh_sync"))
    return lines[begin:end + 1]


def last_line(res: subprocess.CompletedProcess) -> str:
    return res.stdout.strip().splitlines()[-1]


# -- tests ---------------------------------------------------------------------------------------------------

def test_writes_entries_openssh_reads_and_leaves_the_rest_alone(api, home, ssh_client):
    config = home / ".ssh" / "config"
    res = sync(home, api)
    assert res.returncode == 0, res.stderr
    assert last_line(res).startswith("ssh config: 2 pods written, 0 removed, 0 unchanged -> ~/.ssh/config")
    # one request, to the GraphQL endpoint, with the bearer key and the documented query
    (req,) = api.requests
    assert req["path"] == "/graphql" and req["auth"] == f"Bearer {KEY}"
    assert "myself { pods { id name desiredStatus runtime { ports { ip isIpPublic privatePort publicPort type" \
        in req["body"]["query"]
    # pods that get no entry are named on stderr, one line each
    assert "Jupyter Only" in res.stderr and "no public TCP port is mapped from 22" in res.stderr
    assert "bad-ip" in res.stderr and "bad-port" in res.stderr and "invalid IP address or port" in res.stderr
    assert "no valid pod id" in res.stderr
    assert "old-run" not in res.stderr  # stopped pods are normal, not warnings

    text = config.read_text()
    ident = str(home / ".ssh" / "id_ed25519")
    box = ssh_g(ssh_client, config, "train-box")
    assert box["hostname"] == ["203.0.113.10"] and box["port"] == ["40022"] and box["user"] == ["root"]
    assert box["identityfile"] == [ident]  # a path with a space, quoted in the file
    assert box["identitiesonly"] == ["yes"]
    evil = ssh_g(ssh_client, config, HOSTILE_ALIAS)
    assert evil["hostname"] == ["203.0.113.12"] and evil["port"] == ["40044"] and evil["user"] == ["root"]
    for alias in ("train-box", HOSTILE_ALIAS, "jupyter-only", "old-run", "bad-ip", "bad-port"):
        assert "proxycommand" not in ssh_g(ssh_client, config, alias)
    for alias in ("jupyter-only", "old-run", "bad-ip", "bad-port"):  # no entry: ssh falls through to Host *
        assert ssh_g(ssh_client, config, alias)["hostname"] == [alias]
    # the user's own entries still resolve as before
    gh = ssh_g(ssh_client, config, "github.com")
    assert gh["user"] == ["git"] and gh["hostname"] == ["github.com"]
    assert ssh_g(ssh_client, config, "elsewhere")["user"] == ["nobody"]

    # nothing but Host lines, comments and the allowed keywords inside the block
    block = block_of(text)
    hosts = [l.split()[1] for l in block if l.startswith("Host ")]
    assert hosts == sorted(["train-box", HOSTILE_ALIAS])
    for line in block[1:-1]:
        if not line.strip() or line.startswith("Host ") or line.strip().startswith("#"):
            continue
        assert line.startswith("    ") and line.split()[0] in ALLOWED_KEYWORDS, line
    assert "PWNED" not in text.replace(json.dumps(HOSTILE_NAME), "")  # only inside the escaped comment
    # every line outside the block is the user's, unchanged; the block sits before the first Host line
    lines = text.splitlines(keepends=True)
    begin = next(i for i, l in enumerate(lines) if l.startswith("# >>> runpod_ssh_sync"))
    end = next(i for i, l in enumerate(lines) if l.startswith("# <<< runpod_ssh_sync"))
    assert lines[end + 1] == "\n"
    assert "".join(lines[:begin] + lines[end + 2:]) == USER_CONFIG
    assert lines[end + 2] == "Host github.com\n"
    # mode kept, the previous version backed up
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    backup = home / ".ssh" / "config.runpod-sync.bak"
    assert backup.read_text() == USER_CONFIG and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not [p for p in (home / ".ssh").iterdir() if p.name.endswith(".tmp")]


def test_rerun_with_nothing_changed_writes_nothing(api, home):
    config = home / ".ssh" / "config"
    assert sync(home, api).returncode == 0
    before = config.stat()
    backup = (home / ".ssh" / "config.runpod-sync.bak").stat()
    for _ in range(2):
        res = sync(home, api)
        assert res.returncode == 0, res.stderr
        assert last_line(res) == "ssh config: 0 pods written, 0 removed, 2 unchanged -> ~/.ssh/config"
    after = config.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert (home / ".ssh" / "config.runpod-sync.bak").stat().st_mtime_ns == backup.st_mtime_ns
    res = sync(home, api, "--dry-run")
    assert res.stdout.splitlines() == ["ssh config (dry run, nothing written): 0 pods written, 0 removed, "
                                       "2 unchanged -> ~/.ssh/config"]


def test_restart_stop_and_new_pod_dry_run_then_write(api, home, ssh_client):
    config = home / ".ssh" / "config"
    assert sync(home, api).returncode == 0
    config.chmod(0o644)
    first = config.read_text()
    api.pods[0] = running("pod1aaa", "train-box", ssh_port("198.51.100.20", 41022))   # restarted elsewhere
    api.pods[3] = stopped("pod4ddd", HOSTILE_NAME)                                     # stopped
    api.pods.append(running("pod7ggg", "Eval Box", ssh_port("198.51.100.21", 41077)))  # new

    res = sync(home, api, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert config.read_text() == first  # nothing written
    assert "-    Port 40022\n" in res.stdout and "+    Port 41022\n" in res.stdout
    assert f"-Host {HOSTILE_ALIAS}\n" in res.stdout and "+Host eval-box\n" in res.stdout
    assert res.stdout.startswith("--- ~/.ssh/config\n+++ ~/.ssh/config\n")
    assert last_line(res) == ("ssh config (dry run, nothing written): 2 pods written, 1 removed, 0 unchanged "
                              "-> ~/.ssh/config")

    res = sync(home, api)
    assert res.returncode == 0, res.stderr
    assert last_line(res).startswith("ssh config: 2 pods written, 1 removed, 0 unchanged -> ~/.ssh/config")
    assert stat.S_IMODE(config.stat().st_mode) == 0o644  # the file's mode is kept
    backup = home / ".ssh" / "config.runpod-sync.bak"
    assert backup.read_text() == first and stat.S_IMODE(backup.stat().st_mode) == 0o644
    box = ssh_g(ssh_client, config, "train-box")
    assert (box["hostname"], box["port"]) == (["198.51.100.20"], ["41022"])
    ev = ssh_g(ssh_client, config, "eval-box")
    assert (ev["hostname"], ev["port"], ev["user"]) == (["198.51.100.21"], ["41077"], ["root"])
    assert HOSTILE_ALIAS not in config.read_text()

    # --pod: only that pod's entry moves; the others stay as they are
    api.pods[0] = running("pod1aaa", "train-box", ssh_port("198.51.100.20", 42022))
    api.pods[-1] = running("pod7ggg", "Eval Box", ssh_port("198.51.100.21", 42077))
    res = sync(home, api, "--pod", "train-box")
    assert res.returncode == 0, res.stderr
    assert last_line(res).startswith("ssh config: 1 pod written, 0 removed, 1 unchanged")
    assert ssh_g(ssh_client, config, "train-box")["port"] == ["42022"]
    assert ssh_g(ssh_client, config, "eval-box")["port"] == ["41077"]
    res = sync(home, api, "--pod", "pod7ggg")  # by id works too
    assert last_line(res).startswith("ssh config: 1 pod written, 0 removed, 1 unchanged")
    assert ssh_g(ssh_client, config, "eval-box")["port"] == ["42077"]
    res = sync(home, api, "--pod", "no-such-pod")
    assert res.returncode == 2 and "no such pod" in res.stderr

    # every pod stopped: entries removed, the (empty) block stays in place, ssh still reads the file
    api.pods = [stopped(p["id"], p["name"]) for p in api.pods]
    res = sync(home, api)
    assert last_line(res).startswith("ssh config: 0 pods written, 2 removed, 0 unchanged")
    assert len(block_of(config.read_text())) == 2
    assert ssh_g(ssh_client, config, "train-box")["hostname"] == ["train-box"]
    text = config.read_text()
    assert text.replace("\n".join(block_of(text)) + "\n\n", "") == USER_CONFIG


def test_prefix_and_colliding_names(api, home, ssh_client):
    api.pods = [running("aaa111", "gpu", ssh_port("203.0.113.1", 40001)),
                running("bbb222", "GPU", ssh_port("203.0.113.2", 40002)),
                running("ccc333", "llama-3.1 ft", ssh_port("203.0.113.3", 40003))]
    res = sync(home, api, "--prefix", "rp-")
    assert res.returncode == 0, res.stderr
    config = home / ".ssh" / "config"
    assert [l.split()[1] for l in block_of(config.read_text()) if l.startswith("Host ")] == \
        ["rp-gpu-aaa111", "rp-gpu-bbb222", "rp-llama-3-1-ft"]
    assert ssh_g(ssh_client, config, "rp-gpu-bbb222")["port"] == ["40002"]
    res = sync(home, api, "--prefix", "-oProxyCommand=x")
    assert res.returncode == 2 and "--prefix" in res.stderr


def test_new_config_is_created_0600_and_appended_files_keep_their_text(api, tmp_path, ssh_client):
    home = tmp_path / "h"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("x")
    (home / ".ssh").rename(tmp_path / "ssh-away")  # first: no ~/.ssh at all, no key
    home.mkdir(exist_ok=True)
    res = sync(home, api)
    assert res.returncode == 0, res.stderr
    assert "no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa" in res.stderr
    config = home / ".ssh" / "config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert not (home / ".ssh" / "config.runpod-sync.bak").exists()
    assert "IdentityFile" not in config.read_text()
    assert config.read_text().startswith("# >>> runpod_ssh_sync")
    # with only ~/.ssh/id_rsa, that key is used; a file without a final newline keeps its text
    shutil.copy(tmp_path / "ssh-away" / "id_rsa", home / ".ssh" / "id_rsa")
    config.write_text("ForwardAgent no")
    res = sync(home, api)
    assert res.returncode == 0, res.stderr
    text = config.read_text()
    assert text.startswith("ForwardAgent no\n\n# >>> runpod_ssh_sync")
    assert ssh_g(ssh_client, config, "train-box")["identityfile"] == [str(home / ".ssh" / "id_rsa")]
    # --identity-file wins; a missing one is refused before anything else
    other = tmp_path / "keys" / "pod key"
    other.parent.mkdir()
    other.write_text("x")
    assert sync(home, api, "--identity-file", str(other)).returncode == 0
    assert ssh_g(ssh_client, config, "train-box")["identityfile"] == [str(other)]
    res = sync(home, api, "--identity-file", str(tmp_path / "nope"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_symlinked_config_stays_a_symlink(api, home):
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    config = home / ".ssh" / "config"
    config.rename(dotfiles / "ssh_config")
    config.symlink_to(dotfiles / "ssh_config")
    assert sync(home, api).returncode == 0
    assert config.is_symlink() and "Host train-box" in (dotfiles / "ssh_config").read_text()


@pytest.mark.parametrize("case, layout, expected", [
    ("duplicate begin", ["B", "E", "B", "E"], "begin marker appears more than once"),
    ("duplicate end", ["B", "E", "E"], "end marker appears more than once"),
    ("reversed", ["E", "B"], "comes before the begin marker"),
    ("only begin", ["B"], "no end marker"),
    ("only end", ["E"], "no begin marker"),
])
def test_broken_markers_are_refused_and_nothing_is_touched(api, home, case, layout, expected):
    marks = {"B": rss.BEGIN_MARKER, "E": rss.END_MARKER}
    text = USER_CONFIG + "".join(f"{marks[m]}\nHost x{i}\n    Port 1\n" for i, m in enumerate(layout))
    config = home / ".ssh" / "config"
    config.write_text(text)
    before = config.stat()
    for args in ((), ("--dry-run",), ("--pod", "train-box")):
        res = sync(home, api, *args)
        assert res.returncode == 2, (case, res.stdout, res.stderr)
        assert expected in res.stderr and "nothing was changed" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert config.read_text() == text and config.stat().st_mtime_ns == before.st_mtime_ns
    assert not (home / ".ssh" / "config.runpod-sync.bak").exists()
    assert api.requests == []  # refused before the API was asked


@pytest.mark.parametrize("mode, key, expected", [
    ("ok", "rpa_WRONG_KEY_123456", "refused the API key (HTTP 401)"),
    ("graphql-error", KEY, "RunPod API error: Something went wrong for key [redacted]"),
    ("not-json", KEY, "answered HTTP 200 with something that is not JSON"),
    ("500", KEY, "answered HTTP 500"),
    ("redirect", KEY, "answered a redirect (HTTP 302); not following it"),
])
def test_api_errors_are_one_line_without_the_key(api, home, mode, key, expected):
    api.mode = mode
    config = home / ".ssh" / "config"
    res = sync(home, api, key=key)
    assert res.returncode == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("runpod_ssh_sync: error: ") and expected in line
    assert key not in res.stdout + res.stderr
    assert config.read_text() == USER_CONFIG
    assert all(r["path"] == "/graphql" for r in api.requests)  # the redirect was not followed


def test_unreachable_endpoint(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = sync(home, None, "--api-url", f"http://127.0.0.1:{port}/graphql")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert f"cannot reach the RunPod API at http://127.0.0.1:{port}/graphql" in line


def test_api_key_sources_and_the_command_line_never(api, home):
    # ~/.runpod/config.toml when the variable is not set
    (home / ".runpod").mkdir()
    (home / ".runpod" / "config.toml").write_text(f'[default]\napi_key = "{KEY}"\n')
    res = sync(home, api, key=None)
    assert res.returncode == 0, res.stderr
    assert api.requests[-1]["auth"] == f"Bearer {KEY}"
    # the variable wins over the file
    res = sync(home, api, key="rpa_OTHER_KEY_999999")
    assert res.returncode == 3 and api.requests[-1]["auth"] == "Bearer rpa_OTHER_KEY_999999"
    assert "rpa_OTHER_KEY_999999" not in res.stderr
    # a broken file: position only, never its text
    (home / ".runpod" / "config.toml").write_text(f'[default]\napi_key = "{KEY}\n')
    res = sync(home, api, key=None)
    assert res.returncode == 2 and "is not valid TOML" in res.stderr
    (home / ".runpod" / "config.toml").unlink()
    res = sync(home, api, key=None)
    assert res.returncode == 2 and "no RunPod API key" in res.stderr and "RUNPOD_API_KEY" in res.stderr
    # never from the command line, and a pasted key is not echoed back
    n = len(api.requests)
    for args in (("--api-key", KEY), (f"--api-key={KEY}",), ("--token", KEY)):
        res = sync(home, api, *args)
        assert res.returncode == 2 and "never taken from the command line" in res.stderr
    res = sync(home, api, KEY)
    assert res.returncode == 2 and "unrecognized arguments: <value>" in res.stderr
    assert len(api.requests) == n


def test_endpoint_from_the_environment_and_plain_http_refused(api, home):
    base = api.url.removesuffix("/graphql")
    res = sync(home, None, extra_env={"RUNPOD_API_BASE_URL": base})
    assert res.returncode == 0, res.stderr
    assert api.requests[-1]["path"] == "/graphql"
    res = sync(home, None, "--api-url", "http://api.example.invalid/graphql")
    assert res.returncode == 2 and "refusing to send the API key unencrypted" in res.stderr


def test_docstring_examples_run_and_the_module_is_standard_library_only():
    result = doctest.testmod(rss, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
    assert "python3 runpod_ssh_sync.py --dry-run" in rss.__doc__
    tree = ast.parse(SCRIPT.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_parse_pods_and_aliases_units():
    pods = rss.parse_pods({"data": {"myself": {"pods": first_pods()}}})
    ready = {p.id: p.ssh for p in pods if p.ssh}
    assert ready == {"pod1aaa": ("203.0.113.10", 40022), "pod4ddd": ("203.0.113.12", 40044)}
    assert rss.make_alias(HOSTILE_NAME) == HOSTILE_ALIAS
    assert rss.make_alias("-oProxyCommand=evil") == "oproxycommand-evil"
    assert rss.parse_pods({"data": {"myself": {"pods": None}}}) == []
    with pytest.raises(rss.ApiError, match="no data.myself.pods"):
        rss.parse_pods({"data": None})
    assert rss._ip("2001:DB8::1") == "2001:db8::1" and rss._ip("fe80::1%eth0") is None
    assert rss._ip("1.2.3.4 ") is None and rss._port(True) is None and rss._port("40022") == 40022
