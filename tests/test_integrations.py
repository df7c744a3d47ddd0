"""Captions -> sign track / picture-in-picture, the HTTP client and the watch-folder example."""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.testclient import TestClient

from integrations import cli as caption_cli
from integrations import watch_folder
from integrations.captions import (
    CaptionError,
    CaptionWarning,
    Cue,
    load_captions,
    parse_srt,
    parse_vtt,
)
from integrations.client import AsyncSignClient, SignAPIError, SignClient, retry_delay
from integrations.track import (
    MAX_SPEED,
    MIN_SPEED,
    TrackWarning,
    render_pip,
    render_sign_track,
    sign_track,
)
from pgmm.video import VideoError, iter_frames, probe, write_video
from slp_pipeline.synthesize import caption_renderer

FPS = 25
SIGN_RGB = (220, 40, 40)  # background of sign frames; idle frames are dark grey
IDLE_LEVEL = 30
# Long test captions meet the short test clips' timing limits on purpose.
IGNORE_TRIMS = pytest.mark.filterwarnings("ignore::integrations.track.TrackWarning")


class BoxRenderer:
    """Test signer: a red frame with a white box sliding right, ``frames_per_char`` frames per
    character of text, so a clip's natural length (and hence its retiming) is predictable."""

    def __init__(
        self, fps: float = FPS, size: tuple[int, int] = (48, 64), frames_per_char: int = 2
    ) -> None:
        self.fps = fps
        self.size = size
        self.frames_per_char = frames_per_char

    def natural_frames(self, text: str) -> int:
        return self.frames_per_char * len(text)

    def render(self, text: str, language: str) -> Iterator[np.ndarray]:
        h, w = self.size
        n = self.natural_frames(text)
        for a in range(0, n, 16):
            chunk = np.empty((min(16, n - a), h, w, 3), np.uint8)
            chunk[:] = SIGN_RGB
            for j in range(len(chunk)):
                x = (a + j) % (w - 8)
                chunk[j, h // 3 : h // 3 + 8, x : x + 8] = 255
            yield chunk

    def idle(self, num_frames: int) -> np.ndarray:
        return np.full((num_frames, *self.size, 3), IDLE_LEVEL, np.uint8)


def make_video(
    path: Path, seconds: float, size: tuple[int, int] = (128, 96), audio: bool = True
) -> Path:
    """H.264 video (a moving gradient) with an AAC 440 Hz sine track, written with PyAV."""
    w, h = size
    rate = 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast"}
        sound = container.add_stream("aac", rate=rate, layout="mono") if audio else None
        x = np.arange(w, dtype=np.uint8)[None, :, None]
        for i in range(round(seconds * FPS)):
            img = np.broadcast_to((x + 3 * i) % 256, (h, w, 3)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            t = np.arange(round(seconds * rate)) / rate
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
            for a in range(0, len(pcm), 1024):
                frame = av.AudioFrame.from_ndarray(pcm[None, a : a + 1024], layout="mono")
                frame.sample_rate, frame.pts = rate, a
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def audio_packets(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [(bytes(p), p.pts) for p in container.demux(stream) if p.dts is not None]


def video_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


SRT = """1
00:00:00,400 --> 00:00:01,200
<i>Hallo</i> {\\an8}liebe
Zuschauer

2
00:00:01,600 --> 00:00:02,000
heute

3
00:00:02,400 --> 00:00:03,000
今天
"""

VTT = """WEBVTT

intro
00:00:00.400 --> 00:00:01.200 align:start
<v Anna>Hallo <b>liebe</b></v>
<c.yellow>Zuschauer</c>

00:01.600 --> 00:02.000
heute

00:02.400 --> 00:03.000
今天
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    make_video(folder / "talk.mp4", 3.2)
    (folder / "talk.srt").write_text(SRT, encoding="utf-8")
    (folder / "talk.vtt").write_text(VTT, encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------- captions


@pytest.mark.parametrize("name", ["talk.srt", "talk.vtt"])
def test_captions_are_cleaned_and_language_detected(media: Path, name: str) -> None:
    cues = load_captions(media / name)
    assert [c.text for c in cues] == ["Hallo liebe Zuschauer", "heute", "今天"]
    assert [c.language for c in cues] == ["de", "de", "zh"]
    assert [(c.start_s, c.end_s) for c in cues] == [(0.4, 1.2), (1.6, 2.0), (2.4, 3.0)]
    assert [c.index for c in cues] == [1, 2, 3]
    assert {c.language for c in load_captions(media / name, language="zh")} == {"zh"}


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.srt", "1\n00:00:01,000 --> 00:00:0x,000\nhi\n", "line 2: unparsable SRT timestamp"),
        ("a.srt", "this is not a subtitle file\n", "malformed SRT"),
        ("a.srt", "1\n00:00:02,000 --> 00:00:01,000\nhi\n", r"cue 1: end .* after start"),
        ("a.srt", "1\n00:00:01,000 --> 00:00:01,000\nhi\n", r"cue 1: end .* after start"),
        ("a.vtt", "WEBVTT\n\n00:00:0x.500 --> 00:00:01.500\nhi\n", "malformed WebVTT cue"),
        ("a.vtt", "00:00:00.500 --> 00:00:01.500\nhi\n", "must start with 'WEBVTT'"),
        ("a.vtt", "WEBVTT\n", "no WebVTT cues"),
        ("a.ass", "[Script Info]\n", "unknown caption format '.ass'"),
    ],
)
def test_bad_captions_raise_clear_errors(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CaptionError, match=match) as info:
        load_captions(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_utf8_captions(tmp_path: Path) -> None:
    path = tmp_path / "latin1.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\nGrüße\n".encode("latin-1"))
    with pytest.raises(CaptionError, match="not UTF-8"):
        load_captions(path)
    path.write_bytes(b"\xef\xbb\xbf" + "1\n00:00:01,000 --> 00:00:02,000\nGrüße\n".encode())
    assert load_captions(path)[0].text == "Grüße"  # a BOM is fine


def test_empty_cues_are_skipped_with_a_warning() -> None:
    text = "1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n\n2\n00:00:03,000 --> 00:00:04,000\nja\n"
    with pytest.warns(CaptionWarning, match="cue 1: empty text, skipped"):
        cues = parse_srt(text)
    assert [c.index for c in cues] == [2]


def test_overlapping_cues_are_truncated_and_simultaneous_ones_merged() -> None:
    text = (
        "WEBVTT\n\n00:01.000 --> 00:03.000\neins\n\n00:02.000 --> 00:04.000\nzwei\n\n"
        "00:05.000 --> 00:06.000\nA\n\n00:05.000 --> 00:07.000\nB\n"
    )
    with pytest.warns(CaptionWarning) as record:
        cues = parse_vtt(text)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [
        (1.0, 2.0, "eins"),  # truncated: the later cue keeps its start
        (2.0, 4.0, "zwei"),
        (5.0, 7.0, "A B"),
    ]
    assert any("overlaps" in str(w.message) for w in record)
    assert any("merged" in str(w.message) for w in record)


def test_language_of_cues_without_letters_follows_the_file() -> None:
    text = "1\n00:00:01,000 --> 00:00:02,000\n你好\n\n2\n00:00:03,000 --> 00:00:04,000\n♪ 123 ♪\n"
    assert [c.language for c in parse_srt(text)] == ["zh", "zh"]


# ---------------------------------------------------------------------------------- timing


def cue(index: int, start: float, end: float, text: str) -> Cue:
    return Cue(index, start, end, text, "de")


def plan(cues: list[Cue], renderer: BoxRenderer, fps: float, seconds: float) -> list[dict]:
    log: list[dict] = []
    n = round(seconds * fps)
    frames = np.concatenate(list(sign_track(cues, renderer, fps, n, log)))
    assert frames.shape == (n, *renderer.size, 3)
    return log


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_clips_are_retimed_within_bounds(fps: float) -> None:
    renderer = BoxRenderer(frames_per_char=5)  # "abcd": 20 frames = 0.8 s natural
    cues = [
        cue(1, 0.0, 0.8, "abcd"),  # exact: natural speed
        cue(2, 1.0, 1.72, "abcd"),  # 0.72 s: 1.11x
        cue(3, 2.0, 2.2, "abcd"),  # far too short, free time after: 1.25x, runs on
        cue(4, 3.0, 5.0, "abcd"),  # far too long: 0.8x, then idle
        cue(5, 6.0, 6.2, "abcd"),  # too short, next cue right after: trimmed
        cue(6, 6.4, 7.2, "abcd"),
    ]
    with pytest.warns(TrackWarning, match="cue 5: .* trimmed"):
        log = plan(cues, renderer, fps, 8.0)
    assert [e["action"] for e in log] == ["fit", "fit", "overrun", "padded", "trimmed", "fit"]
    for entry, c in zip(log, cues, strict=True):
        assert abs(entry["start_s"] - c.start_s) <= 0.5 / fps + 1e-9
        assert MIN_SPEED - 1e-9 <= entry["speed"] <= MAX_SPEED + 1e-9
        natural = entry["natural_frames"] / renderer.fps
        if entry["action"] != "trimmed":
            assert entry["frames"] / fps == pytest.approx(natural / entry["speed"])
    assert log[0]["speed"] == pytest.approx(1.0)
    assert log[1]["speed"] == pytest.approx(0.8 / 0.72, abs=1.0 / fps)
    assert log[2]["speed"] == pytest.approx(MAX_SPEED, abs=0.07)  # 1 frame in 20
    assert log[3]["speed"] == pytest.approx(MIN_SPEED, abs=0.07)
    assert log[4]["frames"] == round(6.4 * fps) - round(6.0 * fps)


def test_renderer_is_not_asked_for_frames_that_cannot_be_shown() -> None:
    class Endless(BoxRenderer):
        def render(self, text: str, language: str) -> Iterator[np.ndarray]:
            while True:
                yield np.full((8, *self.size, 3), 200, np.uint8)

    with pytest.warns(TrackWarning, match="trimmed"):
        log = plan([cue(1, 0.0, 1.0, "x")], Endless(), 25.0, 2.0)
    assert log[0]["frames"] == 50 and log[0]["speed"] == MAX_SPEED


def test_renderer_may_return_a_list_and_a_cut_generator_is_closed() -> None:
    """A renderer may hand back any iterable of chunks (a list has no ``close``, which
    ``contextlib.closing`` would call); a generator cut short is closed at once."""

    class Listing(BoxRenderer):
        def render(self, text: str, language: str) -> Iterator[np.ndarray]:
            return iter(list(super().render(text, language)))

    log = plan([cue(1, 0.0, 2.0, "hallo")], Listing(), 25.0, 3.0)
    assert log[0]["frames"] > 0
    closed = []

    class Endless(BoxRenderer):
        def render(self, text: str, language: str) -> Iterator[np.ndarray]:
            try:
                while True:
                    yield np.full((8, *self.size, 3), 200, np.uint8)
            finally:
                closed.append(text)

    with pytest.warns(TrackWarning, match="trimmed"):
        plan([cue(1, 0.0, 1.0, "x")], Endless(), 25.0, 2.0)
    assert closed == ["x"]


def test_bad_renderer_output_is_reported() -> None:
    class Wrong(BoxRenderer):
        def render(self, text: str, language: str) -> Iterator[np.ndarray]:
            yield np.zeros((4, 10, 10, 3), np.float32)

    with pytest.raises(ValueError, match=r"renderer.render\(\) must give uint8"):
        plan([cue(1, 0.0, 1.0, "x")], Wrong(), 25.0, 2.0)


# ------------------------------------------------------------------------------ rendering


@IGNORE_TRIMS
def test_pip_keeps_duration_audio_and_cue_starts(media: Path, tmp_path: Path) -> None:
    source, out, log_path = media / "talk.mp4", tmp_path / "signed.mp4", tmp_path / "t.json"
    cues = load_captions(media / "talk.srt")
    log = render_pip(source, cues, BoxRenderer(), out, timing_log=log_path, progress=False)

    info_in, info_out = probe(source), probe(out)
    assert abs(video_duration(out) - video_duration(source)) <= 1 / FPS + 1e-6
    assert abs(info_out.num_frames - info_in.num_frames) <= 1
    assert (info_out.width, info_out.height) == (info_in.width, info_in.height)
    src_audio, out_audio = audio_packets(source), audio_packets(out)
    assert len(src_audio) > 40 and out_audio == src_audio  # same bytes, same timestamps

    assert json.loads(log_path.read_text()) == log
    for entry, c in zip(log, cues, strict=True):
        assert abs(entry["start_frame"] - c.start_s * FPS) <= 1
        assert entry["frames"] > 0

    # The signer sits bottom-right (scale 0.3 of 128 px = 38 px wide, 16 px margin): red while
    # a cue is signed, idle grey before the first cue.
    frames = list(iter_frames(out))
    first = log[0]["start_frame"]
    corner = (slice(96 - 16 - 29 + 4, 96 - 16 - 4), slice(128 - 16 - 38 + 4, 128 - 16 - 20))
    assert np.abs(frames[first - 2][corner].mean(axis=(0, 1)) - IDLE_LEVEL).max() < 12
    signing = frames[first + 1][corner].mean(axis=(0, 1))
    assert np.abs(signing - SIGN_RGB).max() < 25
    assert leftovers(tmp_path) == []


def test_sign_track_is_as_long_as_the_source(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "track.mp4"
    cues = load_captions(media / "talk.vtt")
    renderer = BoxRenderer(frames_per_char=1)  # every clip fits before the next cue
    log = render_sign_track(cues, renderer, 3.2, out, progress=False)
    frames = list(iter_frames(out))
    assert len(frames) == 80
    is_sign = [f[..., 0].mean() > 100 for f in frames]
    for entry, c in zip(log, cues, strict=True):
        start = round(c.start_s * FPS)
        first_sign = is_sign.index(True, start - 1)
        assert abs(first_sign - c.start_s * FPS) <= 1
        assert not is_sign[start - 2]
        assert entry["action"] in ("fit", "padded", "overrun", "trimmed")


def test_captions_beyond_the_video_are_trimmed(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    cues = [cue(1, 0.5, 1.5, "ab"), cue(2, 2.8, 6.0, "abcdefgh"), cue(3, 7.0, 8.0, "zu spät")]
    with pytest.warns(TrackWarning) as record:
        log = render_pip(media / "talk.mp4", cues, BoxRenderer(), out, progress=False)
    messages = " | ".join(str(w.message) for w in record)
    assert "cue 2 ends at 6.00 s, after the video (3.20 s)" in messages
    assert "cue 3 starts after the video ends (3.20 s); dropped" in messages
    assert [e["action"] for e in log] == ["padded", "trimmed", "dropped"]
    assert abs(video_duration(out) - 3.2) <= 1 / FPS + 1e-6


def test_video_without_audio(tmp_path: Path) -> None:
    source = make_video(tmp_path / "silent.mp4", 1.2, audio=False)
    out = tmp_path / "silent.signed.mkv"
    render_pip(source, [cue(1, 0.2, 0.8, "ja")], BoxRenderer(), out, progress=False)
    assert audio_packets(out) == []
    assert abs(probe(out).num_frames - 30) <= 1


def test_non_video_input_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "notes.mp4"
    source.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4"):
        render_pip(source, [cue(1, 0.0, 1.0, "a")], BoxRenderer(), tmp_path / "o.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


@IGNORE_TRIMS
def test_failure_leaves_nothing_half_written(media: Path, tmp_path: Path) -> None:
    class Crashing(BoxRenderer):
        def render(self, text: str, language: str) -> Iterator[np.ndarray]:
            if text == "heute":
                raise RuntimeError("renderer crashed")
            yield from super().render(text, language)

    out = tmp_path / "signed.mp4"
    out.write_bytes(b"previous result")
    cues = load_captions(media / "talk.srt")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        render_pip(media / "talk.mp4", cues, Crashing(), out, timing_log=tmp_path / "t.json")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        render_sign_track(cues, Crashing(), 3.2, tmp_path / "track.mp4", progress=False)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signed.mp4"]


def test_bad_layout_arguments(media: Path, tmp_path: Path) -> None:
    args = (media / "talk.mp4", [cue(1, 0.0, 1.0, "a")], BoxRenderer())
    with pytest.raises(ValueError, match="does not fit"):
        render_pip(*args, tmp_path / "o.mp4", scale=1.0)
    with pytest.raises(ValueError, match="corner must be one of"):
        render_pip(*args, tmp_path / "o.mp4", corner="middle")
    with pytest.raises(ValueError, match="output must be one of"):
        render_pip(*args, tmp_path / "o.avi")


def test_memory_stays_flat_on_long_input(tmp_path: Path) -> None:
    """Peak Python/numpy memory for 60 s of video is that of 6 s: nothing grows with length."""
    renderer = BoxRenderer(size=(48, 64))
    peaks, seconds_per_second = [], 0.0
    for seconds in (6, 60):
        source = make_video(tmp_path / f"long{seconds}.mp4", seconds, size=(64, 48))
        cues = [cue(i, t + 0.5, t + 2.0, "guten tag") for i, t in enumerate(range(0, seconds, 3))]
        tracemalloc.start()
        start = time.perf_counter()
        render_pip(
            source, cues, renderer, tmp_path / "out.mp4", scale=0.4, margin=2, progress=False
        )
        elapsed = time.perf_counter() - start
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        seconds_per_second = seconds / elapsed
    # 60 s of 64x48 RGB frames is 13.8 MB; a leak or a whole-video buffer would show here.
    assert peaks[1] - peaks[0] < 2_000_000, peaks
    print(f"\nthroughput: {seconds_per_second:.1f} source s/s; peak traced memory {peaks}")


# ------------------------------------------------------------------------------------- CLI


def cli_parser(
    load_renderer: caption_cli.RendererLoader = caption_renderer,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slp")
    caption_cli.register(parser.add_subparsers(dest="command", required=True), load_renderer)
    return parser


def test_integrations_is_a_leaf_package() -> None:
    """integrations is handed its renderer and never imports the service, not even lazily
    (slp_pipeline imports integrations); only a script's ``__main__`` block wires the two."""
    for path in sorted(Path(caption_cli.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scripts = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n)]
        allowed = {id(node) for block in scripts for node in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and id(node) not in allowed:
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and id(node) not in allowed:
                names = [node.module or ""]
            else:
                continue
            assert all(n.split(".")[0] != "slp_pipeline" for n in names), (path, node.lineno)


def test_cli_with_missing_models_says_which(media: Path, tmp_path: Path) -> None:
    args = cli_parser().parse_args(
        [
            "caption",
            str(media / "talk.mp4"),
            "--captions",
            str(media / "talk.vtt"),
            "-o",
            str(tmp_path / "o.mp4"),
            "--models-dir",
            str(tmp_path / "nowhere" / "models"),
        ]
    )
    with pytest.raises(FileNotFoundError, match="model folders not found"):
        args.func(args)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("extra", [[], ["--captions-only"]])
def test_cli_caption(media: Path, tmp_path: Path, extra: list[str]) -> None:
    out, log = tmp_path / "o.mp4", tmp_path / "log.json"
    args = cli_parser(lambda signer, models: BoxRenderer()).parse_args(
        [
            "caption",
            str(media / "talk.mp4"),
            "--captions",
            str(media / "talk.srt"),
            "-o",
            str(out),
            "--timing-log",
            str(log),
            "--pip",
            "top-left",
            "--quiet",
            *extra,
        ]
    )
    assert args.func(args) == 0
    assert len(json.loads(log.read_text())) == 3
    assert abs(probe(out).num_frames - 80) <= 1
    assert (audio_packets(out) == []) == bool(extra)


# ------------------------------------------------------------------------------ watch folder


@IGNORE_TRIMS
def test_watch_folder_once(media: Path, tmp_path: Path) -> None:
    for name in ("talk.mp4", "talk.vtt"):
        (tmp_path / name).write_bytes((media / name).read_bytes())
    make_video(tmp_path / "broken.mp4", 0.4, audio=False)
    (tmp_path / "broken.srt").write_text("1\n00:00:02,000 --> 00:00:01,000\nx\n")
    failed: dict[Path, float] = {}
    assert watch_folder.process_once(tmp_path, BoxRenderer(), failed) == 1
    assert watch_folder.process_once(tmp_path, BoxRenderer(), failed) == 0  # up to date
    assert (tmp_path / "talk.signed.mp4").is_file()
    assert list(failed) == [tmp_path / "broken.mp4"]
    assert not (tmp_path / "broken.signed.mp4").exists()


# ---------------------------------------------------------------------------------- client


API_KEY = "k-123"
PNG = b"\x89PNG\r\n\x1a\n" + b"rest of a png"
JPEG = b"\xff\xd8\xff\xe0" + b"rest of a jpeg"


def sign_app(busy: int = 0) -> FastAPI:
    """A stand-in for the service: same routes and error shapes, bytes derived from the text."""
    app = FastAPI()
    state = {"busy": busy, "calls": 0}
    app.state.calls = state

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/signers")
    async def signers() -> dict[str, list]:
        return {"signers": [{"name": "default", "identity": 0}]}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    @app.post("/v1/signers", status_code=201, response_model=None)
    async def add_signer(request: Request, name: str) -> dict | JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "this request needs an API key"}, status_code=401)
        content_type = request.headers.get("content-type")
        if content_type not in ("image/png", "image/jpeg"):
            return JSONResponse({"error": f"unsupported {content_type}"}, status_code=415)
        state[f"signer:{name}"] = await request.body()
        return {"name": name, "content_type": content_type}

    @app.delete("/v1/signers/{name}", response_model=None)
    async def delete_signer(request: Request, name: str) -> dict | JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "this request needs an API key"}, status_code=401)
        del state[f"signer:{name}"]
        return {"deleted": name}

    @app.post("/v1/sign")
    async def sign(request: Request) -> Response:
        body = await request.json()
        state["calls"] += 1
        if state["busy"] > 0:
            state["busy"] -= 1
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "0"})
        if body.get("signer") != "default":
            return JSONResponse({"detail": f"unknown signer {body['signer']!r}"}, status_code=404)
        if not body["text"]:
            return JSONResponse({"error": "text is empty"}, status_code=422)
        data = (f"{body['language']}:{body['text']}:{body['format']}:".encode()) * 5000
        if body.get("stream"):
            chunks = (data[i : i + 7000] for i in range(0, len(data), 7000))
            return StreamingResponse(chunks, media_type="video/mp4")
        return Response(data, media_type="video/mp4")

    return app


