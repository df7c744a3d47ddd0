"""A headless Chromium page driven over the DevTools protocol (CDP), shared by the browser tests
(tests/test_web_browser.py against a stand-in API, tests/test_web_graph.py against the real
graph) and scripts/web_screenshots.py. One blocking websocket: a command's answer is awaited
while the events in between (console errors, exceptions) are collected, so each caller reads
``errors`` instead of wiring its own listener.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Answers the pages provoke on purpose (a missing key, a taken name, a refused text, a busy
#: service) and a stream cut on purpose; Chromium logs them as failed loads, which they are not.
DELIBERATE = (*(f"status of {s}" for s in (401, 409, 422, 503)), "ERR_INCOMPLETE_CHUNKED_ENCODING")


class Browser:
    """One page target; console errors and script exceptions are collected in ``errors``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            expected = any(d in entry["text"] for d in DELIBERATE)
            if not (entry.get("source") == "network" and expected):
                self.errors.append(f"{entry['text']} ({entry.get('url', '')[:60]})")

    def js(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                        returnByValue=True)  # fmt: skip
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait(self, expression: str, timeout: float = 30) -> Any:
        """Poll a JS expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.js("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression} (status: {status})")

    def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)  # fmt: skip
        time.sleep(0.5)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(shot["data"]))


def start_sign(page: Browser, text: str) -> None:
    """Type ``text`` into the page's text box and press *Sign* (which disables itself at once);
    the caller waits for whatever the render should lead to."""
    page.js(f"$('text').value = {json.dumps(text)}; $('go').click();")


def set_field(page: Browser, element: str, value: str) -> None:
    """Set a form control as a user would: the value, then the ``change`` event the page acts on."""
    name = json.dumps(element)
    page.js(f"$({name}).value = {json.dumps(value)}; $({name}).dispatchEvent(new Event('change'));")


@contextmanager
def chromium_page(url: str, profile: Path, chromium: str | None = None) -> Iterator[Browser]:
    """Headless Chromium with ``url`` open, as a CDP :class:`Browser`."""
    proc = subprocess.Popen(
        [chromium or CHROMIUM or "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None, "Chromium did not start"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            page = Browser(ws)
            page.call("Page.navigate", url=url)
            yield page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
