"""Check the demo page (``GET /``) in a real headless Chromium -- not part of CI.

Starts the serving graph with tiny random models (:mod:`slp_pipeline.standins`), opens ``/``
in ``chromium --headless`` and drives it over the DevTools protocol (CDP, via ``websockets``):

1. the page loads and its script runs: the signer list is filled from ``/v1/signers``;
2. clicking *Sign* posts the form and puts the returned mp4 into the ``<video>`` element, and
   Chromium can decode it (it reports the video's size and duration);
3. nothing is logged to the console as an error and no script exception is thrown.

Run: ``python scripts/check_web_page.py [--chromium /usr/bin/chromium]``; exits 1 on failure.
Needs a Chromium binary (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import ray
import websockets
from ray import serve

from slp_pipeline.config import load_serve_config
from slp_pipeline.serve_app import run_from_config
from slp_pipeline.standins import tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One CDP session on a page target; collects console errors and exceptions as they come."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT_S))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
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
            self.errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll a JS expression until it is truthy."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what}")


async def check(url: str, chromium: str) -> list[str]:
    """Drive the page; returns the failures (empty when all is well)."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="slp-chromium-") as profile:
        browser = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--mute-audio",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                        targets = json.load(r)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)
            ws_url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
            async with websockets.connect(ws_url, max_size=None) as ws:
                return await _drive(Page(ws), url)
        finally:
            browser.terminate()
            browser.wait(10)


async def _drive(page: Page, url: str) -> list[str]:
    failures = []
    try:
        await _exercise(page, url, failures)
    except TimeoutError as e:  # e.g. a script error stopped the page half-way
        failures.append(str(e))
    return failures + [f"console/script error: {e}" for e in page.errors]


async def _exercise(page: Page, url: str, failures: list[str]) -> None:
    for domain in ("Runtime", "Log", "Page"):
        await page.call(f"{domain}.enable")
    await page.call("Page.navigate", url=f"{url}/")
    signers = await page.wait_for(
        "[...document.querySelectorAll('#signers input')].map(o => o.value)", "signer list"
    )
    print(f"page loaded; signers offered: {signers}")
    for element in ("#text", "#language", "#signers", "#go", "#status"):  # players: per render
        if not await page.evaluate(f"!!document.querySelector('{element}')"):
            failures.append(f"element {element} missing")
    await page.evaluate("document.getElementById('go').click()")
    await page.wait_for(
        "document.querySelector('.player video').src.startsWith('blob:')", "the video to arrive"
    )
    # Streamed through MediaSource, the duration is known once the stream has ended.
    status = await page.wait_for(
        "(() => { const s = document.getElementById('status').textContent;"
        " return s === 'Done.' || s.startsWith('Not every') ? s : false; })()",
        "the render to finish",
    )
    if status != "Done.":
        failures.append(f"status line shows {status!r}")
    meta = await page.wait_for(
        "(() => { const v = document.querySelector('.player video');"
        " return v.readyState >= 1 && isFinite(v.duration)"
        " && {w: v.videoWidth, h: v.videoHeight, s: v.duration}; })()",
        "Chromium to read the video's metadata",
    )
    print(f"video element: {meta['w']}x{meta['h']}, {meta['s']:.2f} s")
    if not (meta["w"] > 0 and meta["s"] > 0):
        failures.append(f"the video does not play: {meta}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file() and not shutil.which(args.chromium):
        sys.exit(f"no Chromium at {args.chromium!r} (apt-get install chromium)")

    serve_config = copy.deepcopy(load_serve_config(REPO / "configs/serve/cpu.yaml"))
    port = _free_port()
    serve_config["http_options"] = {"host": "127.0.0.1", "port": port}
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    with tempfile.TemporaryDirectory(prefix="slp-web-") as tmp:
        try:
            run_from_config(serve_config, tiny_pipeline(Path(tmp), serve_config))
            failures = asyncio.run(check(f"http://127.0.0.1:{port}", args.chromium))
        finally:
            serve.shutdown()
            ray.shutdown()
    for failure in failures:
        print(f"FAIL: {failure}")
    print("web page OK" if not failures else f"{len(failures)} problem(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