def expected(text: str, language: str = "de", fmt: str = "mp4") -> bytes:
    return f"{language}:{text}:{fmt}:".encode() * 5000


def test_client_sign_signers_health(tmp_path: Path) -> None:
    app = sign_app()
    with TestClient(app) as http, SignClient("http://testserver", http_client=http) as client:
        assert client.health() == {"status": "ok"}
        assert client.signers() == [{"name": "default", "identity": 0}]
        assert client.sign("hallo welt") == expected("hallo welt")
        assert client.sign("你好", language="zh", format="pose-json") == expected(
            "你好", "zh", "pose-json"
        )
        path = client.sign_to_file("guten tag", tmp_path / "out" / "a.mp4")
        assert path.read_bytes() == expected("guten tag")
        with pytest.raises(SignAPIError) as info:
            client.sign("x", signer="nobody")
        assert info.value.status == 404 and info.value.detail == "unknown signer 'nobody'"
        with pytest.raises(SignAPIError, match="422.*text is empty"):
            client.sign_to_file("", tmp_path / "out" / "b.mp4")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4"]


def test_client_adds_and_deletes_signers_with_the_api_key(tmp_path: Path) -> None:
    app = sign_app()
    photo = tmp_path / "alice.jpg"
    photo.write_bytes(JPEG)
    with TestClient(app) as http:
        with pytest.raises(SignAPIError) as info:
            SignClient("http://testserver", http_client=http).add_signer("alice", PNG)
        assert info.value.status == 401
        client = SignClient("http://testserver", api_key=API_KEY, http_client=http)
        assert client.add_signer("alice", photo) == {"name": "alice", "content_type": "image/jpeg"}
        assert client.add_signer("bob", PNG)["content_type"] == "image/png"
        assert app.state.calls["signer:alice"] == JPEG
        assert client.sign("hallo") == expected("hallo")  # the key does not get in the way
        client.delete_signer("alice")
        assert "signer:alice" not in app.state.calls
        with pytest.raises(ValueError, match="not a PNG or JPEG image"):
            client.add_signer("carol", b"GIF89a...")


