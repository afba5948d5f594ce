"""A real HTTP/1.1 file server on 127.0.0.1 for tests, with Range requests and injectable failures.

Python's ``http.server`` has no Range support; this one serves single ranges (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``) with 206/416, keeps connections alive, counts what it sends and can drop a connection mid-body.

Example:
    >>> import tempfile, urllib.request
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "f.bin").write_bytes(b"0123456789")
    >>> with LoopbackServer(root) as server:
    ...     req = urllib.request.Request(server.url + "f.bin", headers={"Range": "bytes=2-4"})
    ...     with urllib.request.urlopen(req) as r:
    ...         r.status, r.read(), r.headers["Content-Range"]
    (206, b'234', 'bytes 2-4/10')
    >>> server.bytes_sent["/f.bin"], server.requests
    (3, [('GET', '/f.bin', 'bytes=2-4')])
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
import typing as tp
import urllib.parse
from pathlib import Path

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str, size: int) -> tp.Union[tp.Tuple[int, int], str]:
    """``(first, last)`` inclusive for a single byte range, ``"unsatisfiable"`` (416) or ``"ignore"`` (200).

    >>> parse_range("bytes=0-0", 10), parse_range("bytes=7-", 10), parse_range("bytes=-3", 10)
    ((0, 0), (7, 9), (7, 9))
    >>> parse_range("bytes=10-", 10), parse_range("bytes=0-1,4-5", 10), parse_range("bytes=5-2", 10)
    ('unsatisfiable', 'ignore', 'ignore')
    """
    match = _RANGE.match(header)
    if not match or match.group(1) == match.group(2) == "":
        return "ignore"  # malformed or multi-range: RFC 9110 lets a server ignore it
    first, last = match.groups()
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return "ignore"  # invalid: last before first
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real file servers
    disable_nagle_algorithm = True  # else each kept-alive response waits ~40 ms for a delayed ACK
    server: "_Server"

    def log_message(self, format: str, *args: tp.Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        logger.debug("loopback: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.loopback._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.loopback._track(self.connection, False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _empty(self, status: int, headers: tp.Optional[tp.Dict[str, str]] = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        lb = self.server.loopback
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        lb._record(self.command, path, range_header)
        error = lb._pop_error(path)
        if error is not None:
            self._empty(error)
            return
        location = lb.redirects.get(path)
        if location is not None:
            self._empty(302, {"Location": location})
            return
        file = (lb.root / path.lstrip("/")).resolve()
        if not file.is_file() or lb.root not in file.parents:
            self._empty(404)
            return
        size = file.stat().st_size
        status, first, last = 200, 0, size - 1
        if range_header is not None and lb.support_range:
            parsed = parse_range(range_header, size)
            if parsed == "unsatisfiable":
                self._empty(416, {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
                return
            if parsed != "ignore":
                status, (first, last) = 206, parsed
        length = last - first + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes" if lb.support_range else "none")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if head:
            return
        drop = lb.drop_after.get(path)
        sent = 0
        with open(file, "rb") as f:
            f.seek(first)
            while sent < length:
                n = min(CHUNK, length - sent)
                if drop is not None:
                    n = min(n, drop - sent)
                    if n <= 0:
                        lb._fire_drop(path)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                chunk = f.read(n)
                if not chunk:  # the file shrank under us
                    self.close_connection = True
                    return
                # Counted before the write, so a client that has the bytes always sees them counted.
                lb._count(path, len(chunk))
                try:
                    self.wfile.write(chunk)
                except OSError:
                    lb._count(path, -len(chunk))  # the client hung up: not sent
                    raise
                sent += len(chunk)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # kept-alive client connections must not hold up shutdown
    loopback: "LoopbackServer"

    def handle_error(self, request: tp.Any, client_address: tp.Any) -> None:
        # Clients that hang up mid-response are expected here; never print tracebacks to stderr.
        logger.debug("loopback: error serving %s", client_address, exc_info=True)


class LoopbackServer:
    """Serve the files under ``root`` on ``127.0.0.1`` at a free port, in a thread; a context manager.

    Attributes:
        url: base URL ending in ``/``.
        bytes_sent: payload bytes sent per request path (``"/fma/fma_small.zip"``).
        requests: ``(method, path, Range header or None)`` for every request, in order.
        drop_after: path -> close the connection after sending this many payload bytes of a response; the
            entry is removed when it fires, so the retry succeeds.
        errors: path -> status codes to answer (one per request, in order, with an empty body) before
            serving the file normally, e.g. ``{"/f.bin": [503, 503]}``.
        redirects: path -> ``Location`` to answer with a 302 (a URL, or a path such as ``"/real.bin"``).
        connections: how many TCP connections were accepted (kept-alive connections serve many requests).
        support_range: settable; when False, Range headers are ignored (200 and the whole file).
    """

    def __init__(self, root: tp.Union[str, Path], *, support_range: bool = True) -> None:
        self.root = Path(root).resolve()
        self.support_range = support_range
        self.bytes_sent: tp.Dict[str, int] = {}
        self.requests: tp.List[tp.Tuple[str, str, tp.Optional[str]]] = []
        self.drop_after: tp.Dict[str, int] = {}
        self.errors: tp.Dict[str, tp.List[int]] = {}
        self.redirects: tp.Dict[str, str] = {}
        self.connections = 0
        self.url = ""
        self._lock = threading.Lock()
        self._connections: tp.Set[socket.socket] = set()
        self._server: tp.Optional[_Server] = None
        self._thread: tp.Optional[threading.Thread] = None

    def url_for(self, path: str) -> str:
        """The URL of a file under root, e.g. ``url_for("fma/fma_small.zip")``."""
        return self.url + urllib.parse.quote(path.lstrip("/"))

    def start(self) -> "LoopbackServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.loopback = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"loopback:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads waiting on kept-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: tp.Any) -> None:
        self.stop()

    def reset_counters(self) -> None:
        """Forget ``requests``, ``bytes_sent`` and ``connections`` (e.g. after a fixture's setup requests)."""
        with self._lock:
            self.requests.clear()
            self.bytes_sent.clear()
            self.connections = 0

    # -- called from handler threads ------------------------------------------------------------------------
    def _record(self, method: str, path: str, range_header: tp.Optional[str]) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + n

    def _pop_error(self, path: str) -> tp.Optional[int]:
        with self._lock:
            codes = self.errors.get(path)
            if not codes:
                return None
            code = codes.pop(0)
            if not codes:
                del self.errors[path]
            return code

    def _fire_drop(self, path: str) -> None:
        with self._lock:
            self.drop_after.pop(path, None)

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
                self.connections += 1
            else:
                self._connections.discard(conn)
