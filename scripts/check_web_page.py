"""Check the page at ``/`` against the real serving graph -- not part of CI.

Starts the Ray Serve graph of configs/serve/cpu.yaml with tiny random models
(tests/standins.py: its text2pose signs each word as one SynthSigner sign and times
the glosses), with an API key in ``SLP_API_KEY``, opens ``/`` in headless Chromium and drives
every item of the page (issue 19) over the DevTools protocol (tests/cdp.py):

- signers: thumbnails load, the built-ins are marked;
- text in, video out: the glosses of the sentence are listed (``lang`` of the language), the
  sign being performed is highlighted when the video is at it, the sentence is a WebVTT
  caption cue over the whole video, the video decodes;
- streaming: frames rendered / total counts up while the stream arrives and reaches the
  total the glosses promised; *Cancel* stops a long render;
- renderers: a chosen renderer is the one used; side by side renders two videos at once;
- take it away: the mp4 link holds ``video/mp4``, the ``.pose`` button fetches
  ``application/octet-stream`` in pose-format's layout; the ``curl`` text, run as shown,
  writes the same mp4;
- errors next to their field: an empty text, a too-long text (the service's 422), a missing
  API key (401, at the key field);
- upload a photo: a preview of the square the service keeps; added; deleted again;
- ``lang`` attributes follow the language (the text box, the glosses, the caption track);
- at a phone's width (390 px) nothing scrolls sideways;
- no console error and no script exception during all of it.

- keyboard only: Tab from the top reaches the form's controls in reading order, Enter on
  *Sign* renders;
- a busy service: with the renderers saturated from outside (the script gives the Renderer
  a small queue, then six clients keep it full), the page shows the ``Retry-After``
  countdown, retries, and finishes once the load is gone.

Run: ``python scripts/check_web_page.py [--chromium PATH]``; one ``FAIL:`` line per broken
check, exit 1 on any. Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cdp import Browser, chromium_page  # noqa: E402
from standins import SynthTextToPose, tiny_pipeline  # noqa: E402
from tiny_serve import free_port, running_graph  # noqa: E402

from slp_pipeline.auth import ENV_VAR  # noqa: E402
from slp_pipeline.config import load_serve_config  # noqa: E402
from slp_pipeline.signers import BUILTIN_SIGNERS, synth_rest_signer  # noqa: E402

TEXT = "am tag regnet es im norden"
LONG_TEXT = " ".join(f"w{i}" for i in range(120))  # 1440 frames: long enough to cancel
# The Renderer's limits while the script runs, so that a few clients saturate it: two chunk
# calls at once (side by side still fits), one queued, one replica.
RENDERER_LIMITS = {"max_ongoing_requests": 2, "max_queued_requests": 1, "num_replicas": 1}
FLOOD_CLIENTS = 6
# Short enough that the renders under way when the clients stop end within the page's retries
# (sign-api.js: MAX_TRIES answers, Retry-After apart).
FLOOD_TEXT = " ".join(f"w{i}" for i in range(6))
FINISHED = "['Done.', 'Cancelled.'].includes($('status').textContent) || $('status').textContent.startsWith('Not every') || $('status').textContent.startsWith('Check')"  # noqa: E501
PLAYERS = """[...document.querySelectorAll('.player')].map((p) => ({
  title: p.querySelector('.player-title').textContent,
  progress: p.querySelector('.progress-text').textContent,
  src: p.querySelector('video').src, error: p.querySelector('.player-error').textContent}))"""


class Checks:
    """Collects one line per failed check, so one broken item does not hide the others."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, ok: Any, what: str) -> None:
        if not ok:
            self.failures.append(what)

    def step(self, name: str, run: Callable[..., None], *args: Any) -> None:
        """Run one item, ``run(*args)``; a timeout or a script error in it fails that item only."""
        try:
            run(*args)
            print(f"checked: {name}")
        except (AssertionError, RuntimeError, TimeoutError, OSError) as e:
            self.failures.append(f"{name}: {str(e)[:300]}")


def _sign(page: Browser, text: str, timeout: float = 120) -> str:
    page.js(f"$('text').value = {json.dumps(text)}; $('go').click();")  # disables Sign at once
    return _finished(page, timeout)


def _finished(page: Browser, timeout: float) -> str:
    """The status line once the page's render has ended (Sign enabled again)."""
    return page.wait(f"!$('go').disabled && ({FINISHED}) && $('status').textContent", timeout)


