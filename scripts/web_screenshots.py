"""Screenshots of the page against the real graph: configs/serve/cpu.yaml with the shipped
models (text2pose with the dictionary G2P, full-small, skeleton) on this machine's CPU.

Signs one sentence with the skeleton renderer, then renders full-small and skeleton side by
side. It writes ``web_real_skeleton.png``, ``web_real_rendering.png`` (taken mid-render) and
``web_real_side_by_side.png``, and prints what the page showed: the glosses, the frame
counts, the seconds each render took and any console errors. Exits 1 when a render fails or
the console has errors.

Run: ``python scripts/web_screenshots.py docs/images``. It needs Chromium
(``apt-get install chromium``) and the ``websockets`` package. The CDP driver is
tests/cdp.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cdp import Browser, chromium_page  # noqa: E402
from tiny_serve import free_port  # noqa: E402

from slp_pipeline.config import load_serve_config, pipeline_config  # noqa: E402
from slp_pipeline.serve_app import run_from_config  # noqa: E402

TEXT = "am tag regnet es im norden"
DONE = "$('status').textContent === 'Done.' || $('status').textContent.startsWith('Not every')"
SHOWN = """(() => ({status: $('status').textContent,
  glosses: [...document.querySelectorAll('#glosses li')].map((l) => l.textContent),
  progress: [...document.querySelectorAll('.progress-text')].map((p) => p.textContent),
  errors: [...document.querySelectorAll('.error')].map((e) => e.textContent).filter(Boolean)}))()"""


def _sign(page: Browser, timeout: float) -> dict:
    page.js(f"$('text').value = {json.dumps(TEXT)}; $('go').click();")
    start = time.monotonic()
    page.wait(DONE, timeout)
    return {**page.js(SHOWN), "seconds": round(time.monotonic() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per render")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    serve_config = load_serve_config(REPO / "configs/serve/cpu.yaml")
    port = free_port()
    serve_config["http_options"] = {"host": "127.0.0.1", "port": port}
    config = pipeline_config(serve_config)
    config.signers_dir = tempfile.mkdtemp(prefix="slp-web-signers-")  # the built-ins only
    config.upload_poses = "pe"  # no MediaPipe needed: nothing is uploaded here
    config.default_renderer = "skeleton"
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")
    failed = False
    try:
        run_from_config(serve_config, config)
        with (
            tempfile.TemporaryDirectory(prefix="slp-chromium-") as profile,
            chromium_page(f"http://127.0.0.1:{port}/", Path(profile)) as page,
        ):
            page.wait("document.querySelectorAll('#signers img').length >= 2", 120)
            shown = _sign(page, args.timeout)
            print("skeleton:", json.dumps(shown))
            page.js("document.querySelectorAll('#glosses li button')[1].click()")  # plays NORD
            time.sleep(0.6)
            page.js("document.querySelector('.player video').pause()")
            page.screenshot(args.out / "web_real_skeleton.png", 1280, 900, mobile=False)
            page.call("Emulation.clearDeviceMetricsOverride")
            page.js("$('renderer').value = 'full'; $('compare').click(); "
                    "$('renderer2').value = 'skeleton';")  # fmt: skip
            page.js(f"$('text').value = {json.dumps(TEXT)}; $('go').click();")
            start = time.monotonic()
            progress = "document.querySelector('.progress-text').textContent"
            page.wait(f"/^[1-9]\\d* \\/ \\d+ frames$/.test({progress})", args.timeout)
            page.screenshot(args.out / "web_real_rendering.png", 1280, 900, mobile=False)
            page.call("Emulation.clearDeviceMetricsOverride")
            page.wait(DONE, args.timeout)
            shown = {**page.js(SHOWN), "seconds": round(time.monotonic() - start, 1)}
            print("full + skeleton:", json.dumps(shown))
            page.js("for (const v of document.querySelectorAll('.player video')) "
                    "{ v.pause(); v.currentTime = 1.2; }")  # fmt: skip
            time.sleep(0.8)
            page.screenshot(args.out / "web_real_side_by_side.png", 1280, 900, mobile=False)
            print("console errors:", page.errors)
            failed = bool(page.errors) or page.js("$('status').textContent") != "Done."
    finally:
        serve.shutdown()
        ray.shutdown()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