def test_client_retries_busy_service() -> None:
    app = sign_app(busy=2)
    with TestClient(app) as http:
        assert SignClient("http://testserver", http_client=http).sign("ja") == expected("ja")
        assert app.state.calls["calls"] == 3
        app.state.calls["busy"] = 5
        with pytest.raises(SignAPIError) as info:
            SignClient("http://testserver", http_client=http, retries=2).sign("ja")
        assert info.value.status == 503 and info.value.detail == "busy"
        assert app.state.calls["calls"] == 6


def test_async_client(tmp_path: Path) -> None:
    app = sign_app(busy=1)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport) as http,
            AsyncSignClient("http://test", http_client=http) as client,
        ):
            assert await client.health() == {"status": "ok"}
            assert (await client.signers())[0]["name"] == "default"
            assert await client.sign("hallo") == expected("hallo")  # after one 503
            path = await client.sign_to_file("tschüss", tmp_path / "a.mp4")
            assert path.read_bytes() == expected("tschüss")
            with pytest.raises(SignAPIError, match="unknown signer"):
                await client.sign("x", signer="nobody")
            with pytest.raises(SignAPIError, match="401.*needs an API key"):
                await client.add_signer("alice", PNG)
            keyed = AsyncSignClient("http://test", api_key=API_KEY, http_client=http)
            assert (await keyed.add_signer("alice", PNG))["content_type"] == "image/png"
            await keyed.delete_signer("alice")
            assert "signer:alice" not in app.state.calls

    asyncio.run(scenario())


