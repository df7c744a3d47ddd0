"""Video and image-sequence I/O for the renderer, the datasets and the service.

Reading goes through PyAV (FFmpeg) for video files and Pillow for folders of images; both
yield ``(H, W, 3)`` uint8 RGB frames one at a time so that long clips never have to fit in
memory.  Every failure that comes from the media itself is raised as :class:`VideoError`
with the offending path in the message, because the pipeline processes thousands of files
and an FFmpeg error without a file name ("Invalid data found when processing input") is
useless in a log.

Writing produces H.264 / yuv420p MP4, the one combination every browser and player accepts.
Files are written to a hidden temporary file next to the target and renamed into place only
once complete, so a crash or an exception never leaves a truncated video where a reader (or
the HTTP service) could pick it up, and an existing file is only ever replaced by a complete
one.

Determinism of the H.264 output (measured with the libx264 bundled in PyAV 18.1):

* Encoding the same frames twice in the same process gave *different* bytes for some inputs
  (e.g. 40 frames of 160x120): with PyAV's defaults (slice threads, one per core), with
  ``threads=1`` and with 4 frame threads alike -- so ``threads=1`` does not help.  The
  variation comes from x264's CPU-specific assembly (``asm=0`` also removed it);
  ``x264-params cpu-independent=1``, which swaps the CPU-dependent routines for portable
  ones, made every repeated encode byte-identical (15/15 runs on three inputs).
* The thread count changes the bitstream (slice count, or frame-thread motion search
  limits) and is written into the stream's SEI, so a core-count dependent default would give
  different files on different machines.

Hence the writer uses ``cpu-independent=1`` and a *fixed* number of frame threads
(:data:`ENCODER_THREADS`) instead of ``threads=1``: output is byte-identical run to run and
across machines with the same FFmpeg/x264 build, while still using several cores.  The MP4
muxer adds no timestamps, so identical packets give identical files.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import uuid
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.stream import Disposition
from av.video.reformatter import (
    ColorPrimaries,
    ColorRange,
    Colorspace,
    ColorTrc,
    Interpolation,
    VideoReformatter,
)
from PIL import Image, ImageOps

__all__ = [
    "ENCODER_THREADS",
    "IMAGE_SUFFIXES",
    "VideoError",
    "VideoInfo",
    "VideoWriter",
    "contact_sheet",
    "iter_frames",
    "probe",
    "read_video",
    "write_gif",
    "write_png_strip",
    "write_video",
]

PathLike = str | os.PathLike[str]
Size = int | tuple[int, int] | None

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""Suffixes (case-insensitive) that count as frames when ``path`` is a directory."""

ENCODER_THREADS = 4
"""Fixed x264 frame-thread count: a constant (not "auto") keeps the bytes machine-independent."""

_DEFAULT_FPS = 25.0
# Frames converted per step when a whole (T, H, W, 3) array is written: bounds the temporary
# copy made for float input instead of doubling the memory of a long clip.
_WRITE_CHUNK = 32
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow", "placebo")  # fmt: skip
# AVCOL_SPC_BT709 from libavutil/pixfmt.h; PyAV exposes the codec's colorspace only as an int.
_AVCOL_SPC_BT709 = 1
# Downscale in integer steps first when shrinking by >= 3x: as sharp as plain LANCZOS but
# much cheaper for large reductions (e.g. 1080p camera footage to 256x256 training frames).
_REDUCING_GAP = 3.0
# swscale's default yuv420p -> rgb24 fast path upsamples chroma by pixel repetition with
# table-based rounding: measured on smooth test content it darkens every channel by ~1.2 levels
# and doubles the round-trip error (2.1 vs 0.5 mean abs, conversion alone).  Full chroma
# interpolation with accurate rounding removes the bias; it costs ~3 ms per 720p frame, small
# next to H.264 decoding.  Used for both directions so that write -> read is symmetric.
_SWS_FLAGS = (
    Interpolation.BILINEAR
    | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)


