"""The page at ``/`` (slp_pipeline/web): static checks of the served files, and its API logic
(sign-api.js) run in Node against scripted answers, the service's real error messages, a real
fragmented mp4 and PIL's crop. No Ray and no browser (tests/test_web_browser.py and
tests/test_web_graph.py drive one)."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import webvtt
from PIL import Image, ImageOps

from slp_pipeline.auth import ApiKeys
from slp_pipeline.config import PipelineConfig
from slp_pipeline.serve_app import WEB_FILES, WEB_TYPES
from slp_pipeline.signers import STORED_SIZE, InputError, SignerRegistry, check_name
from slp_pipeline.stages import EncodeStage, check_request

WEB = Path(__file__).resolve().parents[1] / "slp_pipeline/web"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="needs Node.js (18+, for fetch/Response)")
LABELLED = {"input", "select", "textarea", "button", "progress", "video", "canvas"}


# --------------------------------------------------------------------------- static checks
class _Page(HTMLParser):
    """Elements of index.html with their attributes, and the text inside each open element."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.open: list[int] = []  # indices of open elements
        self.labels_for: set[str] = set()
        self.texts: dict[int, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        ancestors = [self.elements[i][0] for i in self.open]
        self.elements.append((tag, a, ancestors))
        if tag == "label" and "for" in a:
            self.labels_for.add(a["for"])
        if tag not in ("input", "meta", "link", "br", "img", "source", "track"):
            self.open.append(len(self.elements) - 1)

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.elements[self.open.pop()][0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for i in self.open:
            self.texts[i] = self.texts.get(i, "") + data


@pytest.fixture(scope="module")
def page() -> _Page:
    parsed = _Page()
    parsed.feed(WEB_FILES["index.html"].decode())
    return parsed


def test_served_files_are_the_package_files_and_the_page_uses_only_them(page: _Page) -> None:
    assert set(WEB_FILES) == {p.name for p in WEB.iterdir() if p.suffix in (".html", ".js", ".css")}
    assert all(WEB_FILES[n] == (WEB / n).read_bytes() for n in WEB_FILES)
    used = {a.get("src") or a.get("href") for t, a, _ in page.elements if t in ("script", "link")}
    assert used - {"data:,"} == {f"/web/{n}" for n in WEB_TYPES if n != "index.html"}


def test_no_external_urls_in_any_file() -> None:
    """Nothing is fetched from another origin (the CSP would block it; this finds it first)."""
    for name, data in WEB_FILES.items():
        text = data.decode()
        assert not re.search(r"(?i)\b(?:https?|wss?|ftp):", text), name
        assert not re.search(r"""(?:src|href)\s*=\s*["']//""", text), name  # protocol-relative
    css = WEB_FILES["style.css"].decode()
    assert "@import" not in css and "url(" not in css


def test_every_control_has_a_label(page: _Page) -> None:
    for index, (tag, attrs, ancestors) in enumerate(page.elements):
        if tag not in LABELLED or attrs.get("type") == "hidden":
            continue
        named = (
            attrs.get("id") in page.labels_for
            or "label" in ancestors
            or attrs.get("aria-label", "").strip()
            or attrs.get("aria-labelledby")
            or (tag == "button" and page.texts.get(index, "").strip())
        )
        assert named, f"<{tag} {attrs}> has no label"


def test_ids_exist_once_and_every_referenced_id_exists(page: _Page) -> None:
    ids = [a["id"] for _, a, _ in page.elements if "id" in a]
    assert len(ids) == len(set(ids)), "duplicate ids"
    referenced = set(page.labels_for)
    for _, attrs, _ in page.elements:
        for key in ("aria-describedby", "aria-labelledby"):
            referenced |= set(attrs.get(key, "").split())
        if attrs.get("href", "").startswith("#"):
            referenced.add(attrs["href"][1:])
    script = WEB_FILES["app.js"].decode()
    in_script = set(re.findall(r"""\$\(["'`]([\w-]+)["'`]\)""", script))
    in_script |= set(re.findall(r"""querySelector(?:All)?\(["'`]#([\w-]+)""", script))
    # showError(field) writes to `${field}-error`: every field it is called with needs one
    fields = set(re.findall(r"""showError\(["']([\w-]+)["']""", script))
    in_script |= {f"{f}-error" for f in fields}
    assert in_script, "the script's id references were not found"
    assert referenced | in_script <= set(ids), sorted((referenced | in_script) - set(ids))


def test_languages_are_marked(page: _Page) -> None:
    tags = {t: a for t, a, _ in page.elements if t in ("html", "textarea")}
    assert tags["html"]["lang"] == "en" and tags["textarea"]["lang"] == "de"
    options = {a.get("value"): a.get("lang") for t, a, _ in page.elements if t == "option"}
    assert options["de"] == "de" and options["zh"] == "zh"


def _contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours."""

    def luminance(colour: str) -> float:
        c = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return float(c @ [0.2126, 0.7152, 0.0722])

    hi, lo = sorted([luminance(a), luminance(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_colours_have_sufficient_contrast() -> None:
    css = WEB_FILES["style.css"].decode()
    var = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{6})", css))
    text_pairs = [("fg", "bg"), ("fg", "panel"), ("muted", "bg"), ("muted", "panel"),
                  ("error", "panel"), ("accent", "panel"), ("accent-fg", "accent"),
                  ("fg", "active")]  # fmt: skip
    for fg, bg in text_pairs:
        assert _contrast(var[fg], var[bg]) >= 4.5, (fg, bg)  # WCAG AA, normal text
    assert _contrast(var["line"], var["panel"]) >= 3.0  # AA for the outlines of controls


# --------------------------------------------------------------------------- sign-api.js in Node
HARNESS = """
const answers = %s;
const calls = [];
globalThis.setTimeout = (f) => { f(); return 0; };  // Retry-After waits are not slept here
globalThis.fetch = async (url, options = {}) => {
  calls.push({url, method: options.method || "GET"});
  const [status, headers, body] = answers.shift();
  return new Response(body, {status, headers});
};
%s
(async () => {
  const out = await (async () => { %s })();
  console.log(JSON.stringify({out, calls}));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _node(body: str, answers: list | None = None) -> dict:
    code = HARNESS % (json.dumps(answers or []), WEB_FILES["sign-api.js"].decode(), body)
    done = subprocess.run([NODE, "-"], input=code, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


JSON = {"Content-Type": "application/json"}
BUSY_TEXT = [503, {"Content-Type": "text/plain", "Retry-After": "2"}, "Service Unavailable"]
BUSY_JSON = [503, {**JSON, "Retry-After": "0"}, '{"error": "busy"}']
OK = [200, JSON, "{}"]


@needs_node
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            [503, {"Content-Type": "text/plain"}, "Service Unavailable"],
            "error 503: Service Unavailable",
        ),
        ([404, JSON, '{"error": "unknown signer \'x\'"}'], "unknown signer 'x'"),
        ([500, {"Content-Type": "text/html"}, "<h1>oops</h1>"], "error 500"),
    ],
)
def test_error_messages_of_json_and_plain_answers(answer: list, message: str) -> None:
    """The proxy's own 503 is plain text: reading it as JSON left the page stuck."""
    out = _node("return SignAPI.errorOf(await fetch('/v1/sign'));", [answer])
    assert out["out"] == message


@needs_node
def test_busy_answers_are_retried_after_a_countdown() -> None:
    body = """const waits = [];
      const r = await SignAPI.call('/v1/sign', {method: 'POST'}, (left) => waits.push(left));
      return {status: r.status, waits};"""
    out = _node(body, [BUSY_TEXT, BUSY_JSON, OK])
    assert out["out"] == {"status": 200, "waits": [2, 1, 0, 0]}
    assert len(out["calls"]) == 3


@needs_node
def test_retries_give_up_after_four_answers_and_stop_when_cancelled() -> None:
    out = _node("return (await SignAPI.call('/v1/sign')).status;", [BUSY_TEXT] * 5)
    assert out["out"] == 503 and len(out["calls"]) == 4
    cancel = """const c = new AbortController();
      try { await SignAPI.call('/v1/sign', {signal: c.signal}, () => c.abort()); }
      catch (e) { return e.name; }"""
    out = _node(cancel, [BUSY_TEXT] * 5)
    assert out["out"] == "AbortError" and len(out["calls"]) == 1


def _service_errors(tmp_path: Path) -> list[tuple[int, str, str, str]]:
    """(status, message, where, field) for errors as the service words them."""
    config = PipelineConfig(text2pose={"de": "x"}, renderers={"skeleton": "skeleton"},
                            default_renderer="skeleton")  # fmt: skip
    cases = [
        (("", "de", None, None), "text"),
        (("x" * 501, "de", None, None), "text"),
        (("hallo", "fr", None, None), "language"),
        (("hallo", "de", "vae", None), "renderer"),
        (("hallo", "de", None, 1000.0), "fps"),
    ]
    out = []
    for args, field in cases:
        with pytest.raises(InputError) as e:
            check_request(config, *args)
        out.append((422, str(e.value), "sign", field))
    registry = SignerRegistry(tmp_path, seed_builtins=False)
    for call, status, where, field in [
        (lambda: registry.get("nobody"), 404, "sign", "signer"),
        (lambda: check_name("../x"), 422, "sign", "signer"),
        (lambda: check_name("Bad Name"), 422, "upload", "signer-name"),
        (lambda: registry.add("new", b"not an image", None), 422, "upload", "photo"),
        (lambda: ApiKeys.from_keys(["k" * 16]).check("wrong-key", write=True), 401, "sign", "key"),
    ]:
        with pytest.raises(InputError) as e:
            call()
        out.append((status, str(e.value), where, field))
    out.append((409, "signer 'a' already exists; delete it first", "upload", "signer-name"))
    out.append((503, "the service is busy or restarting a replica; retry shortly", "sign", None))
    return out


@needs_node
def test_errors_are_placed_next_to_their_field(tmp_path: Path) -> None:
    cases = _service_errors(tmp_path)
    body = f"return {json.dumps(cases)}.map(([s, m, w]) => SignAPI.fieldOf(s, m, w));"
    assert _node(body)["out"] == [field for *_, field in cases], cases


@needs_node
def test_curl_command_sends_the_same_body() -> None:
    request = {"text": "it's 'quoted' \\ text $HOME", "language": "de", "signer": "default",
               "renderer": "skeleton", "fps": 12.5}  # fmt: skip
    body = f"return SignAPI.curlCommand('http://127.0.0.1:8000', {json.dumps(request)}, true);"
    argv = shlex.split(_node(body)["out"].replace("\\\n", " "))
    assert argv[:3] == ["curl", "-X", "POST"] and argv[3] == "http://127.0.0.1:8000/v1/sign"
    assert json.loads(argv[argv.index("-d") + 1]) == request
    assert "Authorization: Bearer $SLP_API_KEY" in argv  # the variable, never the key
    assert argv[argv.index("-o") + 1] == "sign.mp4"


@needs_node
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (301, 300), (256, 256), (1000, 333)])
def test_crop_preview_is_the_services_crop(size: tuple[int, int]) -> None:
    """The preview shows the square the service keeps (decode_upload's ImageOps.fit, whose box
    may start half a pixel in): resizing that box gives the stored image exactly."""
    w, h = size
    rect = _node(f"return SignAPI.cropRect({w}, {h});")["out"]
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))
    x, y, side = rect["x"], rect["y"], rect["side"]
    lanczos = Image.Resampling.LANCZOS
    stored = ImageOps.fit(img, (STORED_SIZE, STORED_SIZE), lanczos)
    shown = img.resize((STORED_SIZE, STORED_SIZE), lanczos, box=(x, y, x + side, y + side))
    assert side == min(w, h)
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(stored))


