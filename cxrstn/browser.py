"""Open a local HTML file in headless Chromium, offline, and read back what a reader gets.

`visit(path)` starts Chromium (Debian's `chromium` package) with its network cut off,
loads the file and returns a `Visit`: every request the page made, what each `<img>`
decoded to, the text of every table cell and, if asked, a PNG of the first screen.
It speaks the DevTools protocol over `--remote-debugging-pipe` (JSON messages separated
by NUL bytes on file descriptors 3 and 4), so it needs no Python package beyond the
standard library and no port.

The network is off three ways: every request is paused by the DevTools `Fetch` domain and
failed unless it is the file itself, host names resolve to nothing
(`--host-resolver-rules`), and Chromium's own background traffic is switched off (the flags
this machine kind's notes list). Requests are recorded before they are blocked, so a page
that tries to reach the web is seen trying.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables tried in order; `CXRSTN_CHROMIUM` names another."""

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI and the developers' machines run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)

# Read by the page after it loaded: each image's decode (awaited), its natural size, and
# every table's cells as the reader sees them.
PAGE_SCRIPT = """(async () => {
  const images = [...document.images];
  const errors = await Promise.all(images.map(
      (img) => img.decode().then(() => null, (error) => String(error))));
  return {
    title: document.title,
    images: images.map((img, k) => ({
      alt: img.alt, src: img.currentSrc.slice(0, 80), complete: img.complete,
      width: img.naturalWidth, height: img.naturalHeight, error: errors[k]})),
    tables: [...document.querySelectorAll("table")].map((table) => ({
      class: table.className,
      rows: [...table.rows].map((row) => [...row.cells].map((cell) => cell.innerText.trim()))})),
  };
})()"""


class BrowserError(RuntimeError):
    """Chromium could not be started, or did not answer as the protocol says."""