class VideoError(ValueError):
    """Unreadable, corrupt or unsupported media; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """Stream properties of a video file or image folder.

    ``num_frames`` is the container's frame count, or an estimate from duration x fps when the
    container does not store one (WebM/MKV); it can be off by a frame or two, so use it for
    progress bars and pre-allocation hints, not for indexing.
    """

    width: int
    height: int
    fps: float
    num_frames: int
    codec: str


# --------------------------------------------------------------------------- reading
def probe(path: PathLike) -> VideoInfo:
    """Read the size, frame rate, frame count and codec without decoding the whole video.

    For an image folder, ``fps`` is 25.0 (images carry no timing), ``num_frames`` is the
    number of images and ``codec`` is the format of the first image (``"png"``/``"jpeg"``).
    A video whose container declares no frame rate also reports 25.0.
    """
    path = _existing(path)
    if path.is_dir():
        images = _list_images(path)
        first = _load_image(images[0])
        codec = "png" if images[0].suffix.lower() == ".png" else "jpeg"
        return VideoInfo(first.shape[1], first.shape[0], _DEFAULT_FPS, len(images), codec)
    return _probe_file(path, _DEFAULT_FPS)


def iter_frames(path: PathLike, size: Size = None) -> Generator[np.ndarray, None, None]:
    """Yield ``(H, W, 3)`` uint8 RGB frames of a video file or image folder, one at a time.

    ``size`` is ``None`` (native), ``S`` (resize to SxS) or ``(width, height)``; resizing uses
    Pillow's LANCZOS filter so that downscaled training frames are not aliased.  Video frames
    are returned at the native rate (never dropped or duplicated).

    Argument errors and a missing path are raised immediately; media errors (:class:`VideoError`)
    when iteration reaches them.  Images in a folder must all have the same size unless
    ``size`` is given.
    """
    path = _existing(path)
    target = _normalize_size(size)
    if path.is_dir():
        return _iter_images(_list_images(path), target)
    return _iter_video(path, target)


def read_video(
    path: PathLike, max_frames: int | None = None, size: Size = None, fps: float = 25.0
) -> tuple[np.ndarray, float]:
    """Decode up to ``max_frames`` frames into a ``(T, H, W, 3)`` uint8 array.

    Returns the frames and the frame rate: the video's own rate, or ``fps`` for image folders
    (and for videos whose container declares no rate).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    path = _existing(path)
    _check_fps(fps)
    frames_iter = iter_frames(path, size=size)
    rate = fps if path.is_dir() else _probe_file(path, fps).fps
    # closing(): stop the decoder and release the file as soon as max_frames is reached.
    with closing(frames_iter):
        frames = list(islice(frames_iter, max_frames))
    return np.stack(frames), rate


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    return path


def _normalize_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        dims = (int(size), int(size))
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        dims = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"size must be None, an int or a (width, height) pair, got {size!r}")
    if min(dims) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return dims


