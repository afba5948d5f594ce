"""Downloads for large datasets: resumable HTTP files, members of remote zips, safe archive extraction.

Every network step retries dropped connections and 5xx answers with exponential backoff, resuming from the
bytes it already has; every finished file is checked (its hash, or the zip CRC) before it is renamed into
place, so a partial or corrupt file never sits at its final path.

- :func:`http_download`: one file, resumable through ``<dest>.part`` (HTTP Range), hash-checked.
- :class:`RemoteZip`: list and fetch members of a remote zip (e.g. 7 GB of FMA audio) without downloading
  the rest of it; about the members' compressed size plus the central directory goes over the network.
- :func:`safe_extract_zip`, :func:`safe_extract_tar`: extraction that refuses members landing outside ``dest``.

Example:
    >>> import tempfile, zipfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(root / "a.zip", "w") as zf:
    ...     zf.writestr("x/hello.txt", "hello")
    >>> [str(p.relative_to(root)) for p in safe_extract_zip(root / "a.zip", root / "out")]
    ['out/x/hello.txt']
    >>> file_hash(root / "out" / "x" / "hello.txt")
    'aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d'

    Over the network (not run here)::

        http_download("https://os.unil.cloud.switch.ch/fma/fma_metadata.zip", "data/fma_metadata.zip",
                      expected_hash=sha1)
        with RemoteZip("https://os.unil.cloud.switch.ch/fma/fma_large.zip") as rz:
            rz.fetch("fma_large/000/000002.mp3", "data/000/000002.mp3")
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import http.client
import io
import itertools
import logging
import os
import re
import stat
import tarfile
import time
import typing as tp
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from musicpipe import __version__, atomic

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, "os.PathLike[str]"]

USER_AGENT = f"musicpipe/{__version__}"
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10
# Transient answers worth retrying, besides every 5xx.
_RETRY_STATUSES = frozenset({408, 425, 429})
_NETWORK_ERRORS = (OSError, http.client.HTTPException)
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)


class DownloadError(RuntimeError):
    """A download or an extraction failed; the message names the URL or file and the reason."""


class ChecksumError(DownloadError):
    """A downloaded file's hash is not the expected one (the file has been deleted).

    Built either from the facts, ``ChecksumError(path, expected, actual, algorithm, source=url)``, which
    formats the message, or from a ready message, ``ChecksumError("...")`` (then ``path`` etc. are None).

    Attributes:
        path: the file that was being produced.
        expected, actual: hex digests.
        algorithm: hashlib name, e.g. ``"sha1"``.
        source: where it came from (a URL, or ``"<url>!<member>"`` for a zip member), or None.

    >>> str(ChecksumError("a.zip", "00", "ff"))
    'a.zip: sha1 mismatch: expected 00, got ff; the corrupt file was deleted'
    """

    def __init__(self, path: tp.Union[PathLike, str], expected: tp.Optional[str] = None,
                 actual: tp.Optional[str] = None, algorithm: str = "sha1", source: tp.Optional[str] = None) -> None:
        self.expected, self.actual, self.algorithm, self.source = expected, actual, algorithm, source
        if expected is None and actual is None:  # a ready message
            self.path: tp.Optional[Path] = None
            self._facts: tp.Tuple[tp.Any, ...] = (path,)
            super().__init__(str(path))
            return
        self.path = Path(path)
        self._facts = (path, expected, actual, algorithm, source)
        origin = f" (from {source})" if source else ""
        super().__init__(f"{path}{origin}: {algorithm} mismatch: expected {expected}, got {actual}; "
                         "the corrupt file was deleted")

    def __reduce__(self) -> tp.Tuple[tp.Any, ...]:
        return type(self), self._facts


class RangeNotSupported(DownloadError):
    """The server ignores HTTP Range requests (it answers 200 with the whole file)."""


class _Transient(Exception):
    """A failure worth retrying: dropped connection, timeout, 5xx, short body."""


def _reason(error: BaseException) -> str:
    """A short, readable cause for a network failure."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _retryable(status: int) -> bool:
    return status >= 500 or status in _RETRY_STATUSES