@needs_node
def test_active_gloss_and_caption() -> None:
    glosses = [{"start": 10, "end": 20}, {"start": 23, "end": 30}]
    frames = [0, 10, 19, 20, 23, 29, 30]
    body = f"""return {{active: {frames}.map((f) => SignAPI.activeGloss({json.dumps(glosses)}, f)),
      vtt: SignAPI.captionVTT("am tag -->\\nregnet es", 3723.5)}};"""
    out = _node(body)["out"]
    assert out["active"] == [-1, 0, 0, -1, 1, 1, -1]
    cues = list(webvtt.from_buffer(io.StringIO(out["vtt"])))
    assert len(cues) == 1 and cues[0].start == "00:00:00.000" and cues[0].end == "01:02:03.500"
    assert cues[0].text == "am tag ->\nregnet es"


@needs_node
def test_frames_are_counted_as_the_fragmented_mp4_arrives() -> None:
    """The stream /v1/sign sends (EncodeStage, fragmented) read in odd-sized pieces: the frame
    count grows while it arrives and ends at the frames encoded; the codec is H.264's."""
    encoder = EncodeStage().mp4(25.0, fragmented=True)
    rng = np.random.default_rng(0)
    parts = [encoder.write(rng.integers(0, 255, (16, 64, 64, 3), np.uint8)) for _ in range(4)]
    parts.append(encoder.close())
    data = b"".join(parts)
    pieces = [list(data[i : i + 777]) for i in range(0, len(data), 777)]
    body = f"""const r = new SignAPI.Mp4Reader();
      const counts = {json.dumps(pieces)}.map((p) => r.push(new Uint8Array(p)));
      return {{counts, codec: r.codec}};"""
    out = _node(body)["out"]
    assert out["counts"][-1] == 64
    assert any(0 < c < 64 for c in out["counts"])  # partial counts while it streams
    assert out["counts"] == sorted(out["counts"])
    assert re.fullmatch(r"avc1\.[0-9a-f]{6}", out["codec"])