def _check_fps(fps: float) -> None:
    valid = isinstance(fps, numbers.Real) and not isinstance(fps, bool)
    if not (valid and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")


def _resize(frame: np.ndarray, target: tuple[int, int] | None) -> np.ndarray:
    if target is None or target == (frame.shape[1], frame.shape[0]):
        return frame
    image = Image.fromarray(frame)
    # np.array, not np.asarray: arrays viewing Pillow's buffer are read-only.
    return np.array(image.resize(target, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP))


def _natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key putting ``img2`` before ``img10``; the raw name breaks ties (``01`` vs ``1``)."""
    parts = re.split(r"(\d+)", name.casefold())
    # re.split with one capture group alternates text/number, so element types line up by index.
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _list_images(folder: Path) -> list[Path]:
    # Hidden files are skipped: macOS "._frame1.png" resource forks have image suffixes too.
    images = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not images:
        suffixes = "/".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise VideoError(f"{folder}: directory contains no {suffixes} images")
    return sorted(images, key=lambda p: _natural_key(p.name))


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            # Honour the EXIF orientation so phone/camera stills come out upright.
            return np.array(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, Image.DecompressionBombError) as exc:
        raise VideoError(f"{path}: unreadable image ({_one_line(exc)})") from exc


def _iter_images(
    images: list[Path], target: tuple[int, int] | None
) -> Generator[np.ndarray, None, None]:
    first_shape = None
    for image_path in images:
        frame = _resize(_load_image(image_path), target)
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise VideoError(
                f"{image_path}: image is {frame.shape[1]}x{frame.shape[0]} but the first image is "
                f"{first_shape[1]}x{first_shape[0]}; pass size= to resize all frames"
            )
        yield frame


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: cannot open as video ({_one_line(exc)})") from exc


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    # Cover art in audio files is exposed as a one-frame "video" stream; it is not a video.
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(f"{path}: no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(f"{path}: unsupported video codec (no decoder in this FFmpeg build)")
    return stream


def _probe_file(path: Path, default_fps: float) -> VideoInfo:
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else default_fps
        num_frames = stream.frames
        if not num_frames:
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            num_frames = round(seconds * fps)
        ctx = stream.codec_context
        return VideoInfo(ctx.width, ctx.height, fps, int(num_frames), ctx.name)


def _iter_video(
    path: Path, target: tuple[int, int] | None
) -> Generator[np.ndarray, None, None]:
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        packets = container.demux(stream)
        count = 0
        while True:
            try:
                packet = next(packets, None)
            except av.FFmpegError as exc:
                raise VideoError(
                    f"{path}: read error after {count} frames ({_one_line(exc)})"
                ) from exc
            if packet is None:
                break
            # A packet cut short by the end of the file is only flagged, and with frame
            # threading the decoder drops it silently; without this check a truncated
            # download would read as a shorter, valid clip.
            if packet.is_corrupt:
                raise VideoError(f"{path}: truncated or corrupt data after {count} frames")
            try:
                # to_ndarray handles every pixel format (yuvj, gray, rgba, 10-bit, pal8 ...)
                # and applies the colour matrix/range the stream is tagged with.
                rgb_frames = [
                    frame.to_ndarray(format="rgb24", interpolation=_SWS_FLAGS)
                    for frame in packet.decode()
                ]
            except (av.FFmpegError, ValueError) as exc:
                raise VideoError(
                    f"{path}: decoding failed after {count} frames ({_one_line(exc)})"
                ) from exc
            for rgb in rgb_frames:
                count += 1
                yield _resize(rgb, target)
        if count == 0:
            raise VideoError(f"{path}: video stream contains no decodable frames")


# --------------------------------------------------------------------------- frame validation
def _as_uint8_batch(frames: np.ndarray) -> np.ndarray:
    """Validate ``(H, W, 3)`` / ``(N, H, W, 3)`` frames and return them as ``(N, H, W, 3)`` uint8.

    Float frames are taken to be in [0, 1] (the renderer's output range) and are rounded and
    clipped rather than truncated, which would darken everything by half a level on average.
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(
            f"frames must be a numpy.ndarray, got {type(frames).__module__}.{type(frames).__name__}"
        )
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (H, W, 3) or (N, H, W, 3), got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all():
            raise ValueError("float frames contain NaN or infinity")
        return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    raise TypeError(f"frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")


def _iter_batches(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield uint8 ``(N, H, W, 3)`` batches from an array or an iterable of frames/batches."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            yield _as_uint8_batch(frames)
            return
        for start in range(0, max(len(frames), 1), _WRITE_CHUNK):
            yield _as_uint8_batch(frames[start : start + _WRITE_CHUNK])
        return
    if not isinstance(frames, Iterable) or isinstance(frames, (str, bytes)):
        raise TypeError(f"frames must be an array or an iterable of arrays, got {type(frames)}")
    for item in frames:
        yield _as_uint8_batch(item)


# --------------------------------------------------------------------------- writing
def _temp_path(path: Path) -> Path:
    # Same directory as the target so the final os.replace is an atomic rename, never a copy.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_target(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` on success and is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class VideoWriter:
    """Streaming H.264/MP4 writer: frames are encoded as they arrive, memory stays constant.

    The first frame fixes the output size; odd widths/heights are padded to even by repeating
    the last row/column, since yuv420p cannot represent odd dimensions.  RGB is converted with
    the BT.709 matrix (limited range) and the stream is tagged accordingly: players disagree on
    untagged video (BT.601 vs BT.709), tagged video looks the same everywhere, including in
    :func:`read_video`.

    Use as a context manager: on normal exit the file is finalized and renamed into place; if
    an exception escapes the block, the temporary file is deleted, an existing file at
    ``path`` is left untouched and the exception propagates.  Without ``with``, call
    :meth:`close` or :meth:`abort`.
    """

    def __init__(
        self, path: PathLike, fps: float = 25.0, crf: int = 18, preset: str = "medium"
    ) -> None:
        _check_fps(fps)
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int in 0..51, got {crf!r}")
        if preset not in _X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(_X264_PRESETS)}, got {preset!r}")
        self._path = Path(path)
        self._rate = Fraction(fps).limit_denominator(1001)
        self._crf = int(crf)
        self._preset = preset
        self._tmp = _temp_path(self._path)
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._reformatter = VideoReformatter()
        self._input_hw: tuple[int, int] | None = None
        self._frames_written = 0
        self._state = "open"  # -> "closed" (file in place) or "aborted" (nothing written)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def frames_written(self) -> int:
        return self._frames_written

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, height: int, width: int) -> None:
        # Opened lazily because the stream size is only known from the first frame; a writer
        # that never receives a frame therefore never creates a file.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # faststart moves the index to the front so browsers can start playback before
            # the whole file has been downloaded from the service.
            self._container = av.open(
                str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"}
            )
            stream = self._container.add_stream("libx264", rate=self._rate)
        except (av.FFmpegError, ValueError) as exc:
            self.abort()
            raise VideoError(f"{self._path}: cannot create H.264 video ({_one_line(exc)})") from exc
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.thread_type = "FRAME"
        ctx.thread_count = ENCODER_THREADS
        ctx.colorspace = _AVCOL_SPC_BT709
        ctx.color_primaries = ColorPrimaries.BT709
        ctx.color_trc = ColorTrc.BT709
        ctx.color_range = ColorRange.MPEG
        stream.options = {
            "crf": str(self._crf),
            "preset": self._preset,
            "x264-params": "cpu-independent=1",
        }
        self._stream = stream
        self._input_hw = (height, width)

    def write(self, frames: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` frame or a ``(N, H, W, 3)`` batch (uint8, or float in [0,1])."""
        if self._state != "open":
            raise ValueError(f"{self._path}: VideoWriter is already {self._state}")
        batch = _as_uint8_batch(frames)
        if batch.shape[0] == 0:
            return
        height, width = batch.shape[1:3]
        if self._input_hw is None:
            self._open(height, width)
        elif (height, width) != self._input_hw:
            h0, w0 = self._input_hw
            raise ValueError(
                f"{self._path}: frame size {width}x{height} differs from the first frame's "
                f"{w0}x{h0}"
            )
        if height % 2 or width % 2:
            batch = np.pad(batch, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        for frame in batch:
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            yuv = self._reformatter.reformat(
                rgb,
                format="yuv420p",
                dst_colorspace=Colorspace.ITU709,
                dst_color_range="MPEG",
                interpolation=_SWS_FLAGS,
            )
            yuv.pts = self._frames_written
            self._encode(yuv)
            self._frames_written += 1

    def _encode(self, frame: av.VideoFrame | None) -> None:
        assert self._container is not None and self._stream is not None
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise VideoError(f"{self._path}: H.264 encoding failed ({_one_line(exc)})") from exc

    def close(self) -> Path:
        """Flush the encoder, finalize the MP4 and atomically move it to ``path``.

        Raises ``ValueError`` (and writes nothing) if no frame was written, since an MP4
        without a video track is not a playable file.
        """
        if self._state == "closed":
            return self._path
        if self._state == "aborted":
            raise ValueError(f"{self._path}: VideoWriter was aborted")
        if self._container is None:
            self.abort()
            raise ValueError(f"{self._path}: no frames were written")
        try:
            self._encode(None)
            self._container.close()
            os.replace(self._tmp, self._path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self._path

    def abort(self) -> None:
        """Discard everything written so far; ``path`` itself is never touched."""
        if self._state == "closed":
            return
        self._state = "aborted"
        if self._container is not None:
            # The container may be half-written or already closed; its errors are moot.
            with suppress(Exception):
                self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)


def write_video(
    path: PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25.0,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Write frames to an H.264 MP4 atomically; see :class:`VideoWriter` for the details.

    ``frames`` is a ``(T, H, W, 3)`` array or any iterable of ``(H, W, 3)`` / ``(N, H, W, 3)``
    arrays (e.g. a generator from the renderer), consumed lazily.
    """
    with VideoWriter(path, fps=fps, crf=crf, preset=preset) as writer:
        for batch in _iter_batches(frames):
            writer.write(batch)
    return writer.path


def write_gif(
    path: PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 12.5,
    max_size: int | None = None,
) -> Path:
    """Write a looping animated GIF preview (for READMEs, notebooks, issue reports).

    GIF delays are whole centiseconds, so the rate is rounded to 100/k fps (12.5 and 25 are
    exact); delays under 2 cs are raised to 2 because browsers slow such GIFs down to 10 fps.
    ``max_size`` bounds the longer side.  Pillow keeps all frames in memory while encoding,
    so this is meant for short, small previews, not full-resolution video.
    """
    _check_fps(fps)
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
    delay_ms = max(2, round(100.0 / fps)) * 10

    def images() -> Iterator[Image.Image]:
        for batch in _iter_batches(frames):
            for frame in batch:
                image = Image.fromarray(frame)
                if max_size is not None and max(image.size) > max_size:
                    scale = max_size / max(image.size)
                    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                    image = image.resize(new, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
                yield image

    stream = images()
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    with atomic_target(path) as tmp:
        first.save(
            tmp, format="GIF", save_all=True, append_images=stream, duration=delay_ms, loop=0
        )
    return Path(path)


def contact_sheet(frames: np.ndarray, cols: int = 8, num: int | None = None) -> np.ndarray:
    """Tile frames into one ``(rows*H, cols*W, 3)`` uint8 image; empty cells are black.

    With ``num``, that many frames are picked evenly from first to last (fewer if the clip is
    shorter), which gives a one-glance summary of a whole sign sequence.
    """
    if num is not None and num < 1:
        raise ValueError(f"num must be >= 1 or None, got {num}")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    # Sample before converting so a long float clip is not converted in full.
    if isinstance(frames, np.ndarray) and frames.ndim == 4 and num is not None:
        frames = frames[np.linspace(0, len(frames) - 1, min(num, len(frames))).round().astype(int)]
    batch = _as_uint8_batch(frames)
    count, height, width = batch.shape[:3]
    if count == 0:
        raise ValueError("contact_sheet needs at least one frame")
    cols = min(cols, count)
    rows = -(-count // cols)
    grid = np.zeros((rows * cols, height, width, 3), dtype=np.uint8)
    grid[:count] = batch
    return (
        grid.reshape(rows, cols, height, width, 3)
        .swapaxes(1, 2)
        .reshape(rows * height, cols * width, 3)
    )


def write_png_strip(path: PathLike, frames: np.ndarray, num: int = 8) -> Path:
    """Save ``num`` evenly spaced frames side by side as one PNG (a static clip summary)."""
    strip = contact_sheet(frames, cols=num, num=num)
    with atomic_target(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    return Path(path)
