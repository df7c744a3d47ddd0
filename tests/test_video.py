"""Video / image-sequence I/O (pgmm.video): round trips, atomic writes, previews, clear errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pgmm import video as V


def moving_frames(t: int = 24, h: int = 64, w: int = 96) -> np.ndarray:
    """Smooth colour gradients drifting over time plus a moving square (realistic for H.264)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, ..., 0] = 128 + 90 * np.sin((x + 2 * i) / 15)
        frames[i, ..., 1] = 128 + 90 * np.cos((y - i) / 11)
        frames[i, ..., 2] = 128 + 60 * np.sin((x + y + 3 * i) / 20)
        frames[i, 10:26, 5 + i : 21 + i] = (220, 200, 60)
    return frames


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def solid_frames(values: list[int], h: int = 8, w: int = 12) -> np.ndarray:
    """One flat grey frame per value, so a frame's identity survives any resampling."""
    return np.stack([np.full((h, w, 3), v, dtype=np.uint8) for v in values])


def write_with_pyav(
    path: Path, frames: np.ndarray, codec: str, pix_fmt: str = "yuv420p", fps: int = 25
) -> None:
    """Encode with PyAV directly, to read formats that pgmm.video itself never writes."""
    if codec not in av.codecs_available:
        pytest.skip(f"codec {codec} not in this PyAV build")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000  # the default (200 kb/s) blurs small test frames a lot
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------- mp4 round trip


def test_mp4_round_trip(tmp_path: Path) -> None:
    frames = moving_frames()
    out = V.write_video(tmp_path / "clip.mp4", frames)
    assert out == tmp_path / "clip.mp4"
    assert files_in(tmp_path) == ["clip.mp4"]  # no temp file left behind

    back, fps = V.read_video(out)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == 25.0
    assert mean_abs_error(back, frames) < 3.0

    streamed = list(V.iter_frames(out))
    assert len(streamed) == len(frames)
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in streamed)
    np.testing.assert_array_equal(np.stack(streamed), back)


@pytest.mark.parametrize("fps", [25.0, 12.5, 30000 / 1001])
def test_probe_reports_written_stream(tmp_path: Path, fps: float) -> None:
    path = V.write_video(tmp_path / "clip.mp4", moving_frames(t=10), fps=fps)
    info = V.probe(path)
    assert info == V.VideoInfo(
        width=96, height=64, fps=pytest.approx(fps), num_frames=10, codec="h264"
    )
    assert V.read_video(path)[1] == pytest.approx(fps)


def test_read_video_max_frames_and_resize(tmp_path: Path) -> None:
    frames = moving_frames()
    path = V.write_video(tmp_path / "clip.mp4", frames)
    back, _ = V.read_video(path, max_frames=5, size=(48, 32))
    assert back.shape == (5, 32, 48, 3)
    assert V.read_video(path, size=40)[0].shape == (24, 40, 40, 3)
    # Antialiased downscaling keeps the mean colour of the content.
    assert mean_abs_error(back.mean(axis=(1, 2)), frames[:5].mean(axis=(1, 2))) < 4.0


def test_odd_size_is_padded_to_even_by_edge_replication(tmp_path: Path) -> None:
    frames = moving_frames(t=6, h=65, w=95)
    path = V.write_video(tmp_path / "odd.mp4", frames)
    info = V.probe(path)
    assert (info.width, info.height) == (96, 66)
    back, _ = V.read_video(path)
    assert back.shape == (6, 66, 96, 3)
    assert mean_abs_error(back[:, :65, :95], frames) < 3.0
    # The padding repeats the last row/column instead of adding a black border.
    assert mean_abs_error(back[:, 65], back[:, 64]) < 3.0
    assert mean_abs_error(back[:, :, 95], back[:, :, 94]) < 3.0


def test_float_frames_are_rounded_and_clipped(tmp_path: Path) -> None:
    frames = moving_frames(t=6)
    as_float = frames.astype(np.float32) / 255.0
    as_float[:, 0, 0] = [1.5, -0.5, 1.0]  # out-of-range values clip instead of wrapping
    expected = frames.copy()
    expected[:, 0, 0] = [255, 0, 255]
    back, _ = V.read_video(V.write_video(tmp_path / "f.mp4", as_float))
    assert mean_abs_error(back, expected) < 3.0


def test_write_video_is_deterministic(tmp_path: Path) -> None:
    # 160x120 x 40 frames gave different bytes on repeated encodes before cpu-independent=1.
    frames = moving_frames(t=40, h=120, w=160)
    blobs = {V.write_video(tmp_path / f"{i}.mp4", frames).read_bytes() for i in range(3)}
    assert len(blobs) == 1


def test_write_video_accepts_iterables_of_frames_and_batches(tmp_path: Path) -> None:
    frames = moving_frames(t=10)
    chunks = iter([frames[0], frames[1:4], frames[4], frames[5:10]])  # consumed lazily
    back, _ = V.read_video(V.write_video(tmp_path / "gen.mp4", chunks))
    assert back.shape == frames.shape
    assert mean_abs_error(back, frames) < 3.0


# --------------------------------------------------------------------------- streaming writer


