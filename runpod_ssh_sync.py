#!/usr/bin/env python3
"""Keep ``~/.ssh/config`` in step with your RunPod pods (standard library only, Python 3.11+).

After every pod (re)start, ``ssh <pod-name>``, VS Code Remote-SSH and Jupyter-over-SSH work without
copying IPs and ports by hand. The script asks RunPod's GraphQL API for your pods, takes each running
pod's public TCP port mapped from 22, and writes one ``Host`` entry per pod between two marker lines of
the config. Nothing outside those two lines is ever changed; entries of pods that stopped are removed.

Usage::

    $ export RUNPOD_API_KEY=...                  # or ~/.runpod/config.toml: [default] api_key = "..."
    $ python3 runpod_ssh_sync.py --dry-run       # print the unified diff, write nothing
    $ python3 runpod_ssh_sync.py
    ssh config: 2 pods written, 1 removed, 0 unchanged -> ~/.ssh/config
    $ ssh my-pod                                 # VS Code: "Remote-SSH: Connect to Host..." -> my-pod

Options: ``--pod NAME`` (one pod; the other entries stay as they are), ``--prefix rp-`` (aliases
``rp-<name>``), ``--config PATH``, ``--identity-file PATH`` (default: the first of ~/.ssh/id_ed25519,
~/.ssh/id_rsa that exists), ``--api-url URL`` (or ``$RUNPOD_API_BASE_URL``; ``/graphql`` is appended to a
base URL).

Safety: the API key is read from ``$RUNPOD_API_KEY`` or ``~/.runpod/config.toml``, never from the command
line, and never printed. The edit is refused (exit 2) when the marker lines are duplicated, reversed or
only one is present. The new file is written to a temporary file in the same folder and renamed over
the old one, keeping its mode (0600 for a new file); the previous version is kept as
``<config>.runpod-sync.bak``. Pod names, IPs and ports from the API are validated: a pod name with
spaces, newlines or shell characters becomes a harmless alias and cannot add configuration lines.

Exit codes: 0 done (also when nothing changed), 1 unexpected error, 2 refused (broken markers, bad
argument, no API key), 3 the RunPod API failed (HTTP error, GraphQL ``errors``, unreachable).

How API answers become entries (a runnable example: ``python3 -m doctest runpod_ssh_sync.py``)::

    >>> answer = {"data": {"myself": {"pods": [
    ...     {"id": "abc123", "name": "Train Box #1", "desiredStatus": "RUNNING", "runtime": {"ports": [
    ...         {"ip": "10.0.0.5", "isIpPublic": False, "privatePort": 22, "publicPort": 22, "type": "tcp"},
    ...         {"ip": "203.0.113.7", "isIpPublic": True, "privatePort": 22, "publicPort": 40122, "type": "tcp"}]}},
    ...     {"id": "def456", "name": "old run", "desiredStatus": "EXITED", "runtime": None}]}}}
    >>> pods = parse_pods(answer)
    >>> [(p.name, p.ssh) for p in pods]
    [('Train Box #1', ('203.0.113.7', 40122)), ('old run', None)]
    >>> make_alias("Train Box #1"), make_alias("evil\\n  ProxyCommand sh -c 'id'", prefix="rp-")
    ('train-box-1', 'rp-evil-proxycommand-sh-c-id')
    >>> print(render_entry("train-box-1", pods[0], "/home/me/.ssh/id_ed25519"), end="")
    Host train-box-1
        # RunPod pod abc123 "Train Box #1"
        HostName 203.0.113.7
        Port 40122
        User root
        IdentityFile /home/me/.ssh/id_ed25519
        IdentitiesOnly yes
        StrictHostKeyChecking accept-new
        ServerAliveInterval 30
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import sys
import tempfile
import tomllib
import traceback
import typing as tp
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_API_URL = "https://api.runpod.io/graphql"
API_URL_ENV = "RUNPOD_API_BASE_URL"
API_KEY_ENV = "RUNPOD_API_KEY"
QUERY = ("query Pods { myself { pods { id name desiredStatus "
         "runtime { ports { ip isIpPublic privatePort publicPort type } } } } }")
BEGIN_MARKER = "# >>> runpod_ssh_sync: managed block (edits inside are overwritten; run runpod_ssh_sync.py) >>>"
END_MARKER = "# <<< runpod_ssh_sync: end of managed block <<<"
# Marker lines are recognised by these prefixes, so a hand-edited tail still counts as a marker.
BEGIN_PREFIX = "# >>> runpod_ssh_sync"
END_PREFIX = "# <<< runpod_ssh_sync"
BACKUP_SUFFIX = ".runpod-sync.bak"
USER = "root"
MAX_ALIAS = 63
MAX_ANSWER_BYTES = 16 * 1024 * 1024

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_API = 0, 1, 2, 3

_POD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PREFIX = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9._-]{0,31})?$")
_IP_CHARS = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
_HOST_LINE = re.compile(r"^\s*(host|match)(\s|=)", re.IGNORECASE)
_ENTRY_POD = re.compile(r"^\s*#\s*RunPod pod (\S+)")
_SECRETS: tp.List[str] = []


class SyncError(Exception):
    """A run cannot proceed; ``exit_code`` says why (2 refused, 3 API)."""

    exit_code = EXIT_ERROR


class Refused(SyncError):
    exit_code = EXIT_REFUSED


class ApiError(SyncError):
    exit_code = EXIT_API


# -- secrets -------------------------------------------------------------------------------------------------

def _register_secret(secret: tp.Optional[str]) -> None:
    if secret and len(secret) >= 4 and secret not in _SECRETS:
        _SECRETS.append(secret)


def scrub(text: str) -> str:
    """``text`` with every known secret, bearer token and ``api_key=`` value replaced."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = re.sub(r"(?i)(bearer\s+)[^\s'\"]+", r"\1[redacted]", text)
    return re.sub(r"(?i)(api_?key=)[^\s&'\"]+", r"\1[redacted]", text)


def redact(text: str) -> str:
    """:func:`scrub`, on one line.

    >>> _register_secret("rpa_SECRET123")
    >>> redact("Bearer abc.def failed for rpa_SECRET123\\nsecond line")
    'Bearer [redacted] failed for [redacted] second line'
    """
    return " ".join(scrub(text).split())


def _say(message: str, *, err: bool = False) -> None:
    """Every line the script prints goes through here (messages to stderr are also put on one line)."""
    print(redact(message) if err else scrub(message), file=sys.stderr if err else sys.stdout, flush=True)


def _warn(message: str) -> None:
    _say(f"runpod_ssh_sync: warning: {message}", err=True)


def _show(value: str, limit: int = 60) -> str:
    """A name from the API, quoted, with control characters escaped (safe for a terminal and a comment)."""
    text = json.dumps(value[:limit] + ("..." if len(value) > limit else ""), ensure_ascii=True)
    return text


def runpod_config_path() -> Path:
    return Path.home() / ".runpod" / "config.toml"


def read_api_key(environ: tp.Mapping[str, str]) -> str:
    """The API key: ``$RUNPOD_API_KEY``, else ``[default] api_key`` of ``~/.runpod/config.toml``."""
    key = environ.get(API_KEY_ENV, "").strip()
    source = f"${API_KEY_ENV}"
    if not key:
        path = runpod_config_path()
        source = str(path)
        if not path.is_file():
            raise Refused(f'no RunPod API key: set {API_KEY_ENV}, or write {path} with [default] api_key = "..."')
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise Refused(f"cannot read {path}: {type(exc).__name__}") from None
        except tomllib.TOMLDecodeError as exc:
            where = re.search(r"\(at line \d+, column \d+\)", str(exc))
            raise Refused(f"{path} is not valid TOML {where.group(0) if where else ''}".strip()) from None
        value = _key_in_toml(data)
        if not value:
            raise Refused(f"{path} has no [default] api_key (a string); set {API_KEY_ENV} or add it there")
        key = value
    _register_secret(key)
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        raise Refused(f"the API key from {source} holds spaces or characters an HTTP header cannot carry")
    return key


def _key_in_toml(data: tp.Mapping[str, tp.Any]) -> tp.Optional[str]:
    """``[default] api_key``; a top-level ``api_key``/``apikey`` is accepted too."""
    section = data.get("default")
    candidates = [section.get("api_key") if isinstance(section, dict) else None, data.get("api_key"),
                  data.get("apikey")]
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _register_known_secrets(environ: tp.Mapping[str, str]) -> None:
    """Learn the key early (quietly), so even argument errors cannot echo it."""
    _register_secret(environ.get(API_KEY_ENV, "").strip())
    try:
        _register_secret(_key_in_toml(tomllib.loads(runpod_config_path().read_text(encoding="utf-8"))))
    except (OSError, ValueError):
        pass


# -- the API -------------------------------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_url(cli_value: tp.Optional[str], environ: tp.Mapping[str, str]) -> str:
    """The GraphQL endpoint: ``--api-url``, else ``$RUNPOD_API_BASE_URL``, else RunPod's.

    A base URL gets ``/graphql`` appended; plain ``http`` is accepted for loopback hosts only (the key
    would travel unencrypted).

    >>> resolve_api_url(None, {})
    'https://api.runpod.io/graphql'
    >>> resolve_api_url(None, {"RUNPOD_API_BASE_URL": "https://api.runpod.io/"})
    'https://api.runpod.io/graphql'
    >>> resolve_api_url("http://127.0.0.1:8080/graphql", {})
    'http://127.0.0.1:8080/graphql'
    """
    url = (cli_value or environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL).strip()
    parts = urllib.parse.urlsplit(url)
    origin = "--api-url" if cli_value else (f"${API_URL_ENV}" if environ.get(API_URL_ENV, "").strip() else "")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused(f"{origin or 'the API URL'} must be an http(s) URL, got {_show(url, 120)}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise Refused(f"{origin}: refusing to send the API key unencrypted to {parts.hostname}; use https")
    path = parts.path.rstrip("/")
    if not path.endswith("/graphql"):
        path += "/graphql"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _display_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would forward the Authorization header to the new location."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib's signature)
        return None


def _graphql_messages(payload: tp.Any) -> tp.Optional[str]:
    if isinstance(payload, dict) and payload.get("errors"):
        errors = payload["errors"]
        if not isinstance(errors, list):
            errors = [errors]
        texts = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
        text = "; ".join(texts)
        return text[:300] + ("..." if len(text) > 300 else "")
    return None


def fetch_pods_answer(url: str, key: str, timeout: float = 30.0) -> tp.Any:
    """POST the pods query; the decoded JSON answer. Raises :class:`ApiError` with a one-line reason."""
    shown = _display_url(url)
    body = json.dumps({"query": QUERY}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json",
        "Authorization": f"Bearer {key}", "User-Agent": "runpod_ssh_sync/1.0"})
    handlers: tp.List[tp.Any] = [_NoRedirect()]
    if _is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # never send a loopback request to a proxy
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read(MAX_ANSWER_BYTES + 1)
            status = response.status
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = _graphql_messages(json.loads(exc.read(65536) or b"null")) or ""
        except (ValueError, OSError):
            pass
        if exc.code in (401, 403):
            raise ApiError(f"RunPod API at {shown} refused the API key (HTTP {exc.code}): check ${API_KEY_ENV} or "
                           f"{runpod_config_path()}" + (f" ({detail})" if detail else "")) from None
        if 300 <= exc.code < 400:
            raise ApiError(f"RunPod API at {shown} answered a redirect (HTTP {exc.code}); not following it with "
                           "the API key: check --api-url / $" + API_URL_ENV) from None
        raise ApiError(f"RunPod API at {shown} answered HTTP {exc.code} {exc.reason}"
                       + (f": {detail}" if detail else "")) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise ApiError(f"cannot reach the RunPod API at {shown}: {text}") from None
    except TimeoutError:
        raise ApiError(f"no answer from the RunPod API at {shown} within {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # http.client errors (RemoteDisconnected, ...) are OSErrors
        raise ApiError(f"connection to the RunPod API at {shown} failed: {type(exc).__name__}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise ApiError(f"RunPod API at {shown} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise ApiError(f"RunPod API at {shown} answered HTTP {status} with something that is not JSON") from None
    return payload


# -- pods ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pod:
    """One pod as the API described it.

    Attributes:
        id, name: as RunPod holds them (``name`` may be anything; ``id`` is validated, else ``""``).
        ssh: ``(ip, public port)`` of its public TCP port mapped from 22 when it is running and has one.
        note: why it gets no entry (``""`` when it does).
    """

    id: str
    name: str
    ssh: tp.Optional[tp.Tuple[str, int]]
    note: str = ""


def _port(value: tp.Any) -> tp.Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def _ip(value: tp.Any) -> tp.Optional[str]:
    """A canonical IP address, or None (no host names, no IPv6 zone ids: nothing else reaches the file)."""
    if not isinstance(value, str) or not _IP_CHARS.match(value):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast:
        return None
    return str(address)


def parse_pod(raw: tp.Any) -> Pod:
    """One element of ``myself.pods`` as a :class:`Pod` (never raises on odd values: they become notes)."""
    if not isinstance(raw, dict):
        return Pod("", "", None, "not an object in the API's answer")
    pod_id = raw.get("id") if isinstance(raw.get("id"), str) and _POD_ID.match(raw.get("id")) else ""
    name = raw.get("name") if isinstance(raw.get("name"), str) else ""
    if not pod_id:
        return Pod("", name, None, "the API gave no valid pod id")
    desired = raw.get("desiredStatus")
    desired = desired if isinstance(desired, str) else ""
    runtime = raw.get("runtime")
    if not isinstance(runtime, dict) or (desired and desired.upper() != "RUNNING"):
        return Pod(pod_id, name, None, f"not running ({(desired or 'no runtime').lower()})")
    ports = runtime.get("ports")
    ports = ports if isinstance(ports, list) else []
    seen_invalid = False
    for port in ports:
        if not isinstance(port, dict) or port.get("isIpPublic") is not True or _port(port.get("privatePort")) != 22:
            continue
        kind = port.get("type")
        if isinstance(kind, str) and kind and kind.lower() != "tcp":
            continue
        ip, public = _ip(port.get("ip")), _port(port.get("publicPort"))
        if ip is None or public is None:
            seen_invalid = True
            continue
        return Pod(pod_id, name, (ip, public))
    if seen_invalid:
        return Pod(pod_id, name, None, "running, but the API gave an invalid IP address or port for SSH")
    return Pod(pod_id, name, None, "running, but no public TCP port is mapped from 22 "
                                   "(expose TCP port 22 in the pod's template)")


def parse_pods(payload: tp.Any) -> tp.List[Pod]:
    """The pods of a GraphQL answer. Raises :class:`ApiError` on GraphQL ``errors`` or an unexpected shape."""
    messages = _graphql_messages(payload)
    if messages:
        raise ApiError(f"RunPod API error: {messages}")
    try:
        pods = payload["data"]["myself"]["pods"]
    except (KeyError, TypeError):
        raise ApiError("RunPod API answer has no data.myself.pods (is the API URL right?)") from None
    if pods is None:
        pods = []
    if not isinstance(pods, list):
        raise ApiError("RunPod API answer: data.myself.pods is not a list")
    return [parse_pod(raw) for raw in pods]


def make_alias(name: str, prefix: str = "", fallback: str = "") -> str:
    """A ``Host`` alias from a pod name: lower-case letters, digits, ``-`` and ``_`` only.

    Dots are replaced too, so a pod named ``github.com`` cannot capture git's connections.

    >>> make_alias("Llama-3.1 FT (run 2)"), make_alias("Ünïcode"), make_alias("***", fallback="abc123")
    ('llama-3-1-ft-run-2', 'unicode', 'abc123')
    >>> make_alias("github.com"), make_alias("localhost", fallback="x1")
    ('github-com', 'localhost-x1')
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9_]+", "-", text).strip("-_")
    if not text:
        text = fallback.lower()
    alias = (prefix.lower() + text)[:MAX_ALIAS].rstrip("-_.")
    if alias == "localhost":
        alias = f"{alias}-{fallback.lower()}" if fallback else "localhost-pod"
    return alias


def assign_aliases(pods: tp.Sequence[Pod], prefix: str, taken: tp.Mapping[str, str] = {}) -> tp.Dict[str, Pod]:
    """alias -> pod for the pods that get an entry. Pods whose aliases collide (with each other, or with
    ``taken``: alias -> pod id of entries kept as they are) get their pod id appended."""
    ready = [p for p in pods if p.ssh is not None]
    base = {p.id: make_alias(p.name, prefix, p.id) for p in ready}
    counts: tp.Dict[str, int] = {}
    for alias in base.values():
        counts[alias] = counts.get(alias, 0) + 1
    out: tp.Dict[str, Pod] = {}
    for pod in sorted(ready, key=lambda p: p.id):
        alias = base[pod.id]
        if counts[alias] > 1 or taken.get(alias, pod.id) != pod.id:
            alias = f"{alias[:MAX_ALIAS - len(pod.id) - 1]}-{pod.id.lower()}"
        out[alias] = pod
    return out


def ssh_config_path_value(path: str) -> str:
    """A path as an ssh_config argument (quoted when it has spaces). Raises :class:`Refused` when it cannot
    be written safely."""
    if not path.isprintable() or any(c in path for c in '"\\'):
        raise Refused(f"identity file path {_show(path, 120)} holds quotes, backslashes or control characters")
    path = path.replace("%", "%%")  # ssh expands %-tokens in IdentityFile
    return f'"{path}"' if re.search(r"[\s#]", path) else path


def render_entry(alias: str, pod: Pod, identity: tp.Optional[str]) -> str:
    """The ``Host`` entry of one pod (every value validated before it gets here)."""
    assert pod.ssh is not None
    ip, port = pod.ssh
    lines = [f"Host {alias}", f"    # RunPod pod {pod.id} {_show(pod.name)}", f"    HostName {ip}",
             f"    Port {port}", f"    User {USER}"]
    if identity:
        lines += [f"    IdentityFile {ssh_config_path_value(identity)}", "    IdentitiesOnly yes"]
    lines += ["    StrictHostKeyChecking accept-new", "    ServerAliveInterval 30"]
    return "\n".join(lines) + "\n"


# -- the config file -----------------------------------------------------------------------------------------

def find_block(lines: tp.Sequence[str], name: str = "the config") -> tp.Optional[tp.Tuple[int, int]]:
    """``(begin, end)`` line indexes of the managed block, None when there is none.

    Raises :class:`Refused` when markers are duplicated, reversed or only one is present.

    >>> find_block(["Host a\\n", BEGIN_MARKER + "\\n", END_MARKER + "\\n"])
    (1, 2)
    >>> find_block([END_MARKER, BEGIN_MARKER])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    runpod_ssh_sync.Refused: the config: the end marker (line 1) comes before the begin marker (line 2); ...
    """
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN_PREFIX)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(END_PREFIX)]
    fix = ("fix or remove the runpod_ssh_sync marker lines by hand; nothing was changed")
    if not begins and not ends:
        return None
    if len(begins) > 1 or len(ends) > 1:
        which = "begin" if len(begins) > 1 else "end"
        where = ", ".join(str(i + 1) for i in (begins if len(begins) > 1 else ends))
        raise Refused(f"{name}: the {which} marker appears more than once (lines {where}); {fix}")
    if not ends:
        raise Refused(f"{name}: begin marker on line {begins[0] + 1} but no end marker; {fix}")
    if not begins:
        raise Refused(f"{name}: end marker on line {ends[0] + 1} but no begin marker; {fix}")
    if ends[0] < begins[0]:
        raise Refused(f"{name}: the end marker (line {ends[0] + 1}) comes before the begin marker "
                      f"(line {begins[0] + 1}); {fix}")
    return begins[0], ends[0]


def parse_block_entries(block: tp.Sequence[str]) -> tp.Dict[str, tp.Tuple[str, str]]:
    """alias -> (pod id or "", entry text) of the entries between the markers."""
    entries: tp.Dict[str, tp.Tuple[str, str]] = {}
    alias, pod_id, chunk = None, "", []

    def flush() -> None:
        if alias is not None:
            text = "".join(chunk).rstrip("\r\n") + "\n"
            entries[alias] = (pod_id, re.sub(r"\r\n", "\n", text))

    for line in block:
        match = re.match(r"^\s*host(?:\s+|\s*=\s*)(\S+)", line, re.IGNORECASE)
        if match:
            flush()
            alias, pod_id, chunk = match.group(1), "", [line]
            continue
        if alias is None:
            continue
        pod = _ENTRY_POD.match(line)
        if pod and not pod_id:
            pod_id = pod.group(1)
        if line.strip():
            chunk.append(line)
    flush()
    return entries


@dataclasses.dataclass
class Plan:
    old_text: str
    new_text: str
    written: tp.List[str]
    removed: tp.List[str]
    unchanged: tp.List[str]

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text


def plan_config(old_text: str, pods: tp.Sequence[Pod], *, prefix: str = "", identity: tp.Optional[str] = None,
                only: tp.Optional[tp.Sequence[Pod]] = None, name: str = "the config") -> Plan:
    """The new config text and what changes. ``only``: sync these pods and keep every other entry."""
    lines = old_text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    span = find_block(lines, name)
    old_entries = parse_block_entries(lines[span[0] + 1:span[1]]) if span else {}
    if only is None:
        kept: tp.Dict[str, tp.Tuple[str, str]] = {}
        chosen = assign_aliases(pods, prefix)
    else:
        ids = {p.id for p in only}
        kept = {a: e for a, e in old_entries.items() if e[0] not in ids}
        chosen = assign_aliases(only, prefix, taken={a: e[0] for a, e in kept.items()})
        kept = {a: e for a, e in kept.items() if a not in chosen}
    new_entries = {a: e[1] for a, e in kept.items()}
    new_entries.update({alias: render_entry(alias, pod, identity) for alias, pod in chosen.items()})
    written = sorted(a for a, text in new_entries.items() if old_entries.get(a, ("", None))[1] != text)
    removed = sorted(a for a in old_entries if a not in new_entries)
    unchanged = sorted(a for a, text in new_entries.items() if old_entries.get(a, ("", None))[1] == text)

    body = "\n".join(new_entries[a] for a in sorted(new_entries))
    block = [BEGIN_MARKER + "\n", *body.splitlines(keepends=True), END_MARKER + "\n"]
    block = [line.replace("\n", newline) for line in block]
    if span is not None:
        new_lines = lines[:span[0]] + block + lines[span[1] + 1:]
        if span[1] + 1 == len(lines) and not lines[-1].endswith("\n"):
            new_lines[-1] = new_lines[-1].rstrip("\r\n")  # the file did not end with a newline
    elif not new_entries:
        new_lines = list(lines)  # nothing to write and no block: leave the file alone
    else:
        first_host = next((i for i, line in enumerate(lines) if _HOST_LINE.match(line)), None)
        if first_host is not None:
            # Before the first Host/Match line: global options above stay global, and our values win over
            # a later `Host *` (ssh takes the first value it finds).
            new_lines = lines[:first_host] + block + [newline] + lines[first_host:]
        else:
            head = list(lines)
            if head and not head[-1].endswith("\n"):
                head[-1] += newline
            if head and head[-1].strip():
                head.append(newline)
            new_lines = head + block
    return Plan(old_text, "".join(new_lines), written, removed, unchanged)


def outside_aliases(text: str) -> tp.Dict[str, int]:
    """Literal Host patterns outside the managed block -> line number (to warn about shadowing)."""
    lines = text.splitlines()
    span = find_block(lines)
    found: tp.Dict[str, int] = {}
    for i, line in enumerate(lines):
        if span and span[0] <= i <= span[1]:
            continue
        match = re.match(r"^\s*host(?:\s+|\s*=\s*)(.*)$", line, re.IGNORECASE)
        if match:
            for token in match.group(1).split("#")[0].split():
                found.setdefault(token.lower().strip('"'), i + 1)
    return found


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int, owner: tp.Optional[tp.Tuple[int, int]] = None) -> None:
    """Write ``data`` to a temporary file next to ``path`` with ``mode``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            if owner is not None and hasattr(os, "fchown"):
                try:
                    os.fchown(f.fileno(), *owner)
                except PermissionError:
                    pass
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def write_config(path: Path, old_bytes: tp.Optional[bytes], new_text: str) -> tp.Optional[Path]:
    """Back up the previous version, then replace ``path`` atomically; returns the backup's path."""
    real = Path(os.path.realpath(path))
    if old_bytes is None:
        mode, owner = 0o600, None
        if not real.parent.exists():
            real.parent.mkdir(mode=0o700, parents=True)
    else:
        st = real.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        if real.read_bytes() != old_bytes:
            raise Refused(f"{path} changed while runpod_ssh_sync was running; nothing written: run it again")
    backup = None
    if old_bytes is not None:
        backup = real.with_name(real.name + BACKUP_SUFFIX)
        atomic_write(backup, old_bytes, mode, owner)
    atomic_write(real, new_text.encode("utf-8"), mode, owner)
    return backup


def default_identity() -> tp.Optional[Path]:
    for name in ("id_ed25519", "id_rsa"):
        candidate = Path.home() / ".ssh" / name
        if candidate.is_file():
            return candidate
    return None


def _tilde(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + os.sep)) else text


# -- command line --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse that never echoes unknown arguments (one may be a pasted API key) and exits 2."""

    def error(self, message: str) -> tp.NoReturn:
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            shown = [w.split("=", 1)[0] if w.startswith("-") else "<value>" for w in words]
            message = "unrecognized arguments: " + " ".join(shown)
        self.print_usage(sys.stderr)
        _say(f"{self.prog}: error: {message}", err=True)
        sys.exit(EXIT_REFUSED)


_KEY_OPTIONS = ("--api-key", "--apikey", "--key", "--token", "--api_key")


def build_parser() -> argparse.ArgumentParser:
    usage = __doc__.split("Usage::\n\n", 1)[1].split("\n\n", 1)[0]
    parser = _Parser(prog="runpod_ssh_sync.py", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n" + usage + "\n\nThe API key comes from $RUNPOD_API_KEY or "
                            "~/.runpod/config.toml ([default] api_key),\nnever from the command line. "
                            "Exit codes: 0 ok, 2 refused, 3 RunPod API failed, 1 other errors.")
    parser.add_argument("--dry-run", action="store_true", help="print the unified diff, write nothing")
    parser.add_argument("--config", default=None, help="the ssh config to manage (default: ~/.ssh/config)")
    parser.add_argument("--prefix", default="", help="prepended to every alias, e.g. rp- (default: none)")
    parser.add_argument("--pod", default=None, metavar="NAME",
                        help="sync only this pod (name, alias or id); other entries stay as they are")
    parser.add_argument("--identity-file", default=None, metavar="PATH",
                        help="private key for the pods (default: ~/.ssh/id_ed25519, else ~/.ssh/id_rsa)")
    parser.add_argument("--api-url", default=None, metavar="URL",
                        help=f"GraphQL endpoint or base URL (default: ${API_URL_ENV}, else {DEFAULT_API_URL})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the API (default 30)")
    parser.add_argument("--debug", action="store_true", help="print a (redacted) traceback on unexpected errors")
    return parser


def run(args: argparse.Namespace, environ: tp.Mapping[str, str]) -> int:
    if not _PREFIX.match(args.prefix):
        raise Refused(f"--prefix {_show(args.prefix)}: use letters, digits, '.', '-' and '_' only "
                      "(not starting with '-' or '.')")
    config = Path(os.path.abspath(os.path.expanduser(args.config))) if args.config \
        else Path.home() / ".ssh" / "config"
    shown = _tilde(config)
    if args.identity_file:
        identity_path = Path(os.path.abspath(os.path.expanduser(args.identity_file)))
        if not identity_path.is_file():
            raise Refused(f"--identity-file {identity_path}: no such file")
    else:
        identity_path = default_identity()
    identity = str(identity_path) if identity_path else None
    if identity is not None:
        ssh_config_path_value(identity)  # refuse an unwritable path before calling the API
    url = resolve_api_url(args.api_url, environ)
    key = read_api_key(environ)

    # Read (and check the markers of) the config before calling the API: a broken file fails fast.
    try:
        old_bytes: tp.Optional[bytes] = config.read_bytes()
    except FileNotFoundError:
        old_bytes = None
    except OSError as exc:
        raise Refused(f"cannot read {shown}: {exc.strerror}") from None
    try:
        old_text = (old_bytes or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{shown} is not UTF-8 text; nothing changed") from None
    find_block(old_text.splitlines(), shown)

    pods = parse_pods(fetch_pods_answer(url, key, args.timeout))
    only = None
    if args.pod is not None:
        want = args.pod.lower()
        only = [p for p in pods if p.id and (p.name == args.pod or p.id.lower() == want
                                             or make_alias(p.name, args.prefix, p.id) == want)]
        if not only:
            names = ", ".join(_show(p.name, 30) for p in pods if p.id) or "none"
            raise Refused(f"--pod {_show(args.pod)}: no such pod among your {len(pods)} pod(s) ({names})")
    for pod in (only if only is not None else pods):
        if pod.ssh is None and not pod.note.startswith("not running"):
            _warn(f"pod {_show(pod.name)} ({pod.id or 'no id'}): {pod.note}; no entry")
    if identity is None and any(p.ssh for p in pods):
        _warn("no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa: entries have no IdentityFile (ssh uses its defaults and "
              "your agent); pass --identity-file PATH")

    plan = plan_config(old_text, pods, prefix=args.prefix, identity=identity, only=only, name=shown)
    outside = outside_aliases(plan.new_text)
    for alias in plan.written:
        if alias in outside:
            _warn(f"alias {alias} is also a Host on line {outside[alias]} of {shown}, outside the managed block")
    counts = (f"{len(plan.written)} pod{'s' if len(plan.written) != 1 else ''} written, {len(plan.removed)} removed, "
              f"{len(plan.unchanged)} unchanged")
    if args.dry_run:
        diff = difflib.unified_diff(plan.old_text.splitlines(keepends=True), plan.new_text.splitlines(keepends=True),
                                    fromfile=shown if old_bytes is not None else "/dev/null", tofile=shown)
        text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff)
        if text:
            sys.stdout.write(scrub(text))
        _say(f"ssh config (dry run, nothing written): {counts} -> {shown}")
        return EXIT_OK
    if plan.changed:
        backup = write_config(config, old_bytes, plan.new_text)
        tail = f" (previous version: {_tilde(backup)})" if backup else ""
    else:
        tail = ""
    _say(f"ssh config: {counts} -> {shown}{tail}")
    return EXIT_OK


def main(argv: tp.Optional[tp.Sequence[str]] = None, environ: tp.Optional[tp.Mapping[str, str]] = None) -> int:
    environ = os.environ if environ is None else environ
    argv = list(sys.argv[1:] if argv is None else argv)
    _register_known_secrets(environ)
    for arg in argv:
        if arg.split("=", 1)[0].lower() in _KEY_OPTIONS:
            _say(f"runpod_ssh_sync: error: {arg.split('=', 1)[0]}: the API key is never taken from the command line "
                 f"(ps and shell history would show it); set ${API_KEY_ENV} or write {runpod_config_path()} "
                 "([default] api_key)", err=True)
            return EXIT_REFUSED
    args = build_parser().parse_args(argv)
    try:
        return run(args, environ)
    except SyncError as exc:
        _say(f"runpod_ssh_sync: error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        _say("runpod_ssh_sync: interrupted; nothing written", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - one redacted line, never a traceback holding the key
        if args.debug:
            sys.stderr.write(scrub(traceback.format_exc()))
        _say(f"runpod_ssh_sync: unexpected error: {type(exc).__name__}: {exc} (re-run with --debug)", err=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
