"""The report page in a real headless browser (Debian's chromium): it loads from disk with
no console errors and every image decodes.

Talks to chromium over the DevTools protocol with a minimal stdlib WebSocket client
(loopback only), so the test needs nothing beyond chromium itself. Skipped when
/usr/bin/chromium is absent (scripts/ensure-chromium installs it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no headless browser at {CHROMIUM}: run scripts/ensure-chromium (as root) to "
           "install Debian's chromium")


# -- a minimal WebSocket client (RFC 6455, client side: masked text frames) --------------------


class WebSocket:
    def __init__(self, url: str, timeout: float = 30.0):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools handshake refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        header = bytes([0x81])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            buf += chunk
        return bytes(buf)

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xA):  # ping/pong: not expected from chromium; ignore
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """One headless chromium with a fresh profile; ``page(url)`` loads a page and reports."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = WebSocket(f"ws://127.0.0.1:{port}{path}")
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout} s")

    def page(self, url: str, screenshot: Path | None = None) -> dict[str, Any]:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired")
        images = self.call("Runtime.evaluate", session, returnByValue=True, awaitPromise=True,
                           expression="Promise.all(Array.from(document.images).map(i => "
                           "i.decode().then(() => [i.alt, i.naturalWidth, i.naturalHeight], "
                           "() => [i.alt, 0, 0])))")["result"]["value"]
        text = self.call("Runtime.evaluate", session, returnByValue=True,
                         expression="document.body.innerText")["result"]["value"]
        overflow = self.call("Runtime.evaluate", session, returnByValue=True, expression=(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        ))["result"]["value"]  # px the page runs past the window's right edge
        if screenshot is not None:
            metrics = self.call("Page.getLayoutMetrics", session)["cssContentSize"]
            shot = self.call("Page.captureScreenshot", session, format="png",
                             captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": metrics["width"],
                                   "height": min(metrics["height"], 16000), "scale": 1})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = [e for e in self.events if _is_error(e)]
        return {"images": images, "errors": errors, "text": text, "overflow": overflow}

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _is_error(event: dict[str, Any]) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return False


@pytest.fixture
def browser(tmp_path: Path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


# -- the tests -----------------------------------------------------------------------------


@needs_chromium
@pytest.mark.browser
def test_report_page_loads_without_errors_and_images_decode(browser, report_folder):
    shot = Path(os.environ["REPORT_SCREENSHOT"]) if os.environ.get("REPORT_SCREENSHOT") else None
    result = browser.page((report_folder / "index.html").resolve().as_uri(), shot)
    assert result["errors"] == []
    assert len(result["images"]) >= 4
    for alt, width, height in result["images"]:
        assert width > 100 and height > 100, f"image {alt!r} did not decode"
    assert "within ±5 %" in result["text"]
    assert "No data:" in result["text"]  # the per-layer profile was not measured here
    assert result["overflow"] == 0  # wide tables scroll inside the page, not the page itself


@needs_chromium
@pytest.mark.browser
def test_browser_reports_a_broken_image(browser, tmp_path):
    """The check itself: a page with an undecodable image and a console error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img alt='bad' src='data:image/png;base64,AAAA'>"
                    "<script>console.error('boom')</script></body></html>")
    result = browser.page(page.as_uri())
    assert result["images"] == [["bad", 0, 0]]
    assert any(e.get("method") == "Runtime.consoleAPICalled" for e in result["errors"])


def test_ensure_chromium_script_is_executable():
    script = Path(__file__).resolve().parent.parent / "scripts" / "ensure-chromium"
    assert script.exists() and os.access(script, os.X_OK)
    assert shutil.which("bash")