def _soon(page: Browser, expression: str, timeout: float = 10) -> bool:
    """Whether a JS expression becomes truthy within ``timeout`` seconds."""
    try:
        page.wait(expression, timeout)
    except AssertionError:
        return False
    return True


def _set(page: Browser, element: str, value: str) -> None:
    page.js(
        f"$({json.dumps(element)}).value = {json.dumps(value)};"
        f"$({json.dumps(element)}).dispatchEvent(new Event('change'));"
    )


def signers(page: Browser, c: Checks) -> None:
    # Keep each object URL's Blob: the page's CSP (rightly) forbids fetch() of blob: URLs, and
    # the downloads are read back through these.
    page.js("""window.blobs = {}; const make = URL.createObjectURL;
      URL.createObjectURL = (o) => { const url = make(o); blobs[url] = o; return url; };""")
    cards = page.wait(
        """(() => { const cards = [...document.querySelectorAll('#signers .signer')];
        return cards.length >= 2 && cards.every((c) => c.querySelector('img').naturalWidth > 0)
          && cards.map((c) => ({name: c.querySelector('input').value,
            builtin: [...c.querySelectorAll('.badge')].some((b) => b.textContent === 'built-in'),
            deletable: !!c.querySelector('.delete')})); })()""",
        60,
    )
    c.expect(all(s["builtin"] and not s["deletable"] for s in cards), f"built-ins: {cards}")


def sign_glosses_caption(page: Browser, c: Checks) -> None:
    page.js("""window.progressSeen = [];
      new MutationObserver(() => { const t = document.querySelector('.progress-text');
        if (t) progressSeen.push(t.textContent); })
      .observe($('players'), {subtree: true, childList: true, characterData: true});""")
    status = _sign(page, TEXT)
    c.expect(status == "Done.", f"status after Sign: {status!r}")
    expected = SynthTextToPose("de").timeline(TEXT)
    glosses = page.js("[...document.querySelectorAll('#glosses li')].map((l) => l.textContent)")
    c.expect(glosses == [s.gloss for s in expected.spans], f"glosses shown: {glosses}")
    c.expect(page.js("$('glosses').lang") == "de", "the gloss list has no lang='de'")
    total = expected.frames
    [player] = page.js(PLAYERS)
    c.expect(
        player["progress"] == f"{total} / {total} frames rendered (streamed)",
        f"progress at the end: {player['progress']!r} (expected {total} frames, streamed)",
    )
    seen = page.js("progressSeen")
    partial = [p for p in seen if p.endswith(f"/ {total} frames") and not p.startswith("0 ")]
    c.expect(partial, f"no partial frame count while streaming: {seen[:8]}")
    meta = page.wait(
        """(() => { const v = document.querySelector('.player video');
        return v.readyState >= 1 && isFinite(v.duration)
          && {w: v.videoWidth, h: v.videoHeight, s: v.duration}; })()""",
        30,
    )
    c.expect(meta["w"] > 0 and abs(meta["s"] - total / expected.fps) < 0.1, f"video: {meta}")
    # the video at the middle of the third sign: that gloss is highlighted
    third = expected.spans[2]
    at = (third.start + third.end) / 2 / expected.fps
    page.js(f"(() => {{ const v = document.querySelector('.player video'); v.pause();"
            f" v.currentTime = {at}; }})()")  # fmt: skip
    active = page.wait(
        "document.querySelector('#glosses li.active')"
        " && [...document.querySelectorAll('#glosses li')].findIndex((l) =>"
        " l.classList.contains('active') && l.getAttribute('aria-current')) + 1",
        10,
    )
    c.expect(active == 3, f"highlighted gloss #{active} at {at:.2f} s, expected #3")
    cue = page.wait("""(() => { const t = document.querySelector('.player video').textTracks[0];
      return t && t.cues && t.cues.length
        && [t.cues[0].text, t.cues[0].startTime, t.cues[0].endTime, t.language, t.kind]; })()""")
    c.expect(cue == [TEXT, 0, total / expected.fps, "de", "captions"], f"caption track: {cue}")


