"""The page in a real headless Chromium, driven over the DevTools protocol (CDP), against a
stand-in of the API: the served files (with their Content-Security-Policy) and answers shaped
as the service's, streaming a real fragmented mp4 from EncodeStage chunk by chunk. What it
checks is the browser side -- MediaSource playback while frames arrive, progress, gloss
highlighting, captions, side by side, cancel, errors next to fields, the 503 countdown, no
console errors. The full graph behind the page is tests/test_web_graph.py's job.

Slow (a browser start); skipped without Chromium (Debian: ``apt-get install chromium``).
``SLP_WEB_SCREENSHOTS=DIR`` also saves desktop and phone screenshots there (docs/images).
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cdp import CHROMIUM, Browser, chromium_page, set_field, start_sign
from PIL import Image
from t2p_double import FakeTextToPose

from slp_pipeline.serve_app import WEB_FILES, WEB_HEADERS, WEB_TYPES
from slp_pipeline.signers import BUILTIN_SIGNERS, Signer, synth_rest_signer
from slp_pipeline.stages import EncodeStage, SkeletonRenderer, retarget_to

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)"),
]

FPS = 25.0
FRAMES = 40
CHUNK = 16
# The dictionary G2P's shape of answer: three signs of one sentence, with transitions between.
TIMELINE = {
    "fps": FPS, "frames": FRAMES, "timed": True, "sentences": [["TAG", "NORD", "REGEN"]],
    "glosses": [{"gloss": "TAG", "sentence": 0, "start": 4, "end": 13},
                {"gloss": "NORD", "sentence": 0, "start": 16, "end": 24},
                {"gloss": "REGEN", "sentence": 0, "start": 27, "end": 35}],
}  # fmt: skip
SIGNERS = [
    {"name": "default", "source": "SynthSigner identity 10", "builtin": True},
    {"name": "synth-11", "source": "SynthSigner identity 11", "builtin": True},
    {"name": "mine", "source": "upload", "builtin": False},
]
INFO = {"languages": ["de", "zh"], "renderers": ["full", "skeleton", "tpsmm"],
        "default_renderer": "full", "max_text_chars": 500, "min_fps": 5.0, "max_fps": 60.0,
        "sign_requires_key": False, "uploads": True, "max_upload_bytes": 10_000_000}  # fmt: skip


def _images() -> dict[str, bytes]:
    out = {}
    for name, identity in [*BUILTIN_SIGNERS.items(), ("mine", 3)]:
        buf = io.BytesIO()
        Image.fromarray(synth_rest_signer(identity, 128)[0]).save(buf, format="PNG")
        out[name] = buf.getvalue()
    return out


def _video_chunks() -> list[bytes]:
    """A fragmented mp4 as /v1/sign streams it, one piece per rendered chunk: the skeleton
    renderer over the built-in signer, driven by the test double's poses (tests/t2p_double)."""
    image, pose = synth_rest_signer(BUILTIN_SIGNERS["default"])
    signer = Signer("default", image, pose, {"builtin": True}, None)
    canonical = FakeTextToPose("de", max_frames=FRAMES).generate("am tag regnet es im norden")
    renderer = SkeletonRenderer("skeleton", 256)
    state = renderer.prepare(signer)
    encoder = EncodeStage().mp4(FPS, fragmented=True)
    parts = [
        encoder.write(renderer.render([state], [retarget_to(canonical[i : i + CHUNK], signer)])[0])
        for i in range(0, FRAMES, CHUNK)
    ]
    return [p for p in [*parts, encoder.close()] if p]