def test_retry_delay() -> None:
    def busy(headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(503, headers=headers)

    assert retry_delay(busy({"Retry-After": "2"}), 0, 1.0, 30.0) == 2.0
    assert retry_delay(busy({}), 3, 0.5, 30.0) == 4.0
    assert retry_delay(busy({"Retry-After": "3600"}), 0, 1.0, 30.0) == 30.0
    assert retry_delay(busy({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0, 1.0, 30) == 0
    assert retry_delay(busy({"Retry-After": "soon"}), 1, 1.0, 30.0) == 2.0


def test_service_renderer_decodes_the_service_videos(tmp_path: Path) -> None:
    """watch_folder --server: clips come from the service as mp4 and are decoded to frames."""
    renderer = BoxRenderer(size=(32, 48))
    app = FastAPI()

    @app.post("/v1/sign")
    async def sign(request: Request) -> Response:
        text = (await request.json())["text"]
        path = write_video(tmp_path / "clip.mp4", np.concatenate(list(renderer.render(text, ""))))
        return Response(path.read_bytes(), media_type="video/mp4")

    with TestClient(app) as http:
        service = watch_folder.ServiceRenderer(SignClient("http://t", http_client=http), "anna")
        frames = np.concatenate(list(service.render("hallo", "de")))
    assert (service.fps, service.size) == (FPS, (32, 48))
    assert frames.shape == (10, 32, 48, 3) and frames.dtype == np.uint8
    assert service.idle(3).shape == (3, 32, 48, 3)
