"""Open a local HTML page in headless Chromium and report what a reader's browser would show.

A test helper shared by the tests of every page the project writes (sample indexes, reports). It drives
Debian's ``chromium`` through Debian's ``chromedriver`` with selenium (never Selenium Manager: no
download), opens the file by its ``file://`` URL, waits until every ``<audio>`` has loaded its metadata
(``readyState >= 1``) or failed, and returns:

- ``console_errors``: the browser log at level SEVERE (failed loads, JavaScript errors);
- ``audio``: per ``<audio>``, ``{"src", "current_src", "readyState", "duration", "error"}``;
- ``images``: per ``<img>``, ``{"src", "current_src", "complete", "naturalWidth", "naturalHeight"}``.

``src`` is the attribute as written in the page (relative paths stay relative); ``current_src`` the
absolute URL the browser resolved. ``duration`` is None until known; ``error`` is None or
``"<MediaError code>: <message>"``.

Missing Chromium is a failure, not a skip: ``make setup`` installs Debian's ``chromium`` and
``chromium-driver`` (``musicpipe/install.py``'s SYSTEM_TOOLS). ``$CHROMIUM_BINARY`` and
``$CHROMEDRIVER`` override where they are looked for.

Example:
    >>> [f.name for f in dataclasses.fields(PageCheck)]
    ['url', 'console_errors', 'audio', 'images', 'timed_out']
    >>> page = inspect_page("outputs/samples/index.html")            # doctest: +SKIP
    >>> page.console_errors, [a["readyState"] >= 1 for a in page.audio][:2]   # doctest: +SKIP
    ([], [True, True])
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import typing as tp
from pathlib import Path

SETUP_HINT = "`make setup` installs it (Debian packages chromium and chromium-driver)"

# Everything is read in one script, so the answer is one consistent snapshot of the page.
_SNAPSHOT_JS = """
const num = (x) => (typeof x === "number" && isFinite(x)) ? x : null;
return {
  readyState: document.readyState,
  audio: Array.from(document.querySelectorAll("audio")).map((a) => ({
    src: a.getAttribute("src"),
    current_src: a.currentSrc || a.src || null,
    readyState: a.readyState,
    networkState: a.networkState,
    duration: num(a.duration),
    error: a.error ? (a.error.code + ": " + (a.error.message || "")) : null,
  })),
  images: Array.from(document.querySelectorAll("img")).map((i) => ({
    src: i.getAttribute("src"),
    current_src: i.currentSrc || i.src || null,
    complete: i.complete,
    naturalWidth: i.naturalWidth,
    naturalHeight: i.naturalHeight,
  })),
};
"""


@dataclasses.dataclass
class PageCheck:
    """What :func:`inspect_page` saw (see the module docstring for the fields of each entry)."""

    url: str
    console_errors: tp.List[str]
    audio: tp.List[tp.Dict[str, tp.Any]]
    images: tp.List[tp.Dict[str, tp.Any]]
    timed_out: bool = False


def _find(env: str, *names: str) -> str:
    given = os.environ.get(env)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise AssertionError(f"${env}={given} is not an executable file")
        return given
    for name in names:
        exe = shutil.which(name)
        if exe:
            return exe
    raise AssertionError(f"{names[0]} not found on PATH (the tests open HTML pages in headless Chromium): "
                         f"{SETUP_HINT}")


def chromium_paths() -> tp.Tuple[str, str]:
    """``(chromium, chromedriver)`` executables; AssertionError saying ``make setup`` installs them."""
    return _find("CHROMIUM_BINARY", "chromium", "chromium-browser"), _find("CHROMEDRIVER", "chromedriver")


def _settled(snapshot: tp.Mapping[str, tp.Any]) -> bool:
    if snapshot["readyState"] != "complete":
        return False
    audio_done = all(a["readyState"] >= 1 or a["error"] is not None or a["networkState"] == 3  # NO_SOURCE
                     for a in snapshot["audio"])
    return audio_done and all(i["complete"] for i in snapshot["images"])


def inspect_page(page: tp.Union[str, Path], timeout: float = 30.0, poll: float = 0.1) -> PageCheck:
    """Open ``page`` (a local HTML file) in headless Chromium; wait for media; return a :class:`PageCheck`.

    Waits until the document is loaded, every ``<img>`` is complete and every ``<audio>`` has
    ``readyState >= 1`` (metadata loaded) or an error, polling every ``poll`` s for at most ``timeout`` s;
    a page that never settles comes back with ``timed_out=True`` and the last snapshot (so the caller's
    assertions say which element is stuck).
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:  # pragma: no cover - a setup problem, said plainly
        raise AssertionError(f"selenium is not installed in this environment ({e}): `make setup` installs it") \
            from e

    path = Path(page).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such page")
    chromium, chromedriver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--disable-background-networking", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.set_page_load_timeout(timeout)
        url = path.as_uri()
        driver.get(url)
        deadline = time.monotonic() + timeout
        snapshot = driver.execute_script(_SNAPSHOT_JS)
        while not _settled(snapshot) and time.monotonic() < deadline:
            time.sleep(poll)
            snapshot = driver.execute_script(_SNAPSHOT_JS)
        timed_out = not _settled(snapshot)
        errors = [f"{entry.get('source', '')}: {entry.get('message', '')}".strip(": ")
                  for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    finally:
        driver.quit()
    audio = [{k: a[k] for k in ("src", "current_src", "readyState", "duration", "error")}
             for a in snapshot["audio"]]
    return PageCheck(url=url, console_errors=errors, audio=audio, images=list(snapshot["images"]),
                     timed_out=timed_out)