def _parse_content_range(value: tp.Optional[str]) -> tp.Tuple[tp.Optional[int], tp.Optional[int], tp.Optional[int]]:
    """``(start, end, total)`` from a Content-Range header; None for parts that are absent or ``*``.

    >>> _parse_content_range("bytes 0-0/1234")
    (0, 0, 1234)
    >>> _parse_content_range("bytes */99")
    (None, None, 99)
    """
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (int(start) if start is not None else None, int(end) if end is not None else None,
            int(total) if total not in (None, "*") else None)


def _int_header(value: tp.Optional[str]) -> tp.Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_checksum_list(text: str, algorithm: str = "sha1", source: str = "checksum list") -> tp.Dict[str, str]:
    """``sha1sum``/``sha256sum``-style lines (``<hex digest> [ *]<name>``) -> {name: digest}.

    Raises DownloadError naming ``source`` and the line when a line is not of that form.

    >>> parse_checksum_list("da39a3ee5e6b4b0d3255bfef95601890afd80709  000/000002.mp3\\n")
    {'000/000002.mp3': 'da39a3ee5e6b4b0d3255bfef95601890afd80709'}
    """
    length = hashlib.new(algorithm).digest_size * 2
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != length or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise DownloadError(f"{source} line {n} is not '<{algorithm}> <name>': {line[:90]!r}")
        out[name] = digest.lower()
    return out