def downloads_and_curl(page: Browser, c: Checks, folder: Path) -> None:
    mp4 = page.js("""(async () => { const a = document.querySelector('.download-mp4');
      const b = blobs[a.href];
      const head = new Uint8Array(await b.slice(4, 8).arrayBuffer());
      return {visible: a.checkVisibility(), type: b.type, size: b.size,
        box: String.fromCharCode(...head), name: a.download}; })()""")
    c.expect(mp4["visible"] and mp4["type"] == "video/mp4", f"mp4 download: {mp4}")
    c.expect(mp4["box"] == "ftyp" and mp4["name"].endswith(".mp4"), f"mp4 download: {mp4}")
    # the .pose button makes a link and clicks it: catch that click instead of downloading
    page.js("""window.clicked = null; const click = HTMLAnchorElement.prototype.click;
      HTMLAnchorElement.prototype.click = function () {
        if (this.download.endsWith('.pose')) { clicked = {href: this.href, name: this.download}; }
        else click.call(this); };
      document.querySelector('.download-pose').click();""")
    pose = page.wait("""clicked && (async () => {
      const b = blobs[clicked.href];
      const head = new Float32Array(await b.slice(0, 4).arrayBuffer());
      return {type: b.type, size: b.size, version: head[0], name: clicked.name}; })()""")
    c.expect(pose["type"] == "application/octet-stream" and pose["size"] > 100, f".pose: {pose}")
    c.expect(pose["name"].endswith(".pose") and 0 < pose["version"] < 1, f".pose header: {pose}")
    # the curl text, run as shown (the key only as $SLP_API_KEY), writes the same video
    page.js("$('curl-panel').open = true; $('copy-curl').click()")
    copied = page.wait("$('copy-status').textContent")
    c.expect(copied in ("Copied.", "Selected: press Ctrl+C to copy."), f"copy: {copied!r}")
    command = page.js("$('curl').textContent")
    c.expect(f'"text":"{TEXT}"' in command, f"curl text lacks the sentence: {command}")
    run = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, timeout=120)
    video = folder / "sign.mp4"
    head = video.read_bytes()[4:8] if video.is_file() else b""
    c.expect(run.returncode == 0 and head == b"ftyp", f"curl as shown: rc {run.returncode}")


def renderer_choice_and_side_by_side(page: Browser, c: Checks) -> None:
    _set(page, "renderer", "tpsmm")
    c.expect('"renderer":"tpsmm"' in page.js("$('curl').textContent"), "curl ignores renderer")
    status = _sign(page, "am tag")
    titles = [p["title"] for p in page.js(PLAYERS)]
    c.expect(status == "Done." and titles == ["Renderer: tpsmm"], f"tpsmm: {status} {titles}")
    _set(page, "renderer", "full")
    page.js("$('compare').click()")
    _set(page, "renderer2", "skeleton")
    status = _sign(page, TEXT)
    players = page.js(PLAYERS)
    titles = [p["title"] for p in players]
    c.expect(titles == ["Renderer: full", "Renderer: skeleton"], f"side by side: {titles}")
    c.expect(status == "Done." and all(p["src"].startswith("blob:") for p in players),
             f"side by side: {status} {players}")  # fmt: skip
    c.expect(page.js("$('players').classList.contains('two')"), "two players not side by side")
    decoded = page.wait("""[...document.querySelectorAll('.player video')].every((v) =>
      v.readyState >= 1 && v.videoWidth > 0)""")
    c.expect(decoded, "a side-by-side video does not decode")
    page.js("$('compare').click()")


def cancel(page: Browser, c: Checks) -> None:
    page.js(f"$('text').value = {json.dumps(LONG_TEXT)}; $('go').click();")
    page.wait("/^[1-9]\\d* \\/ \\d+ frames$/.test("
              "document.querySelector('.progress-text')?.textContent)", 120)  # fmt: skip
    page.js("$('cancel').click()")
    status = _finished(page, 30)
    c.expect(status == "Cancelled.", f"status after Cancel: {status!r}")
    c.expect(page.js("$('cancel').disabled"), "Cancel still enabled after cancelling")


def field_errors(page: Browser, c: Checks) -> None:
    page.js("$('text').value = '   '; $('go').click();")
    empty = page.wait("$('text-error').textContent", 10)
    c.expect(page.js("$('text').getAttribute('aria-invalid')") == "true", "empty text not marked")
    c.expect(page.js("document.activeElement.id") == "text", f"empty text: {empty!r}, no focus")
    limit = page.js("$('text').maxLength")
    _sign(page, "a" * (limit + 1))  # past the box's maxlength, as a paste through a script
    long = page.js("$('text-error').textContent")
    c.expect(f"the limit is {limit}" in long, f"too-long text: {long!r} next to the text box")
    c.expect(page.js("$('status').textContent") == "Check the marked field.", "status for 422")


