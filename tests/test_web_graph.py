"""The page at ``/`` against the real serving graph, in headless Chromium.

tests/test_web_browser.py checks the browser side against a stand-in API; this module checks
the page and the service together. It starts the Ray Serve graph of configs/serve/cpu.yaml
(Ray on 127.0.0.1 without the dashboard, ``RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=60``) with
tiny random models (tests/standins.py: its text2pose signs each word as one SynthSigner sign
and times the glosses) and an API key in ``SLP_API_KEY``, opens ``/`` and drives every item
of the page over the DevTools protocol (tests/cdp.py), one test per item, in page order:

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
- keyboard only: Tab from the top reaches the form's controls in reading order, Enter on
  *Sign* renders;
- a busy service: with the renderers saturated from outside (the Renderer gets a small queue,
  then six clients keep it full), the page shows the ``Retry-After`` countdown, retries, and
  finishes once the load is gone;
- no console error and no script exception during all of it (the last test).

The tests share one page and run in file order; each item leaves the page ready for the next.
Run: ``pytest -m slow tests/test_web_graph.py``. Slow (Ray, Serve and a browser start);
skipped without Chromium (Debian: ``apt-get install chromium``). The browser is the
``chromium`` (or ``chromium-browser``) found on ``PATH`` (tests/cdp.py's ``CHROMIUM``): to use
another build, put a folder with a ``chromium`` link to it first on ``PATH``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cdp import CHROMIUM, Browser, chromium_page, set_field, start_sign
from PIL import Image
from standins import SynthTextToPose, tiny_pipeline
from tiny_serve import REPO, free_port, running_graph

from slp_pipeline.auth import ENV_VAR
from slp_pipeline.config import load_serve_config
from slp_pipeline.signers import BUILTIN_SIGNERS, synth_rest_signer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)"),
]

TEXT = "am tag regnet es im norden"
LONG_TEXT = " ".join(f"w{i}" for i in range(120))  # 1440 frames: long enough to cancel
# The Renderer's limits during these tests, so that a few clients saturate it: two chunk
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


@dataclass(frozen=True)
class Site:
    """The running graph and the page open on it."""

    url: str  # the graph's base URL
    key: str  # the API key the graph was started with
    folder: Path  # scratch space: the uploaded photo, the curl command's output
    page: Browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The graph with tiny models and a small Renderer queue, and Chromium with ``/`` open;
    both are shut down at the end, whatever the tests did."""
    serve_config = load_serve_config(REPO / "configs/serve/cpu.yaml")  # a fresh copy
    serve_config["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    for deployment in serve_config["applications"][0]["deployments"]:
        if deployment["name"] == "Renderer":
            deployment.pop("autoscaling_config", None)
            deployment.update(RENDERER_LIMITS)
    key = secrets.token_urlsafe(24)
    folder = tmp_path_factory.mktemp("web-graph")
    (folder / "profile").mkdir()
    with pytest.MonkeyPatch.context() as env:
        # read by the graph's builder (writes need it) and by the curl command the page shows
        env.setenv(ENV_VAR, key)
        config = tiny_pipeline(folder / "models", serve_config)
        with (
            running_graph(serve_config, config) as url,
            chromium_page(f"{url}/", folder / "profile") as page,
        ):
            page.wait("location.href.startsWith('http') && document.readyState !== 'loading'")
            # Keep each object URL's Blob: the page's CSP (rightly) forbids fetch() of blob:
            # URLs, and the downloads are read back through these.
            page.js("""window.blobs = {}; const make = URL.createObjectURL;
              URL.createObjectURL = (o) => { const url = make(o); blobs[url] = o; return url; };""")
            yield Site(url, key, folder, page)


def _sign(page: Browser, text: str, timeout: float = 120) -> str:
    """Sign ``text`` and wait for the render to end; the status line then."""
    start_sign(page, text)  # disables Sign at once
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


def _press(page: Browser, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        page.call("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                  windowsVirtualKeyCode=code)  # fmt: skip


def test_signer_thumbnails_and_builtins_marked(site: Site) -> None:
    cards = site.page.wait(
        """(() => { const cards = [...document.querySelectorAll('#signers .signer')];
        return cards.length >= 2 && cards.every((c) => c.querySelector('img').naturalWidth > 0)
          && cards.map((c) => ({name: c.querySelector('input').value,
            builtin: [...c.querySelectorAll('.badge')].some((b) => b.textContent === 'built-in'),
            deletable: !!c.querySelector('.delete')})); })()""",
        60,
    )
    assert all(s["builtin"] and not s["deletable"] for s in cards), f"built-ins: {cards}"


def test_glosses_highlight_streaming_progress_caption(site: Site) -> None:
    page = site.page
    page.js("""window.progressSeen = [];
      new MutationObserver(() => { const t = document.querySelector('.progress-text');
        if (t) progressSeen.push(t.textContent); })
      .observe($('players'), {subtree: true, childList: true, characterData: true});""")
    status = _sign(page, TEXT)
    assert status == "Done.", f"status after Sign: {status!r}"
    expected = SynthTextToPose("de").timeline(TEXT)
    glosses = page.js("[...document.querySelectorAll('#glosses li')].map((l) => l.textContent)")
    assert glosses == [s.gloss for s in expected.spans], f"glosses shown: {glosses}"
    assert page.js("$('glosses').lang") == "de", "the gloss list has no lang='de'"
    total = expected.frames
    [player] = page.js(PLAYERS)
    assert player["progress"] == f"{total} / {total} frames rendered (streamed)", (
        f"progress at the end: {player['progress']!r} (expected {total} frames, streamed)"
    )
    seen = page.js("progressSeen")
    partial = [p for p in seen if p.endswith(f"/ {total} frames") and not p.startswith("0 ")]
    assert partial, f"no partial frame count while streaming: {seen[:8]}"
    meta = page.wait(
        """(() => { const v = document.querySelector('.player video');
        return v.readyState >= 1 && isFinite(v.duration)
          && {w: v.videoWidth, h: v.videoHeight, s: v.duration}; })()""",
        30,
    )
    assert meta["w"] > 0 and abs(meta["s"] - total / expected.fps) < 0.1, f"video: {meta}"
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
    assert active == 3, f"highlighted gloss #{active} at {at:.2f} s, expected #3"
    cue = page.wait("""(() => { const t = document.querySelector('.player video').textTracks[0];
      return t && t.cues && t.cues.length
        && [t.cues[0].text, t.cues[0].startTime, t.cues[0].endTime, t.language, t.kind]; })()""")
    assert cue == [TEXT, 0, total / expected.fps, "de", "captions"], f"caption track: {cue}"


def test_mp4_and_pose_downloads_and_curl(site: Site) -> None:
    page = site.page
    mp4 = page.js("""(async () => { const a = document.querySelector('.download-mp4');
      const b = blobs[a.href];
      const head = new Uint8Array(await b.slice(4, 8).arrayBuffer());
      return {visible: a.checkVisibility(), type: b.type, size: b.size,
        box: String.fromCharCode(...head), name: a.download}; })()""")
    assert mp4["visible"] and mp4["type"] == "video/mp4", f"mp4 download: {mp4}"
    assert mp4["box"] == "ftyp" and mp4["name"].endswith(".mp4"), f"mp4 download: {mp4}"
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
    assert pose["type"] == "application/octet-stream" and pose["size"] > 100, f".pose: {pose}"
    assert pose["name"].endswith(".pose") and 0 < pose["version"] < 1, f".pose header: {pose}"
    # the curl text, run as shown (the key only as $SLP_API_KEY), writes the same video
    page.js("$('curl-panel').open = true; $('copy-curl').click()")
    copied = page.wait("$('copy-status').textContent")
    assert copied in ("Copied.", "Selected: press Ctrl+C to copy."), f"copy: {copied!r}"
    command = page.js("$('curl').textContent")
    assert f'"text":"{TEXT}"' in command, f"curl text lacks the sentence: {command}"
    run = subprocess.run(["bash", "-c", command], cwd=site.folder, capture_output=True, timeout=120)
    video = site.folder / "sign.mp4"
    head = video.read_bytes()[4:8] if video.is_file() else b""
    assert run.returncode == 0 and head == b"ftyp", (
        f"curl as shown: rc {run.returncode}, {run.stderr[-300:]!r}"
    )


def test_renderer_choice_and_side_by_side(site: Site) -> None:
    page = site.page
    set_field(page, "renderer", "tpsmm")
    assert '"renderer":"tpsmm"' in page.js("$('curl').textContent"), "curl ignores renderer"
    status = _sign(page, "am tag")
    titles = [p["title"] for p in page.js(PLAYERS)]
    assert status == "Done." and titles == ["Renderer: tpsmm"], f"tpsmm: {status} {titles}"
    set_field(page, "renderer", "full")
    page.js("$('compare').click()")
    set_field(page, "renderer2", "skeleton")
    status = _sign(page, TEXT)
    players = page.js(PLAYERS)
    decoded = page.wait("""[...document.querySelectorAll('.player video')].every((v) =>
      v.readyState >= 1 && v.videoWidth > 0)""")
    two = page.js("$('players').classList.contains('two')")
    page.js("$('compare').click()")  # back to one player, whatever the checks say
    titles = [p["title"] for p in players]
    assert titles == ["Renderer: full", "Renderer: skeleton"], f"side by side: {titles}"
    assert status == "Done." and all(p["src"].startswith("blob:") for p in players), (
        f"side by side: {status} {players}"
    )
    assert two, "two players not side by side"
    assert decoded, "a side-by-side video does not decode"


def test_cancel_stops_a_long_render(site: Site) -> None:
    page = site.page
    start_sign(page, LONG_TEXT)
    page.wait("/^[1-9]\\d* \\/ \\d+ frames$/.test("
              "document.querySelector('.progress-text')?.textContent)", 120)  # fmt: skip
    page.js("$('cancel').click()")
    status = _finished(page, 30)
    assert status == "Cancelled.", f"status after Cancel: {status!r}"
    assert page.js("$('cancel').disabled"), "Cancel still enabled after cancelling"


def test_errors_next_to_their_field(site: Site) -> None:
    page = site.page
    page.js("$('text').value = '   '; $('go').click();")
    empty = page.wait("$('text-error').textContent", 10)
    assert page.js("$('text').getAttribute('aria-invalid')") == "true", "empty text not marked"
    assert page.js("document.activeElement.id") == "text", f"empty text: {empty!r}, no focus"
    limit = page.js("$('text').maxLength")
    _sign(page, "a" * (limit + 1))  # past the box's maxlength, as a paste through a script
    long = page.js("$('text-error').textContent")
    assert f"the limit is {limit}" in long, f"too-long text: {long!r} next to the text box"
    status = page.js("$('status').textContent")
    assert status == "Check the marked field.", f"status for 422: {status!r}"


def test_upload_with_crop_preview_and_delete(site: Site) -> None:
    """A built-in signer's picture between red margins: the crop keeps the picture only."""
    page = site.page
    picture = synth_rest_signer(BUILTIN_SIGNERS["default"])[0]
    side = picture.shape[0]
    photo = np.zeros((side, side + side // 2, 3), np.uint8)
    photo[..., 0] = 220
    photo[:, side // 4 : side // 4 + side] = picture
    Image.fromarray(photo).save(site.folder / "My Photo.png")
    page.js("$('upload-panel').open = true; $('key').value = ''")
    try:
        root = page.call("DOM.getDocument")["root"]["nodeId"]
        node = page.call("DOM.querySelector", nodeId=root, selector="#photo")["nodeId"]
        page.call("DOM.setFileInputFiles", files=[str(site.folder / "My Photo.png")], nodeId=node)
        page.wait("!$('crop-figure').hidden", 10)
        assert page.js("$('signer-name').value") == "my-photo", "no name from the file name"
        edges = page.js("""[[0, 0], [255, 0], [0, 255], [255, 255]].map(([x, y]) =>
          Array.from($('crop').getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)))""")
        wanted = picture[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert np.abs(np.asarray(edges) - wanted).max() < 40, (
            f"crop preview corners {edges} vs {wanted}"
        )
        page.js("$('upload').click()")
        missing = page.wait("$('key-error').textContent", 30)
        assert "API key" in missing and page.js("$('key-panel').open"), f"no key: {missing!r}"
        page.js(f"$('key').value = {json.dumps(site.key)}; $('upload').click()")
        added = page.wait("$('upload-status').textContent.startsWith('Signer')"
                          " && $('upload-status').textContent", 120)  # fmt: skip
        assert added == "Signer my-photo added.", f"upload: {added!r}"
        # the list reloads after the status line says so
        selected = "document.querySelector('#signers input:checked')?.value === 'my-photo'"
        assert _soon(page, selected), "the new signer is not selected"
        thumb = "document.querySelector('#signers img[src*=\"my-photo\"]')?.naturalWidth > 0"
        assert _soon(page, thumb), "no thumbnail of the new signer"
        delete = "document.querySelector('.delete[aria-label=\"Delete signer my-photo\"]').click()"
        page.js(f"window.confirm = () => true; {delete}")
        deleted = page.wait("$('upload-status').textContent.endsWith('deleted.')"
                            " && $('upload-status').textContent", 30)  # fmt: skip
        assert deleted == "Signer my-photo deleted.", f"delete: {deleted!r}"
        listed = "[...document.querySelectorAll('#signers input')].map((i) => i.value)"
        gone = f"!{listed}.includes('my-photo')"
        assert _soon(page, gone), "the deleted signer is still listed"
    finally:
        page.js("$('key').value = ''")  # the later items sign without a key


def test_lang_attributes_follow_the_language(site: Site) -> None:
    page = site.page
    assert page.js("document.documentElement.lang") == "en", "<html> has no lang"
    set_field(page, "language", "zh")
    try:
        assert page.js("$('text').lang") == "zh", "the text box is not lang='zh' for Chinese"
        status = _sign(page, "今天 下雨")
        assert status == "Done.", f"Chinese: {status!r}"
        langs = page.js("[$('glosses').lang, document.querySelector('.player track').srclang]")
        assert langs == ["zh", "zh"], f"lang of glosses / caption track for Chinese: {langs}"
    finally:
        set_field(page, "language", "de")
    assert page.js("$('text').lang") == "de", "the text box is not lang='de' again"


def test_nothing_scrolls_sideways_at_phone_width(site: Site) -> None:
    page = site.page
    page.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
              deviceScaleFactor=1, mobile=True)  # fmt: skip
    try:
        time.sleep(0.5)
        widths = page.js("[document.documentElement.scrollWidth, window.innerWidth]")
    finally:
        page.call("Emulation.clearDeviceMetricsOverride")
    assert widths[0] <= widths[1], f"at 390 px the page scrolls sideways: {widths}"


def test_keyboard_only(site: Site) -> None:
    """Tab from the top of the page reaches every control of the form in reading order, and
    Enter on *Sign* renders: the page works without a mouse."""
    page = site.page
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
    assert -1 not in order and order == sorted(order), f"Tab order {reached}, wanted {wanted}"
    _press(page, "Enter", 13)
    status = _finished(page, 120)
    assert status == "Done.", f"Enter on Sign: {status!r}"


def test_busy_service_countdown_and_retry(site: Site) -> None:
    """Clients outside the page keep the renderers saturated: the page's render is shed with
    a 503 + Retry-After, shows the countdown, retries and is done once the clients stop."""
    page = site.page
    stop, shed = threading.Event(), threading.Event()
    body = json.dumps({"text": FLOOD_TEXT, "language": "de"}).encode()

    def client() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"{site.url}/v1/sign", body, {"Content-Type": "application/json"}
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
            start_sign(page, TEXT)
            shown = _soon(page, f"({countdown}) || !$('go').disabled", 90) and page.js(countdown)
            if shown:
                break
            _finished(page, 120)
    finally:
        stop.set()
    status = _finished(page, 300)
    errors = [p["error"] for p in page.js(PLAYERS) if p["error"]]
    assert shown, "no Retry-After countdown while the renderers were saturated"
    assert status == "Done.", f"after the busy spell the page says {status!r} {errors}"


def test_no_console_or_script_errors(site: Site) -> None:
    """Last: whatever the items above provoked, outside the deliberate 4xx/503 answers."""
    assert site.page.errors == [], f"console/script errors: {site.page.errors}"