def file_hash(path: PathLike, algorithm: str = "sha1", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks of ``chunk_size`` bytes (never whole).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "f"
    >>> _ = p.write_bytes(b"hello")
    >>> file_hash(p), file_hash(p, "md5")
    ('aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d', '5d41402abc4b2a76b9719d911017c592')
    """
    digest = hashlib.new(algorithm)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def _urlopen(url: str, headers: tp.Mapping[str, str], timeout: float) -> http.client.HTTPResponse:
    """urllib's urlopen with our User-Agent; network failures become :class:`_Transient` (HTTPError passes)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                   **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, *_NETWORK_ERRORS) as e:
        raise _Transient(_reason(e)) from e


def supports_range(url: str, timeout: float = 30) -> bool:
    """True when the server answers a ``Range: bytes=0-0`` GET with 206 Partial Content.

    Raises :class:`DownloadError` when the server cannot be reached or answers an error (404...).
    """
    try:
        with _urlopen(url, {"Range": "bytes=0-0"}, timeout) as response:
            return response.status == 206
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:  # an empty file: nothing to range over
            return False
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except _Transient as e:
        raise DownloadError(f"{url}: {e}") from e


class _PartDigest:
    """A running hash of ``<dest>.part``, kept in step with what is on disk (no re-read of 100 GB at the end)."""

    def __init__(self, part: Path, algorithm: tp.Optional[str], chunk_size: int) -> None:
        self.part, self.algorithm, self.chunk_size = part, algorithm, chunk_size
        self._digest: tp.Any = None
        self.covered = 0  # bytes of the .part hashed so far

    def reset(self) -> None:
        self._digest = hashlib.new(self.algorithm) if self.algorithm else None
        self.covered = 0

    def catch_up(self) -> None:
        """Make the hash cover exactly the bytes on disk (re-hashing the .part if they differ)."""
        if self.algorithm is None:
            return
        size = self.part.stat().st_size if self.part.exists() else 0
        if self._digest is not None and self.covered == size:
            return
        self.reset()
        if size:
            logger.info("hashing the %d bytes already in %s", size, self.part)
            with open(self.part, "rb") as f:
                while chunk := f.read(self.chunk_size):
                    self.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._digest is not None:
            self._digest.update(chunk)
        self.covered += len(chunk)

    def hexdigest(self) -> str:
        self.catch_up()
        return self._digest.hexdigest()


def _download_attempt(url: str, part: Path, digest: _PartDigest, bar: tp.Any, timeout: float,
                      chunk_size: int) -> None:
    """One request: append to ``part`` from its current size (or rewrite it from zero). Raises _Transient."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _urlopen(url, headers, timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            total = _parse_content_range(e.headers.get("Content-Range"))[2]
            if total == offset:
                logger.info("%s: %s already holds all %d bytes", url, part, offset)
                return
            logger.warning("%s: the server refused to resume %s from byte %d (its size is %s); restarting from "
                           "zero", url, part, offset, total if total is not None else "unknown")
            part.unlink()
            return _download_attempt(url, part, digest, bar, timeout, chunk_size)
        if _retryable(e.code):
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e

    with response:
        length = _int_header(response.headers.get("Content-Length"))
        if response.status == 206:
            start, _, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Transient(f"asked for bytes from {offset}, got {response.headers.get('Content-Range')}")
            mode = "ab"
            digest.catch_up()
        else:
            if offset:
                logger.info("%s: the server ignored the Range request (answered %d): restarting %s from zero",
                            url, response.status, part)
            offset, total, mode = 0, length, "wb"
            digest.reset()
        if offset:
            logger.info("%s: resuming %s from byte %d", url, part, offset)
        bar.reset(total=total)
        bar.update(offset)
        received = 0
        with open(part, mode) as f:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except _NETWORK_ERRORS as e:
                    raise _Transient(_reason(e)) from e
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if length is not None and received < length:
        raise _Transient(f"connection closed after {received} of {length} bytes")
    if total is not None and part.stat().st_size != total:
        raise _Transient(f"{part} has {part.stat().st_size} bytes, the server said {total}")


def http_download(url: str, dest: PathLike, *, expected_hash: tp.Optional[str] = None, algorithm: str = "sha1",
                  retries: int = 5, backoff: float = 1.0, timeout: float = 60, chunk_size: int = 1 << 20,
                  progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resumably, and return ``dest``.

    Bytes go to ``<dest>.part``; an existing ``.part`` is resumed with a Range request from its size (when
    the server answers 200 instead of 206 it is rewritten from zero). A dropped connection, a timeout, a
    5xx or a 408/425/429 is retried up to ``retries`` times, sleeping ``backoff * 2**attempt`` seconds, each
    retry resuming from the bytes on disk; when they run out the ``.part`` stays for the next call to resume.
    Any other 4xx (416 aside: a complete ``.part``, or one to restart) fails at once. When ``expected_hash``
    is given, the finished file must match it (hashed as it arrives, in chunks): otherwise it is deleted and
    :class:`ChecksumError` raised. Only then is ``.part`` renamed to ``dest``.

    If ``dest`` already exists it is kept when it matches ``expected_hash`` (or when no hash is given), and
    downloaded again when it does not.

    Example (not run here)::

        path = http_download("https://os.unil.cloud.switch.ch/fma/fma_metadata.zip", "data/fma_metadata.zip",
                             expected_hash=sha1)
    """
    from tqdm import tqdm

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    expected = expected_hash.strip().lower() if expected_hash else None
    if dest.exists():
        if expected is None:
            logger.info("%s exists (no hash to check): skipping the download of %s", dest, url)
            return dest
        actual = file_hash(dest, algorithm, chunk_size)
        if actual == expected:
            logger.info("%s exists with the expected %s: skipping the download of %s", dest, algorithm, url)
            return dest
        logger.warning("%s exists but its %s is %s, expected %s: downloading %s again", dest, algorithm, actual,
                       expected, url)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s -> %s", url, dest)

    digest = _PartDigest(part, algorithm if expected else None, chunk_size)
    attempt = 0
    with tqdm(desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
              leave=False) as bar:
        while True:
            try:
                _download_attempt(url, part, digest, bar, timeout, chunk_size)
                break
            except _Transient as e:
                have = part.stat().st_size if part.exists() else 0
                if attempt >= retries:
                    raise DownloadError(f"{url}: {e}; gave up after {retries} retries ({have} bytes kept in "
                                        f"{part} for the next attempt to resume)") from e
                delay = backoff * 2 ** attempt
                attempt += 1
                logger.warning("%s: %s; retry %d/%d in %.2f s, resuming from byte %d", url, e, attempt, retries,
                               delay, have)
                time.sleep(delay)

    size = part.stat().st_size
    if expected is not None:
        actual = digest.hexdigest()
        if actual != expected:
            part.unlink(missing_ok=True)
            raise ChecksumError(dest, expected, actual, algorithm, source=url)
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    logger.info("downloaded %s -> %s (%d bytes%s)", url, dest, size, f", {algorithm} verified" if expected else "")
    return dest


class _Connection:
    """One kept-alive HTTP(S) connection for a URL, following redirects.

    Re-used across requests (zip members are many small ranges); a kept-alive connection the server has
    closed meanwhile is reopened once transparently. Talks to the host directly (no proxy).
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: tp.Optional[http.client.HTTPConnection] = None
        self._key: tp.Optional[tp.Tuple[str, str]] = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, headers: tp.Mapping[str, str]) -> http.client.HTTPResponse:
        """Send a request; network errors propagate (the caller retries). The caller must read the body."""
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(urllib.parse.urlsplit(url), method, headers)
            location = response.getheader("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.read()
            url = urllib.parse.urljoin(url, location)
            if response.status in (301, 308):
                self.url = url
        raise DownloadError(f"{self.url}: more than {_MAX_REDIRECTS} redirects")

    def _send(self, parts: urllib.parse.SplitResult, method: str,
              headers: tp.Mapping[str, str]) -> http.client.HTTPResponse:
        if parts.scheme not in ("http", "https"):
            raise DownloadError(f"{urllib.parse.urlunsplit(parts)}: unsupported scheme {parts.scheme!r}")
        key = (parts.scheme, parts.netloc)
        if self._key != key:
            self.close()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:
            reused = self._conn is not None and self._conn.sock is not None
            if self._conn is None:
                cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                self._conn, self._key = cls(parts.netloc, timeout=self.timeout), key
            try:
                self._conn.request(method, target, headers={"User-Agent": USER_AGENT, **headers})
                return self._conn.getresponse()
            except _NETWORK_ERRORS:
                self.close()
                if not reused:
                    raise
                # The server closed the idle kept-alive connection: once more on a fresh one.


class HTTPRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP Range requests (one kept-alive connection).

    ``read(n)`` fetches exactly the bytes it lacks, plus a read-ahead for small reads (up to ``block_size``
    bytes in all); a dropped connection is retried ``retries`` times with ``backoff * 2**attempt`` seconds
    between tries, continuing from the bytes received. ``bytes_downloaded`` counts the payload bytes received.

    Raises :class:`RangeNotSupported` when the server ignores Range requests.

    Example (not run here)::

        with HTTPRangeFile("https://example.org/big.zip") as f:
            f.seek(-22, io.SEEK_END)
            tail = f.read()            # 22 bytes over the network, not 7 GB
    """

    def __init__(self, url: str, *, timeout: float = 60, retries: int = 5, backoff: float = 1.0,
                 block_size: int = 64 * 1024) -> None:
        super().__init__()
        self.url = url
        self.name = url  # zipfile names the archive by it in errors
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.block_size = block_size
        self.bytes_downloaded = 0
        self.request_count = 0
        self._conn = _Connection(url, timeout)
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        # Exclusive offset beyond which small reads do not read ahead (RemoteZip sets it to a member's end).
        self._readahead_end: tp.Optional[int] = None
        try:
            self.size = self._probe()
        except BaseException:
            self._conn.close()
            raise

    # -- io.RawIOBase -------------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: tp.Optional[int] = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(min(size, max(0, self.size - self._pos)))
        n = self.readinto(buffer)
        return bytes(buffer[:n])

    def readall(self) -> bytes:
        return self.read(max(0, self.size - self._pos))

    def readinto(self, b: tp.Any) -> int:
        """Fill ``b`` with the bytes at the current position (fewer only at end of file)."""
        self._check_open()
        with memoryview(b) as view, view.cast("B") as out:
            n = min(len(out), max(0, self.size - self._pos))
            if n == 0:
                return 0
            filled = 0
            offset = self._pos - self._buf_start
            if 0 <= offset < len(self._buf):
                filled = min(n, len(self._buf) - offset)
                out[:filled] = self._buf[offset:offset + filled]
            if filled < n:
                start, need = self._pos + filled, n - filled
                limit = self.size if self._readahead_end is None else min(self._readahead_end, self.size)
                end = max(start + need, min(start + self.block_size, limit))
                data = self._fetch(start, end - start)
                out[filled:n] = data[:need]
                self._buf, self._buf_start = bytes(data[need:]), start + need
            self._pos += n
            return n

    def close(self) -> None:
        if not self.closed:
            self._conn.close()
            self._buf = b""
        super().close()

    # -- HTTP -------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed HTTPRangeFile ({self.url})")

    def _retrying(self, what: str, attempt: int, error: BaseException) -> int:
        """Sleep before the next try, or raise DownloadError when the retries are spent."""
        if attempt >= self.retries:
            raise DownloadError(f"{self.url}: {what}: {_reason(error)}; gave up after {self.retries} "
                                "retries") from error
        delay = self.backoff * 2 ** attempt
        logger.warning("%s: %s: %s; retry %d/%d in %.2f s", self.url, what, _reason(error), attempt + 1,
                       self.retries, delay)
        time.sleep(delay)
        return attempt + 1

    def _probe(self) -> int:
        """The file's size, from a ``Range: bytes=0-0`` request; keeps the byte it returns."""
        attempt = 0
        while True:
            try:
                response = self._conn.request("GET", {"Range": "bytes=0-0"})
                self.request_count += 1
                with contextlib.ExitStack() as stack:
                    stack.callback(self._release, response)
                    total = _parse_content_range(response.getheader("Content-Range"))[2]
                    if response.status == 200:
                        raise RangeNotSupported(f"{self.url}: the server ignores HTTP Range requests (it answered "
                                                "200 to `Range: bytes=0-0`)")
                    if response.status == 416 and total == 0:
                        response.read()
                        return 0
                    if response.status != 206:
                        if _retryable(response.status):
                            raise _Transient(f"HTTP {response.status} {response.reason}")
                        raise DownloadError(f"{self.url}: HTTP {response.status} {response.reason}")
                    if total is None:
                        raise DownloadError(f"{self.url}: the server did not say the file's size "
                                            f"(Content-Range: {response.getheader('Content-Range')})")
                    body = response.read()
                    self.bytes_downloaded += len(body)
                    self._buf, self._buf_start = body[:1], 0
                    logger.debug("%s: %d bytes, Range requests supported", self.url, total)
                    return total
            except (_Transient, *_NETWORK_ERRORS) as e:
                attempt = self._retrying("size request", attempt, e)

    def _release(self, response: http.client.HTTPResponse) -> None:
        """Drop the connection unless the response was read to its end (then it is reused)."""
        if not response.isclosed():
            self._conn.close()

    def _fetch(self, start: int, length: int) -> bytearray:
        """Bytes ``[start, start + length)``, retrying dropped connections from the bytes received."""
        data = bytearray()
        attempt = 0
        while len(data) < length:
            first, last = start + len(data), start + length - 1
            try:
                response = self._conn.request("GET", {"Range": f"bytes={first}-{last}"})
                self.request_count += 1
                with contextlib.ExitStack() as stack:
                    stack.callback(self._release, response)
                    if response.status == 200:
                        raise RangeNotSupported(f"{self.url}: the server stopped honouring Range requests "
                                                f"(200 for bytes {first}-{last})")
                    if response.status != 206:
                        if _retryable(response.status):
                            raise _Transient(f"HTTP {response.status} {response.reason}")
                        raise DownloadError(f"{self.url}: HTTP {response.status} {response.reason} for bytes "
                                            f"{first}-{last}")
                    got_start = _parse_content_range(response.getheader("Content-Range"))[0]
                    if got_start != first:
                        raise _Transient(f"asked for bytes {first}-{last}, got "
                                         f"{response.getheader('Content-Range')}")
                    want = last - first + 1
                    while want:
                        chunk = response.read(min(want, 1 << 20))
                        if not chunk:
                            raise _Transient(f"connection closed with {want} bytes of {first}-{last} missing")
                        data += chunk
                        self.bytes_downloaded += len(chunk)
                        want -= len(chunk)
            except (_Transient, *_NETWORK_ERRORS) as e:
                attempt = self._retrying(f"bytes {first}-{last}", attempt, e)
        return data


class RemoteZip:
    """A remote zip read in place: the central directory, then only the members asked for.

    Built on stdlib :class:`zipfile.ZipFile` over an :class:`HTTPRangeFile` (``http_kwargs`` go to it), so
    stored, deflate, bzip2 and lzma members work and CRCs are checked. Reads of a member never read ahead past
    its end, so fetching members costs about their compressed size. Not thread-safe: one per thread.

    Example (not run here)::

        with RemoteZip("https://os.unil.cloud.switch.ch/fma/fma_large.zip") as rz:
            sums = rz.read("fma_large/checksums").decode()
            rz.fetch("fma_large/000/000002.mp3", "data/000/000002.mp3", expected_sha1=sha1)
    """

    def __init__(self, url: str, **http_kwargs: tp.Any) -> None:
        self.url = url
        self._file = HTTPRangeFile(url, **http_kwargs)
        try:
            self._zip = zipfile.ZipFile(self._file)
        except zipfile.BadZipFile as e:
            self._file.close()
            raise DownloadError(f"{url}: not a readable zip archive: {e}") from e
        except BaseException:
            self._file.close()
            raise
        self._offsets = sorted({info.header_offset for info in self._zip.infolist()})
        self._end_of_members = getattr(self._zip, "start_dir", self._file.size)
        logger.info("%s: %d members in %.1f MB, index read with %d bytes", url, len(self._zip.infolist()),
                    self._file.size / 1e6, self._file.bytes_downloaded)

    def namelist(self) -> tp.List[str]:
        return self._zip.namelist()

    def infolist(self) -> tp.List[zipfile.ZipInfo]:
        return self._zip.infolist()

    def getinfo(self, name: str) -> zipfile.ZipInfo:
        """The member's ZipInfo; KeyError when there is none (as zipfile)."""
        return self._zip.getinfo(name)

    @property
    def size(self) -> int:
        """The archive's size in bytes."""
        return self._file.size

    @property
    def bytes_downloaded(self) -> int:
        """Payload bytes received so far (central directory included)."""
        return self._file.bytes_downloaded

    @contextlib.contextmanager
    def _member(self, info: zipfile.ZipInfo) -> tp.Iterator[None]:
        """Confine read-ahead to the member's bytes (its local header up to the next member)."""
        i = bisect.bisect_right(self._offsets, info.header_offset)
        self._file._readahead_end = self._offsets[i] if i < len(self._offsets) else self._end_of_members
        try:
            yield
        except zipfile.BadZipFile as e:  # bad CRC, bad local header
            raise DownloadError(f"{self.url}: member {info.filename!r}: {e}") from e
        finally:
            self._file._readahead_end = None

    def read(self, name: str) -> bytes:
        """A member's decompressed bytes, in memory (for small members such as a ``checksums`` file)."""
        info = self._zip.getinfo(name)
        with self._member(info):
            data = self._zip.read(info)
        logger.info("%s: read %s (%d bytes)", self.url, name, len(data))
        return data

    def fetch(self, name: str, dest: PathLike, *, expected_sha1: tp.Optional[str] = None,
              chunk_size: int = 1 << 20) -> Path:
        """Stream a member (decompressed, CRC-checked) to ``dest`` and return ``dest``.

        Written to a temporary file beside ``dest``, checked against ``expected_sha1`` when given (on mismatch
        the file is deleted and :class:`ChecksumError` raised), then renamed. Skipped when ``dest`` exists and
        matches ``expected_sha1`` (without a hash: when its size is the member's).
        """
        dest = Path(dest)
        info = self._zip.getinfo(name)
        expected = expected_sha1.strip().lower() if expected_sha1 else None
        if dest.exists():
            if expected is not None:
                actual = file_hash(dest, "sha1")
                if actual == expected:
                    logger.info("%s exists with the expected sha1: skipping %s!%s", dest, self.url, name)
                    return dest
                logger.warning("%s exists but its sha1 is %s, expected %s: fetching %s again", dest, actual,
                               expected, name)
            elif dest.stat().st_size == info.file_size:
                logger.info("%s exists with the member's size (no hash to check): skipping %s!%s", dest,
                            self.url, name)
                return dest
        before = self.bytes_downloaded
        digest = hashlib.sha1()
        with self._member(info), atomic.atomic_open(dest, "wb") as out, self._zip.open(info) as src:
            while chunk := src.read(chunk_size):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            if expected is not None and digest.hexdigest() != expected:
                raise ChecksumError(dest, expected, digest.hexdigest(), "sha1", source=f"{self.url}!{name}")
        logger.info("fetched %s!%s -> %s (%d bytes, %d downloaded%s)", self.url, name, dest, info.file_size,
                    self.bytes_downloaded - before, ", sha1 verified" if expected else "")
        return dest

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __enter__(self) -> "RemoteZip":
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()


# -- safe extraction -----------------------------------------------------------------------------------------

def _inside(root: Path, path: tp.Union[str, Path]) -> bool:
    return os.path.commonpath([str(root), str(path)]) == str(root)


def _member_path(root: Path, name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to ``root``; DownloadError when it is absolute or climbs out."""
    if not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise DownloadError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in PurePosixPath(name).parts:
        raise DownloadError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    rel = PurePosixPath(os.path.normpath(name))
    if not _inside(root, os.path.normpath(root / rel)):
        raise DownloadError(f"{archive}: member {name!r} would land outside {root}; refusing to extract")
    return rel


def _check_link(root: Path, rel: PurePosixPath, linkname: str, archive: Path, name: str) -> None:
    """Refuse a symlink member whose target is absolute or resolves outside ``root``."""
    if not linkname or os.path.isabs(linkname):
        raise DownloadError(f"{archive}: member {name!r} is a symlink to the absolute path {linkname!r}; "
                            "refusing to extract")
    parts = PurePosixPath(linkname).parts
    climbs = len(parts) - len(tuple(itertools.dropwhile(lambda part: part == "..", parts)))
    if ".." in parts[climbs:]:  # "a/.." climbs through "a", which may itself be a link: resolved wrongly lexically
        raise DownloadError(f"{archive}: member {name!r} is a symlink to {linkname!r}, which has '..' after a "
                            "name; refusing to extract")
    target = os.path.normpath(root / rel.parent / linkname)
    resolved = os.path.realpath(root / rel.parent / linkname)
    if not (_inside(root, target) and _inside(root, resolved)):
        raise DownloadError(f"{archive}: member {name!r} is a symlink to {linkname!r}, outside {root}; "
                            "refusing to extract")


def _check_links_after(root: Path, written: tp.Sequence[Path], names: tp.Sequence[str], archive: Path) -> None:
    """Once everything is extracted, every symlink written must still resolve inside ``root``; the escaping
    ones (made so by links extracted after them) are deleted and reported."""
    escaping = [(path, name) for path, name in zip(written, names)
                if path.is_symlink() and not _inside(root, os.path.realpath(path))]
    for path, _ in escaping:
        path.unlink()
    if escaping:
        raise DownloadError(f"{archive}: member {escaping[0][1]!r} is a symlink resolving outside {root} through "
                            "other links; deleted it, refusing to extract")


def _check_parent(root: Path, target: Path, archive: Path, name: str) -> None:
    """At write time: the real directory the member goes to (through any symlink) must be inside ``root``.

    ``resolve`` follows the links that exist and keeps the rest of the path as written."""
    if not _inside(root, target.parent.resolve()):
        raise DownloadError(f"{archive}: member {name!r} would be written through a symlink outside {root}; "
                            "refusing to extract")


def safe_extract_zip(zip_path: PathLike, dest: PathLike,
                     members: tp.Optional[tp.Iterable[str]] = None) -> tp.List[Path]:
    """Extract ``members`` (default: all) of a local zip under ``dest``; return the files written.

    Every member is checked before anything is written: absolute paths, ``..`` and symlinks pointing outside
    ``dest`` raise :class:`DownloadError` naming the member. Files are written atomically (temp + rename).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: tp.List[Path] = []
    names: tp.List[str] = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist() if members is None else [zf.getinfo(name) for name in members]
        plan = []
        for info in infos:
            rel = _member_path(root, info.filename, zip_path)
            link = None
            if stat.S_ISLNK(info.external_attr >> 16):
                link = zf.read(info).decode("utf-8")
                _check_link(root, rel, link, zip_path, info.filename)
            plan.append((info, rel, link))
        for info, rel, link in plan:
            target = root / rel
            _check_parent(root, target / "_" if info.is_dir() else target, zip_path, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if link is not None:
                _check_link(root, rel, link, zip_path, info.filename)  # again, now that earlier links exist
                atomic.symlink(target, link)  # the member `target` becomes a link to `link`
            else:
                with atomic.atomic_open(target, "wb") as out, zf.open(info) as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            written.append(dest / rel)
            names.append(info.filename)
    _check_links_after(root, [root / p.relative_to(dest) for p in written], names, zip_path)
    logger.info("extracted %d files from %s to %s", len(written), zip_path, dest)
    return written


def safe_extract_tar(tar_path: PathLike, dest: PathLike) -> tp.List[Path]:
    """Extract a local tar (any compression tarfile reads) under ``dest``; return the files written.

    Every member is checked before anything is written: absolute paths, ``..``, symlinks or hard links
    pointing outside ``dest`` and device files raise :class:`DownloadError` naming the member. Extraction then
    runs under tarfile's ``data`` filter as a second guard.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: tp.List[Path] = []
    names: tp.List[str] = []
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        for member in members:
            rel = _member_path(root, member.name, tar_path)
            if member.issym():
                _check_link(root, rel, member.linkname, tar_path, member.name)
            elif member.islnk():
                try:
                    _member_path(root, member.linkname, tar_path)
                except DownloadError as e:
                    raise DownloadError(f"{tar_path}: member {member.name!r} is a hard link to "
                                        f"{member.linkname!r}, outside {root}; refusing to extract") from e
            elif not (member.isfile() or member.isdir()):
                raise DownloadError(f"{tar_path}: member {member.name!r} is a device or fifo; refusing to extract")
            if not member.isdir():
                written.append(dest / rel)
                names.append(member.name)
        kwargs: tp.Dict[str, tp.Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(root, members=members, **kwargs)
        except tarfile.TarError as e:  # FilterError included
            raise DownloadError(f"{tar_path}: {e}") from e
    _check_links_after(root, [root / p.relative_to(dest) for p in written], names, tar_path)
    logger.info("extracted %d files from %s to %s", len(written), tar_path, dest)
    return written