def test_streaming_writer_writes_chunks(tmp_path: Path) -> None:
    frames = moving_frames(t=20)
    target = tmp_path / "sub" / "stream.mp4"  # missing parent folders are created
    with V.VideoWriter(target, fps=12.5) as writer:
        writer.write(frames[0])
        for start in range(1, 20, 6):
            writer.write(frames[start : start + 6])
            assert writer.frames_written == min(start + 6, 20)
        assert files_in(target.parent) != ["stream.mp4"]  # still a hidden temp file
    assert writer.frames_written == 20
    assert files_in(target.parent) == ["stream.mp4"]
    assert writer.close() == target  # closing again is a no-op
    back, fps = V.read_video(target)
    assert back.shape == frames.shape and fps == 12.5
    assert mean_abs_error(back, frames) < 3.0


def test_exception_in_writer_block_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous render")
    with pytest.raises(RuntimeError, match="render crashed"), V.VideoWriter(target) as writer:
        writer.write(moving_frames(t=5))
        raise RuntimeError("render crashed")
    assert target.read_bytes() == b"previous render"
    assert files_in(tmp_path) == ["out.mp4"]


def test_exception_in_writer_block_leaves_nothing(tmp_path: Path) -> None:
    frames = moving_frames(t=4)
    with (
        pytest.raises(ValueError, match="differs from the first frame"),
        V.VideoWriter(tmp_path / "out.mp4") as writer,
    ):
        writer.write(frames)
        writer.write(frames[:, :32])
    assert files_in(tmp_path) == []