class StandIn(BaseHTTPRequestHandler):
    """The API's routes the page calls, answering as the service does. Texts steer it:
    ``busy`` -> one 503 with Retry-After first; ``slow`` -> 1.5 s between chunks; ``drop`` ->
    the connection closes after two chunks."""

    protocol_version = "HTTP/1.1"  # chunked responses, as the service streams
    images: dict[str, bytes] = {}
    video: list[bytes] = []
    busy_left = {"n": 0}
    log: list[tuple[str, str, Any]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        name = "index.html" if path == "/" else path.removeprefix("/web/")
        if (path == "/" or path.startswith("/web/")) and name in WEB_FILES:
            self._send(200, WEB_FILES[name], WEB_TYPES[name], WEB_HEADERS)
        elif path == "/v1/info":
            self._json(200, INFO)
        elif path == "/v1/signers":
            self._json(200, {"signers": SIGNERS})
        elif path.startswith("/v1/signers/") and path.endswith("/image"):
            self._send(200, self.images[path.split("/")[3]], "image/png")
        else:
            self._json(404, {"error": "Not Found"})

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/v1/signers?name="):
            self._upload(self.path.split("=", 1)[1], data)
            return
        body = json.loads(data or b"{}")
        self.log.append(("POST", self.path, body))
        if "busy" in body.get("text", "") and self.busy_left["n"] > 0:
            self.busy_left["n"] -= 1
            self._send(503, b"Service Unavailable", "text/plain", {"Retry-After": "2"})
        elif body.get("language") == "zh":
            self._json(422, {"error": "unsupported language 'zh'; choose from ['de']"})
        elif self.path == "/v1/glosses":
            self._json(200, TIMELINE)
        elif self.path == "/v1/sign":
            self._stream(1.5 if "slow" in body["text"] else 0.0, "drop" in body["text"])
        else:
            self._json(404, {"error": "Not Found"})

    def _upload(self, name: str, data: bytes) -> None:
        self.log.append(("POST", self.path, (self.headers["Content-Type"], len(data))))
        if name == "taken":
            self._json(409, {"error": "signer 'taken' already exists; delete it first"})
            return
        SIGNERS.append({"name": name, "source": "upload", "builtin": False})
        self.images[name] = data
        self._json(201, {"name": name, "source": "upload", "builtin": False})

    def do_DELETE(self) -> None:
        self.log.append(("DELETE", self.path, self.headers.get("Authorization")))
        if not self.headers.get("Authorization"):
            message = "this request needs an API key: send 'Authorization: Bearer KEY'"
            self._json(401, {"error": message})
            return
        name = self.path.split("/")[3]
        SIGNERS[:] = [s for s in SIGNERS if s["name"] != name]
        self._json(200, {"deleted": name})

    def _stream(self, pause: float, drop: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for part in self.video[: 2 if drop else None]:
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
                time.sleep(pause)
            if drop:  # the connection ends without the last chunk: a cut-off stream
                time.sleep(0.5)  # after the browser has the two chunks
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the page cancelled
            pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    StandIn.images = _images()
    StandIn.video = _video_chunks()
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium_page(f"{site}/", tmp_path_factory.mktemp("chromium")) as page:
        page.wait(
            "document.querySelectorAll('#signers img').length === 3 && "
            "[...document.querySelectorAll('#signers img')].every((i) => i.naturalWidth > 0)"
        )
        yield page


def test_streamed_video_glosses_highlight_caption_downloads(browser: Browser) -> None:
    start_sign(browser, "am tag regnet es im norden")
    browser.wait("$('status').textContent === 'Done.'")
    player = browser.js("""(() => { const p = document.querySelector('.player');
      const v = p.querySelector('video');
      return {progress: p.querySelector('.progress-text').textContent, src: v.src,
        ready: v.readyState, duration: v.duration, mp4: !p.querySelector('.download-mp4').hidden,
        glosses: [...document.querySelectorAll('#glosses li')].map((l) => l.textContent),
        lang: $('glosses').lang}; })()""")
    assert player["progress"] == f"{FRAMES} / {FRAMES} frames rendered (streamed)"
    assert player["src"].startswith("blob:") and player["ready"] >= 1 and player["mp4"]
    assert browser.js("document.querySelector('.download-mp4').checkVisibility()")
    assert abs(player["duration"] - FRAMES / FPS) < 0.1
    assert player["glosses"] == ["TAG", "NORD", "REGEN"] and player["lang"] == "de"
    # highlighting: the second sign is frames 16-23
    browser.js("(() => { const v = document.querySelector('.player video'); v.pause(); "
               "v.currentTime = 18 / 25; })()")  # fmt: skip
    browser.wait("document.querySelectorAll('#glosses li')[1].classList.contains('active')")
    assert browser.js("document.querySelectorAll('#glosses li.active').length") == 1
    assert browser.js("document.querySelectorAll('#glosses li')[1].getAttribute('aria-current')")
    # the caption track: the input sentence over the whole video
    cue = browser.wait("""(() => { const t = document.querySelector('.player video').textTracks[0];
      return t && t.cues && t.cues.length ? [t.cues[0].text, t.cues[0].endTime, t.language] : null;
      })()""")
    assert cue == ["am tag regnet es im norden", FRAMES / FPS, "de"]
    curl = browser.js("$('curl').textContent")
    assert "/v1/sign" in curl and '"renderer":"full"' in curl


def test_progress_while_streaming_and_cancel(browser: Browser) -> None:
    start_sign(browser, "slow sentence")
    partial = browser.wait("""(() => { const t = document.querySelector('.progress-text');
      return t && /^\\d+ \\/ 40 frames$/.test(t.textContent) && !t.textContent.startsWith('0 ')
        ? t.textContent : null; })()""")
    assert partial != f"{FRAMES} / {FRAMES} frames"
    visible = "document.querySelector('.download-mp4').checkVisibility()"
    assert not browser.js(visible)  # offered once the whole video is there
    assert browser.js("document.querySelector('.player video').src.startsWith('blob:')")
    browser.js("$('cancel').click()")
    browser.wait("$('status').textContent === 'Cancelled.'")
    assert browser.js("$('go').disabled === false && $('cancel').disabled === true")


def test_a_dropped_stream_says_so_and_keeps_what_arrived(browser: Browser) -> None:
    start_sign(browser, "drop this stream")
    browser.wait("$('status').textContent.startsWith('Not every video')")
    message = browser.js("document.querySelector('.player-error').textContent")
    assert re.match(r"The stream broke off after \d+ frames", message), message
    assert browser.js("document.querySelector('.player video').src.startsWith('blob:')")
    assert browser.js("document.querySelector('.download-mp4').checkVisibility()")
    assert browser.errors == []


def test_side_by_side_renders_two(browser: Browser) -> None:
    browser.js("$('compare').click(); $('renderer2').value = 'skeleton';")
    start_sign(browser, "am tag")
    browser.wait("$('status').textContent === 'Done.'")
    titles = browser.js("[...document.querySelectorAll('.player-title')].map((t) => t.textContent)")
    assert titles == ["Renderer: full", "Renderer: skeleton"]
    assert browser.js("$('players').classList.contains('two')")
    bodies = [b for m, p, b in StandIn.log[-2:] if p == "/v1/sign"]
    assert sorted(b["renderer"] for b in bodies) == ["full", "skeleton"]
    browser.js("$('compare').click()")


def test_errors_next_to_their_field_and_busy_countdown(browser: Browser) -> None:
    set_field(browser, "language", "zh")
    start_sign(browser, "你好")
    browser.wait("$('language-error').textContent.includes('unsupported language')")
    assert browser.js("$('language').getAttribute('aria-invalid')") == "true"
    assert browser.js("document.activeElement.id") == "language"
    assert browser.js("$('text').lang") == "zh"
    set_field(browser, "language", "de")
    StandIn.busy_left["n"] = 1
    start_sign(browser, "busy sentence")
    browser.wait("/retrying in [12] s/.test($('status').textContent)")
    browser.wait("$('status').textContent === 'Done.'")
    assert not browser.js("$('language-error').textContent")


def test_no_console_errors_and_screenshots(browser: Browser, tmp_path: Path) -> None:
    folder = Path(os.environ.get("SLP_WEB_SCREENSHOTS") or tmp_path)
    pause = (
        "(() => { for (const v of document.querySelectorAll('.player video')) {"
        " v.pause(); v.currentTime = 20 / 25; } })()"
    )
    start_sign(browser, "am tag regnet es im norden")
    browser.wait("$('status').textContent === 'Done.'")
    browser.js(pause)
    browser.screenshot(folder / "web_desktop.png", 1280, 900, mobile=False)
    browser.screenshot(folder / "web_phone.png", 390, 844, mobile=True)
    browser.js("$('output').scrollIntoView()")
    browser.screenshot(folder / "web_phone_video.png", 390, 844, mobile=True)
    browser.js("scrollTo(0, 0)")
    assert Image.open(folder / "web_phone.png").size == (390, 844)
    fits = browser.js("document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, "the phone layout scrolls sideways"
    browser.call("Emulation.clearDeviceMetricsOverride")
    browser.js("$('compare').click(); $('renderer2').value = 'skeleton';")
    start_sign(browser, "am tag regnet es im norden")
    browser.wait("$('status').textContent === 'Done.'")
    browser.js(pause)
    browser.screenshot(folder / "web_side_by_side.png", 1280, 900, mobile=False)
    browser.js("$('compare').click()")
    start_sign(browser, "slow sentence")
    progress = "document.querySelector('.progress-text').textContent"
    browser.wait(f"/^[1-9]\\d* \\/ 40 frames$/.test({progress})")
    browser.screenshot(folder / "web_rendering.png", 1280, 900, mobile=False)
    browser.js("$('cancel').click()")
    browser.wait("$('status').textContent === 'Cancelled.'")
    browser.call("Emulation.clearDeviceMetricsOverride")
    assert browser.errors == []


def test_upload_with_crop_preview_and_delete(browser: Browser, tmp_path: Path) -> None:
    """A landscape photo: blue centre square, red margins the service would cut away."""
    image = np.zeros((200, 300, 3), np.uint8)
    image[:, :, 0] = 200
    image[:, 50:250] = (0, 0, 200)
    photo = tmp_path / "My Photo.png"
    Image.fromarray(image).save(photo)
    browser.js("$('upload-panel').open = true")
    root = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#photo")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node)
    browser.wait("!$('crop-figure').hidden")
    assert browser.js("$('signer-name').value") == "my-photo"
    pixels = browser.js("""[[1, 1], [128, 128], [254, 254]].map(([x, y]) =>
      Array.from($('crop').getContext('2d').getImageData(x, y, 1, 1).data))""")
    assert all(p[2] > 150 and p[0] < 60 for p in pixels), pixels  # only the kept square
    browser.js("$('signer-name').value = 'taken'; $('upload').click()")
    browser.wait("$('signer-name-error').textContent.includes('already exists')")
    assert browser.js("document.activeElement.id") == "signer-name"
    browser.js("$('signer-name').value = 'new-one'; $('upload').click()")
    browser.wait("$('upload-status').textContent === 'Signer new-one added.'")
    assert StandIn.log[-1] == (
        "POST",
        "/v1/signers?name=new-one",
        ("image/png", photo.stat().st_size),
    )
    checked = "document.querySelector('#signers input:checked').value"
    browser.wait(f"{checked} === 'new-one'")
    browser.js("window.confirm = () => true")
    delete = "document.querySelector('#signers .delete[aria-label=\"Delete signer mine\"]').click()"
    browser.js(delete)
    browser.wait("$('key-error').textContent.includes('API key')")
    assert browser.js("$('key-panel').open")
    browser.js("$('key').value = 'a-key-of-16-chars-or-more'")
    browser.js(delete)
    browser.wait("$('upload-status').textContent === 'Signer mine deleted.'")
    assert StandIn.log[-1] == ("DELETE", "/v1/signers/mine", "Bearer a-key-of-16-chars-or-more")
    browser.wait("document.querySelectorAll('#signers input').length === 3")  # list reloaded
    assert browser.errors == []