def find_chromium() -> str | None:
    """Path of a Chromium executable (`CXRSTN_CHROMIUM` first), or None."""
    named = os.environ.get("CXRSTN_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@dataclass
class Image:
    alt: str
    src: str  # the first 80 characters of the URL it loaded from
    complete: bool
    width: int  # natural size, 0 when it did not decode
    height: int
    error: str | None  # why HTMLImageElement.decode() failed, None when it decoded


@dataclass
class Visit:
    url: str
    title: str
    requests: list[str]  # every URL the page asked for, once each, the file itself included
    blocked: list[str]  # the requests that tried to leave the file, and were failed
    images: list[Image]
    tables: list[dict]  # {"class": ..., "rows": [[cell text, ...], ...]}
    screenshot: Path | None = None
    console: list[str] = field(default_factory=list)

    def offsite(self) -> list[str]:
        """Requests for anything but the file itself and inline data (data:, about:)."""
        return [u for u in self.requests if not _local(u, self.url)]


def _local(url: str, page: str) -> bool:
    return url.split("#")[0] == page or url.startswith(("data:", "about:", "blob:"))


class _Pipe:
    """DevTools protocol over Chromium's --remote-debugging-pipe: requests and events."""

    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int, timeout: float):
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.write_fd, data) :]
        return self.next_id

    def receive(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe (exit {self.process.poll()})")
                self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its answer; events arriving meanwhile are queued."""
        wanted = self.send(method, params, session)
        while True:
            message = self.receive()
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def event(self) -> dict:
        return self.events.pop(0) if self.events else self.receive()


def visit(
    path: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    width: int = 1280,
    height: int = 800,
    timeout: float = 60.0,
) -> Visit:
    """Load `path` in headless Chromium with the network off; see the module docstring.

    `screenshot`, when given, receives a PNG of the first screen (`width` x `height` CSS
    pixels, the top of the page as a reader first sees it)."""
    executable = find_chromium()
    if executable is None:
        raise BrowserError("no Chromium found (apt-get install chromium, or set CXRSTN_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="cxrstn-chromium-") as profile:
        to_browser_r, to_browser_w = _high_pipe()
        from_browser_r, from_browser_w = _high_pipe()

        def wire_pipes() -> None:  # the protocol's fixed descriptors in the child
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        log = Path(profile) / "chromium.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=wire_pipes,
                close_fds=False,  # else the descriptors wire_pipes made are closed; ours are
            )  # non-inheritable (os.pipe), so only 3 and 4 reach Chromium
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(process, to_browser_w, from_browser_r, timeout)
        try:
            return _load(pipe, url, screenshot, width, height)
        except BrowserError as error:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise BrowserError(f"{error}\nChromium's output:\n{tail}") from None
        finally:
            try:
                pipe.send("Browser.close")
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
            os.close(to_browser_w)
            os.close(from_browser_r)


def _add(urls: list[str], url: str) -> None:
    """Record a URL once (the protocol reports a request both as sent and as paused)."""
    if url not in urls:
        urls.append(url)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose two ends are above 4, so that moving them onto 3 and 4 in the child
    never lands one end on the other (os.dup2(3, 3) would keep its close-on-exec flag)."""
    ends = []
    for end in os.pipe():
        ends.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return ends[0], ends[1]


def _load(pipe: _Pipe, url: str, screenshot, width: int, height: int) -> Visit:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for method, params in (
        ("Page.enable", {}),
        ("Runtime.enable", {}),
        ("Network.enable", {}),
        ("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}),
        (
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        ),
    ):
        pipe.call(method, params, session)
    pipe.send("Page.navigate", {"url": url}, session)
    requests, blocked, console = [], [], []
    loaded = False
    while not loaded:
        message = pipe.event()
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            _add(requests, params["request"]["url"])
        elif method == "Fetch.requestPaused":
            asked = params["request"]["url"]
            _add(requests, asked)
            if _local(asked, url):
                pipe.send("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
            else:
                _add(blocked, asked)
                pipe.send(
                    "Fetch.failRequest",
                    {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                    session,
                )
        elif method == "Runtime.consoleAPICalled":
            console.append(" ".join(str(a.get("value", "")) for a in params.get("args", [])))
        elif method == "Page.loadEventFired":
            loaded = True
    result = pipe.call(
        "Runtime.evaluate",
        {"expression": PAGE_SCRIPT, "awaitPromise": True, "returnByValue": True},
        session,
    )
    if "exceptionDetails" in result:
        raise BrowserError(f"the page script failed: {result['exceptionDetails']}")
    page = result["result"]["value"]
    # Requests the page script or late resources made are events still queued.
    for message in pipe.events:
        if message.get("method") in ("Network.requestWillBeSent", "Fetch.requestPaused"):
            _add(requests, message["params"]["request"]["url"])
    shot = None
    if screenshot is not None:
        data = pipe.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        shot = Path(screenshot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(data))
    return Visit(
        url=url,
        title=page["title"],
        requests=requests,
        blocked=blocked,
        images=[Image(**image) for image in page["images"]],
        tables=page["tables"],
        screenshot=shot,
        console=console,
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


IMG = re.compile(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", re.IGNORECASE)


def embedded_images(html: str) -> list[bytes | None]:
    """The bytes of each `<img>`'s base64 data URI, in page order (None for other sources)."""
    found = []
    for src in IMG.findall(html):
        prefix, _, data = src.partition(",")
        found.append(base64.b64decode(data) if prefix.endswith(";base64") else None)
    return found


def image_problems(page: Visit, html: str) -> list[str]:
    """Each image that did not decode, or decoded at another size than the file it embeds."""
    problems = []
    embedded = embedded_images(html)
    if len(embedded) != len(page.images):
        problems.append(f"{len(embedded)} <img> in the file, {len(page.images)} in the page")
    for k, (image, data) in enumerate(zip(page.images, embedded, strict=False)):
        name = f"image {k + 1} ({image.alt or image.src})"
        if image.error or not image.complete or image.width == 0:
            problems.append(f"{name}: did not decode ({image.error or 'incomplete'})")
            continue
        if data is None:
            problems.append(f"{name}: not embedded in the file")
            continue
        try:
            expected = png_size(data)
        except ValueError:
            problems.append(f"{name}: its data is not a PNG")
            continue
        if (image.width, image.height) != expected:
            problems.append(
                f"{name}: decoded at {image.width}x{image.height}, the PNG is {expected}"
            )
    return problems