def upload_and_delete(page: Browser, c: Checks, folder: Path, key: str) -> None:
    """A built-in signer's picture between red margins: the crop keeps the picture only."""
    picture = synth_rest_signer(BUILTIN_SIGNERS["default"])[0]
    side = picture.shape[0]
    photo = np.zeros((side, side + side // 2, 3), np.uint8)
    photo[..., 0] = 220
    photo[:, side // 4 : side // 4 + side] = picture
    Image.fromarray(photo).save(folder / "My Photo.png")
    page.js("$('upload-panel').open = true; $('key').value = ''")
    root = page.call("DOM.getDocument")["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="#photo")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[str(folder / "My Photo.png")], nodeId=node)
    page.wait("!$('crop-figure').hidden", 10)
    c.expect(page.js("$('signer-name').value") == "my-photo", "no name from the file name")
    edges = page.js("""[[0, 0], [255, 0], [0, 255], [255, 255]].map(([x, y]) =>
      Array.from($('crop').getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)))""")
    shown = np.asarray(edges)
    wanted = picture[[0, 0, -1, -1], [0, -1, 0, -1]]
    c.expect(np.abs(shown - wanted).max() < 40, f"crop preview corners {edges} vs {wanted}")
    page.js("$('upload').click()")
    missing = page.wait("$('key-error').textContent", 30)
    c.expect("API key" in missing and page.js("$('key-panel').open"), f"no key: {missing!r}")
    page.js(f"$('key').value = {json.dumps(key)}; $('upload').click()")
    added = page.wait("$('upload-status').textContent.startsWith('Signer')"
                      " && $('upload-status').textContent", 120)  # fmt: skip
    c.expect(added == "Signer my-photo added.", f"upload: {added!r}")
    # the list reloads after the status line says so
    selected = "document.querySelector('#signers input:checked')?.value === 'my-photo'"
    c.expect(_soon(page, selected), "the new signer is not selected")
    thumb = "document.querySelector('#signers img[src*=\"my-photo\"]')?.naturalWidth > 0"
    c.expect(_soon(page, thumb), "no thumbnail of the new signer")
    delete = "document.querySelector('.delete[aria-label=\"Delete signer my-photo\"]').click()"
    page.js(f"window.confirm = () => true; {delete}")
    deleted = page.wait("$('upload-status').textContent.endsWith('deleted.')"
                        " && $('upload-status').textContent", 30)  # fmt: skip
    c.expect(deleted == "Signer my-photo deleted.", f"delete: {deleted!r}")
    gone = "![...document.querySelectorAll('#signers input')].some((i) => i.value === 'my-photo')"
    c.expect(_soon(page, gone), "the deleted signer is still listed")
    page.js("$('key').value = ''")


def lang_attributes(page: Browser, c: Checks) -> None:
    c.expect(page.js("document.documentElement.lang") == "en", "<html> has no lang")
    _set(page, "language", "zh")
    c.expect(page.js("$('text').lang") == "zh", "the text box is not lang='zh' for Chinese")
    status = _sign(page, "今天 下雨")
    c.expect(status == "Done.", f"Chinese: {status!r}")
    langs = page.js("[$('glosses').lang, document.querySelector('.player track').srclang]")
    c.expect(langs == ["zh", "zh"], f"lang of glosses / caption track for Chinese: {langs}")
    _set(page, "language", "de")
    c.expect(page.js("$('text').lang") == "de", "the text box is not lang='de' again")


def phone_width(page: Browser, c: Checks) -> None:
    page.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
              deviceScaleFactor=1, mobile=True)  # fmt: skip
    time.sleep(0.5)
    widths = page.js("[document.documentElement.scrollWidth, window.innerWidth]")
    c.expect(widths[0] <= widths[1], f"at 390 px the page scrolls sideways: {widths}")
    page.call("Emulation.clearDeviceMetricsOverride")


def _press(page: Browser, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        page.call("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                  windowsVirtualKeyCode=code)  # fmt: skip


def keyboard_only(page: Browser, c: Checks) -> None:
    """Tab from the top of the page reaches every control of the form in reading order, and
    Enter on *Sign* renders: the page works without a mouse."""
    # Focus the first field (the start of reading order), then only the keyboard.
    page.js("window.scrollTo(0, 0); $('text').value = 'hallo'; $('text').focus();")
    reached = ["text"]
    for _ in range(60):
        _press(page, "Tab", 9)
        reached.append(page.js("document.activeElement.id || document.activeElement.name"
                               " || document.activeElement.tagName"))  # fmt: skip
        if reached[-1] == "go":
            break
    wanted = ["text", "language", "fps", "renderer", "compare", "signer", "go"]
    order = [reached.index(w) if w in reached else -1 for w in wanted]
    c.expect(-1 not in order and order == sorted(order), f"Tab order {reached}, wanted {wanted}")
    _press(page, "Enter", 13)
    status = _finished(page, 120)
    c.expect(status == "Done.", f"Enter on Sign: {status!r}")


def busy_countdown(page: Browser, c: Checks, url: str) -> None:
    """Clients outside the page keep the renderers saturated: the page's render is shed with
    a 503 + Retry-After, shows the countdown, retries and is done once the clients stop."""
    stop, shed = threading.Event(), threading.Event()
    body = json.dumps({"text": FLOOD_TEXT, "language": "de"}).encode()

    def client() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"{url}/v1/sign", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=300) as answer:
                    answer.read()
            except urllib.error.HTTPError:  # shed (503): the queue is full, keep it so
                shed.set()
                time.sleep(0.05)
            except OSError:
                time.sleep(0.2)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(FLOOD_CLIENTS)]
    for thread in clients:
        thread.start()
    countdown = """[$('status'), ...document.querySelectorAll('.progress-text')]
      .some((e) => /busy: retrying in \\d+ s/.test(e.textContent))"""
    shown = False
    try:
        # The page's request may still slip between two of the clients': up to three tries,
        # each made while the clients are being shed.
        for _ in range(3):
            shed.clear()
            if not shed.wait(60):
                break
            page.js(f"$('text').value = {json.dumps(TEXT)}; $('go').click();")
            shown = _soon(page, f"({countdown}) || !$('go').disabled", 90) and page.js(countdown)
            if shown:
                break
            _finished(page, 120)
        c.expect(shown, "no Retry-After countdown while the renderers were saturated")
    finally:
        stop.set()
    status = _finished(page, 300)
    errors = [p["error"] for p in page.js(PLAYERS) if p["error"]]
    c.expect(status == "Done.", f"after the busy spell the page says {status!r} {errors}")


def check(url: str, chromium: str, key: str) -> list[str]:
    """Drive the page through every item; the failures (empty when all is well)."""
    c = Checks()
    with tempfile.TemporaryDirectory(prefix="slp-chromium-") as tmp:
        folder = Path(tmp)
        (folder / "profile").mkdir()
        with chromium_page(f"{url}/", folder / "profile", chromium) as page:
            c.step("signer thumbnails, built-ins marked", signers, page, c)
            c.step("glosses, highlight, streaming progress, caption", sign_glosses_caption, page, c)
            c.step("mp4 and .pose downloads, curl", downloads_and_curl, page, c, folder)
            c.step("renderer choice, side by side", renderer_choice_and_side_by_side, page, c)
            c.step("cancel", cancel, page, c)
            c.step("errors next to their field", field_errors, page, c)
            c.step("upload with crop preview, delete", upload_and_delete, page, c, folder, key)
            c.step("lang attributes", lang_attributes, page, c)
            c.step("phone width", phone_width, page, c)
            c.step("keyboard only", keyboard_only, page, c)
            c.step("503 Retry-After countdown, retry", busy_countdown, page, c, url)
            c.failures += [f"console/script error: {e}" for e in page.errors]
    return c.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file() and not shutil.which(args.chromium):
        sys.exit(f"no Chromium at {args.chromium!r} (apt-get install chromium)")

    serve_config = load_serve_config(REPO / "configs/serve/cpu.yaml")  # a fresh copy
    serve_config["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    for deployment in serve_config["applications"][0]["deployments"]:
        if deployment["name"] == "Renderer":
            deployment.pop("autoscaling_config", None)
            deployment.update(RENDERER_LIMITS)
    key = secrets.token_urlsafe(24)
    os.environ[ENV_VAR] = key  # read by the graph's builder: writes need it
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="slp-web-") as tmp,
        running_graph(serve_config, tiny_pipeline(Path(tmp), serve_config)) as url,
    ):
        failures = check(url, args.chromium, key)
    for failure in failures:
        print(f"FAIL: {failure}")
    seconds = time.monotonic() - start
    print(f"web page OK ({seconds:.0f} s)" if not failures else f"{len(failures)} problem(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