def test_writer_rejects_empty_output_and_use_after_close(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        V.write_video(tmp_path / "empty.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        V.write_video(tmp_path / "empty.mp4", iter([]))
    assert files_in(tmp_path) == []

    writer = V.VideoWriter(tmp_path / "a.mp4")
    writer.write(moving_frames(t=2))
    writer.close()
    with pytest.raises(ValueError, match="already closed"):
        writer.write(moving_frames(t=1))

    aborted = V.VideoWriter(tmp_path / "b.mp4")
    aborted.write(moving_frames(t=2))
    aborted.abort()
    with pytest.raises(ValueError, match="aborted"):
        aborted.close()
    assert files_in(tmp_path) == ["a.mp4"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fps": 0}, "fps"), ({"crf": 60}, "crf"), ({"preset": "fastest"}, "preset")],
)
def test_writer_rejects_bad_settings(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        V.VideoWriter(tmp_path / "a.mp4", **kwargs)


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.zeros((2, 8, 8), np.uint8), ValueError, r"shape \(H, W, 3\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"shape \(H, W, 3\)"),
        (np.zeros((2, 8, 8, 3), np.int32), TypeError, "dtype int32"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), ValueError, "NaN"),
        ([[[0, 0, 0]]], TypeError, "numpy.ndarray, got builtins.list"),
        (42, TypeError, "iterable"),
    ],
)
def test_write_rejects_bad_frames(tmp_path: Path, frames: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        V.write_video(tmp_path / "bad.mp4", frames)  # type: ignore[arg-type]
    assert files_in(tmp_path) == []


# ------------------------------------------------------------------------------ other formats


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "max_error"),
    [
        ("clip.avi", "mpeg4", "yuv420p", 6.0),
        ("clip.webm", "libvpx-vp9", "yuv420p", 4.0),
        ("clip.mkv", "libx264", "yuv444p", 3.0),
        ("clip.mov", "libx264", "yuv420p10le", 3.0),
        ("clip.mp4", "libx264", "yuvj420p", 3.0),
        ("gray.mkv", "ffv1", "gray", 2.0),
    ],
)
def test_reads_other_containers_and_pixel_formats(
    tmp_path: Path, name: str, codec: str, pix_fmt: str, max_error: float
) -> None:
    frames = moving_frames(t=12)
    if pix_fmt == "gray":
        frames = np.repeat(frames.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    path = tmp_path / name
    write_with_pyav(path, frames, codec, pix_fmt)
    back = np.stack(list(V.iter_frames(path)))
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert mean_abs_error(back, frames) < max_error
    info = V.probe(path)
    assert (info.width, info.height, info.fps) == (96, 64, 25.0)
    assert abs(info.num_frames - 12) <= 1  # WebM/MKV only give an estimate


# ------------------------------------------------------------------------------ image folders


def test_image_folder_natural_order(tmp_path: Path) -> None:
    order = [1, 2, 10, 11, 100]  # lexicographic order would be 1, 10, 100, 11, 2
    for rank, number in enumerate(order):
        Image.fromarray(solid_frames([rank * 40])[0]).save(tmp_path / f"images{number}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    Image.fromarray(solid_frames([255])[0]).save(tmp_path / "._images3.png")  # macOS junk

    frames, fps = V.read_video(tmp_path, fps=10.0)
    assert fps == 10.0
    assert frames.shape == (5, 8, 12, 3)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 40, 80, 120, 160]
    assert V.probe(tmp_path) == V.VideoInfo(12, 8, 25.0, 5, "png")


def test_image_folder_resize_and_mixed_formats(tmp_path: Path) -> None:
    Image.fromarray(solid_frames([200], h=30, w=40)[0]).save(tmp_path / "f1.jpg", quality=95)
    Image.fromarray(solid_frames([100], h=60, w=80)[0]).save(tmp_path / "f2.PNG")
    with pytest.raises(V.VideoError, match=r"f2\.PNG.*80x60.*40x30"):
        V.read_video(tmp_path)
    frames, _ = V.read_video(tmp_path, size=(20, 10))
    assert frames.shape == (2, 10, 20, 3)
    assert abs(int(frames[0, 5, 10, 0]) - 200) <= 2 and int(frames[1, 5, 10, 0]) == 100
    assert V.read_video(tmp_path, size=16)[0].shape == (2, 16, 16, 3)


# ----------------------------------------------------------------------------------- previews


def test_write_gif(tmp_path: Path) -> None:
    frames = moving_frames(t=10)
    path = V.write_gif(tmp_path / "preview.gif", frames, max_size=48)
    assert files_in(tmp_path) == ["preview.gif"]
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (48, 32)
        assert gif.n_frames == 10
        assert gif.info["duration"] == 80  # 12.5 fps
        assert gif.info["loop"] == 0
    assert len(list(V.iter_frames(path))) == 10
    # Streaming input (a generator of single frames) is accepted too.
    V.write_gif(tmp_path / "gen.gif", (f for f in frames), fps=25.0)
    with Image.open(tmp_path / "gen.gif") as gif:
        assert gif.size == (96, 64) and gif.info["duration"] == 40


def test_write_png_strip_samples_evenly(tmp_path: Path) -> None:
    frames = solid_frames(list(range(0, 200, 10)))  # 20 frames, value = 10 * index
    path = V.write_png_strip(tmp_path / "strip.png", frames, num=5)
    strip = np.asarray(Image.open(path))
    assert strip.shape == (8, 5 * 12, 3)
    assert [int(strip[0, 12 * i, 0]) for i in range(5)] == [0, 50, 100, 140, 190]
    short = V.write_png_strip(tmp_path / "short.png", frames[:3], num=8)
    assert Image.open(short).size == (3 * 12, 8)  # fewer frames than num: all of them


def test_contact_sheet_grid() -> None:
    frames = solid_frames([10, 20, 30, 40, 50])
    sheet = V.contact_sheet(frames, cols=2)
    assert sheet.shape == (3 * 8, 2 * 12, 3) and sheet.dtype == np.uint8
    cells = [int(sheet[8 * r, 12 * c, 0]) for r in range(3) for c in range(2)]
    assert cells == [10, 20, 30, 40, 50, 0]  # unused cell stays black
    assert V.contact_sheet(frames, cols=8).shape == (8, 5 * 12, 3)  # no empty columns
    assert V.contact_sheet(frames, num=3).shape == (8, 3 * 12, 3)
    sheet = V.contact_sheet(frames.astype(np.float64) / 255.0, cols=5)
    assert int(sheet[0, 12, 0]) == 20
    with pytest.raises(ValueError, match="num"):
        V.contact_sheet(frames, num=0)


# ------------------------------------------------------------------------------------- errors


def test_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    for call in (V.probe, V.read_video, V.iter_frames):  # iter_frames checks before iterating
        with pytest.raises(FileNotFoundError, match="nope.mp4"):
            call(missing)


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(0).bytes(4096), b"this is a text file, not a video\n" * 20, b""],
    ids=["random-bytes", "text", "empty"],
)
def test_corrupt_file_raises_video_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    for call in (V.probe, V.read_video, lambda p: list(V.iter_frames(p))):
        with pytest.raises(V.VideoError) as excinfo:
            call(path)
        message = str(excinfo.value)
        assert str(path) in message and "\n" not in message


def test_truncated_mp4_raises_video_error(tmp_path: Path) -> None:
    good = V.write_video(tmp_path / "good.mp4", moving_frames(t=30))
    blob = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(blob[: int(len(blob) * 0.7)])
    with pytest.raises(V.VideoError, match=r"cut\.mp4.*truncated"):
        V.read_video(cut)


def test_audio_only_file_raises_video_error(tmp_path: Path) -> None:
    path = tmp_path / "speech.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(5):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(V.VideoError, match=r"speech\.mp4: no video stream \(streams: audio\)"):
        V.probe(path)
    with pytest.raises(V.VideoError, match="no video stream"):
        V.read_video(path)


def test_folder_without_images_raises_video_error(tmp_path: Path) -> None:
    with pytest.raises(V.VideoError, match="no .*images"):
        V.read_video(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(V.VideoError, match=str(tmp_path)):
        V.probe(tmp_path)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(V.VideoError, match=r"b\.png: unreadable image"):
        V.read_video(tmp_path)


@pytest.mark.parametrize("size", [0, (10,), (10, -1), "64", 2.5])
def test_bad_size_argument(tmp_path: Path, size: object) -> None:
    V.write_video(tmp_path / "a.mp4", moving_frames(t=2))
    with pytest.raises((TypeError, ValueError), match="size"):
        V.iter_frames(tmp_path / "a.mp4", size=size)  # type: ignore[arg-type]
