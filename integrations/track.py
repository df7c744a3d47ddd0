"""Time-aligned sign-language track for captioned video: a standalone sign video or a
picture-in-picture (PiP) composite, both streamed in constant memory.

Timing rules (all decisions are made in frames of the *output* rate, so "starts within one
frame of the cue" holds by construction):

* Each cue's clip starts on the output frame nearest to the cue's start.
* The clip, rendered at natural signing speed, is resampled by frame index to last as long as
  the cue, but never faster than :data:`MAX_SPEED` (1.25x) or slower than :data:`MIN_SPEED`
  (0.8x): beyond that signing becomes hard to read or visibly slow-motion.  Renderer and
  output frame rates may differ; the same index resampling converts between them.
* A clip still *shorter* than its cue is followed by the signer's idle pose (``padded``).
  A clip still *longer* runs on into the gap after its cue (``overrun``) and is cut off only
  where the next cue starts or the video ends (``trimmed``, with a :class:`TrackWarning`):
  the next sign must start on time, and a sign cut at its end loses less than a late one.
* Gaps between clips show the signer at rest (:meth:`SignRenderer.idle`).
* Cues starting at or after the end of the video are dropped, cues ending after it are cut
  at its end, both with a warning.

Memory: one cue's clip is held at a time (it must be complete before it can be retimed), and
the renderer is not asked for more frames than the cue's slot can show, so memory is bounded
by the longest cue, never by the video.  Idle frames are requested in chunks of
:data:`IDLE_CHUNK` frames.

Outputs are written to a temporary file next to the target and renamed into place when
complete; on any error nothing is left behind and an existing file is untouched.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import uuid
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar

import av
import numpy as np
from PIL import Image

from integrations.captions import Cue
from pgmm.console import progress as progress_bar
from pgmm.video import VideoError, VideoWriter, atomic_target, iter_frames, probe

__all__ = [
    "CORNERS",
    "IDLE_CHUNK",
    "MAX_SPEED",
    "MIN_SPEED",
    "SignRenderer",
    "TrackWarning",
    "render_pip",
    "render_sign_track",
    "sign_track",
]

MIN_SPEED = 0.8
MAX_SPEED = 1.25
IDLE_CHUNK = 64
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
# Output container format by file extension; the audio is copied, so the container has to
# accept the source's audio codec as is (.mkv takes nearly any).
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

TimingLog = list[dict[str, Any]]


class SignRenderer(Protocol):
    """What the track needs from a signer: clips for text, and frames of the signer at rest."""

    fps: float
    size: tuple[int, int]  # (height, width) of the frames

    def render(self, text: str, language: str) -> Iterator[np.ndarray]:
        """uint8 ``(T, H, W, 3)`` chunks signing ``text`` at natural speed."""
        ...

    def idle(self, num_frames: int) -> np.ndarray:
        """uint8 ``(num_frames, H, W, 3)``: the signer at rest."""
        ...


class TrackWarning(UserWarning):
    """A timing compromise: a trimmed clip, a dropped cue, captions longer than the video."""


# --------------------------------------------------------------------------- timing
def sign_track(
    cues: Sequence[Cue],
    renderer: SignRenderer,
    fps: float,
    num_frames: int,
    log: TimingLog,
    progress: bool = False,
) -> Generator[np.ndarray, None, None]:
    """Yield the sign track as uint8 ``(n, H, W, 3)`` chunks, ``num_frames`` frames at ``fps``.

    ``cues`` must be ordered and start on distinct instants, as ``captions.load_captions`` returns
    them.  One entry per cue is added to ``log`` and filled in as its clip is placed: ``cue``,
    ``cue_start_s``, ``cue_end_s``, ``start_frame`` (first output frame of the clip),
    ``start_s``, ``frames`` (output frames of the clip), ``natural_frames`` (renderer frames
    used; for a trimmed clip only those that could be shown), ``speed`` (1.0 = natural
    signing speed) and ``action``: ``fit``, ``padded``, ``overrun``, ``trimmed`` or
    ``dropped``.  All entries are added up front with action ``pending``; a consumer that
    stops early (the source video was shorter than probed) leaves the rest pending.
    """
    ratio = fps / renderer.fps  # output frames per renderer frame
    starts = [round(cue.start_s * fps) for cue in cues]
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError("cues must be sorted by start time (integrations.captions sorts them)")
    duration_s = num_frames / fps
    entries = [_log_entry(cue, start, fps) for cue, start in zip(cues, starts, strict=True)]
    log.extend(entries)
    # Warn about captions beyond the video before rendering anything.
    for cue, entry in zip(cues, entries, strict=True):
        if entry["start_frame"] >= num_frames:
            entry["action"] = "dropped"
            _warn(f"cue {cue.index} starts after the video ends ({duration_s:.2f} s); dropped")
        elif cue.end_s > duration_s:
            _warn(
                f"cue {cue.index} ends at {cue.end_s:.2f} s, after the video "
                f"({duration_s:.2f} s); trimmed"
            )
    pos = 0
    for i, cue in enumerate(progress_bar(cues, desc="cues", unit="cue", disable=not progress)):
        entry, start = entries[i], starts[i]
        if entry["action"] == "dropped":
            continue
        following = starts[i + 1] if i + 1 < len(cues) else num_frames
        slot_end = min(following, num_frames)
        if slot_end <= start:
            entry["action"] = "dropped"
            _warn(f"cue {cue.index} starts on the same frame as cue {cues[i + 1].index}; dropped")
            continue
        target = max(1, min(round(cue.end_s * fps), num_frames) - start)
        yield from _idle(renderer, start - pos, ratio)
        slot = slot_end - start
        # Frames beyond this many could only be shown faster than MAX_SPEED: stop rendering.
        limit = math.ceil(slot * MAX_SPEED / ratio) + 1
        clip, truncated = _collect(renderer, cue, limit)
        if len(clip) == 0:
            entry["action"] = "dropped"
            _warn(f"cue {cue.index}: the renderer gave no frames; dropped")
            continue
        index, speed, length = _retime(len(clip), ratio, target, truncated)
        shown = index[:slot]
        action = "fit" if length == target else "padded" if length < target else "overrun"
        if length > slot:
            action = "trimmed"
            until = "the next cue" if following < num_frames else "the end of the video"
            _warn(
                f"cue {cue.index}: the signs do not fit the {slot / fps:.2f} s until {until} "
                f"even at {MAX_SPEED}x speed; trimmed"
            )
        entry.update(
            frames=len(shown),
            natural_frames=int(shown[-1]) + 1 if truncated else len(clip),
            speed=speed,
            action=action,
        )
        for a in range(0, len(shown), IDLE_CHUNK):
            yield clip[shown[a : a + IDLE_CHUNK]]
        pos = start + len(shown)
    yield from _idle(renderer, num_frames - pos, ratio)


def _log_entry(cue: Cue, start: int, fps: float) -> dict[str, Any]:
    return {
        "cue": cue.index,
        "cue_start_s": cue.start_s,
        "cue_end_s": cue.end_s,
        "start_frame": start,
        "start_s": start / fps,
        "frames": 0,
        "natural_frames": 0,
        "speed": None,
        "action": "pending",
    }


def _warn(message: str) -> None:
    warnings.warn(message, TrackWarning, stacklevel=3)


def _retime(
    natural: int, ratio: float, target: int, truncated: bool
) -> tuple[np.ndarray, float, int]:
    """Clip frame index for each output frame, the speed factor and the retimed length.

    The length is the cue's ``target`` clamped to what the speed bounds allow; flooring and
    ceiling here (rather than rounding a speed) keeps the achieved speed inside the bounds.
    """
    span = natural * ratio  # natural duration in output frames
    if truncated:
        # The clip is longer than the slot can hold even at MAX_SPEED: play it at MAX_SPEED.
        step = MAX_SPEED / ratio
        length = math.ceil(span / MAX_SPEED)
    else:
        shortest = max(1, math.ceil(span / MAX_SPEED - 1e-9))
        longest = max(shortest, math.floor(span / MIN_SPEED + 1e-9))
        length = min(max(target, shortest), longest)
        step = natural / length
    index = np.minimum((np.arange(length) * step + 1e-9).astype(np.int64), natural - 1)
    return index, step * ratio, length


T = TypeVar("T")


@contextmanager
def _closed_after(stream: Iterator[T]) -> Generator[Iterator[T], None, None]:
    """``contextlib.closing`` for any iterator: a renderer's generator is closed on exit (it
    stops rendering the rest of a cue cut short), and a plain iterator, which has no
    ``close``, is left alone instead of failing on exit."""
    try:
        yield stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _collect(renderer: SignRenderer, cue: Cue, limit: int) -> tuple[np.ndarray, bool]:
    """The cue's clip (at most ``limit`` frames) and whether the renderer had more."""
    height, width = renderer.size
    chunks, count = [np.zeros((0, height, width, 3), np.uint8)], 0
    with _closed_after(iter(renderer.render(cue.text, cue.language))) as stream:
        for chunk in stream:
            chunks.append(_check_frames(chunk, height, width, "render"))
            count += len(chunk)
            if count >= limit:
                return np.concatenate(chunks)[:limit], True
    return np.concatenate(chunks), False


def _idle(renderer: SignRenderer, count: int, ratio: float) -> Iterator[np.ndarray]:
    """``count`` output frames of the signer at rest, converted from the renderer's rate."""
    height, width = renderer.size
    for a in range(0, max(count, 0), IDLE_CHUNK):
        n = min(IDLE_CHUNK, count - a)
        frames = _check_frames(renderer.idle(max(1, math.ceil(n / ratio))), height, width, "idle")
        yield frames[np.minimum((np.arange(n) / ratio).astype(np.int64), len(frames) - 1)]


def _idle_forever(renderer: SignRenderer, ratio: float) -> Iterator[np.ndarray]:
    while True:
        yield from _idle(renderer, IDLE_CHUNK, ratio)


def _check_frames(frames: Any, height: int, width: int, method: str) -> np.ndarray:
    # A renderer bug should fail here with a clear message, not deep inside the encoder.
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.shape[1:] != (height, width, 3)
    ):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames)
        raise ValueError(
            f"renderer.{method}() must give uint8 (T, {height}, {width}, 3) frames, got {got}"
        )
    return frames


# --------------------------------------------------------------------------- outputs
def render_sign_track(
    cues: Sequence[Cue],
    renderer: SignRenderer,
    duration_s: float,
    out_path: str | os.PathLike[str],
    timing_log: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TimingLog:
    """Write a sign-only video of ``duration_s`` seconds at the renderer's frame rate."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    num_frames = max(1, round(duration_s * renderer.fps))
    log: TimingLog = []
    with VideoWriter(out_path, fps=renderer.fps) as writer:
        chunks = sign_track(cues, renderer, renderer.fps, num_frames, log, progress)
        bar = progress_bar(total=num_frames, desc="frames", unit="frame", disable=not progress)
        with closing(chunks), bar:
            for chunk in chunks:
                writer.write(chunk)
                bar.update(len(chunk))
    if timing_log is not None:
        write_timing_log(timing_log, log)
    return log


def render_pip(
    source_video: str | os.PathLike[str],
    cues: Sequence[Cue],
    renderer: SignRenderer,
    out_path: str | os.PathLike[str],
    corner: str = "bottom-right",
    scale: float = 0.3,
    margin: int = 16,
    timing_log: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TimingLog:
    """Composite the sign track onto ``source_video`` and keep its audio bit-exact.

    The sign video is ``scale`` x the source width, in ``corner``, ``margin`` pixels from the
    edges.  Frames are decoded, composited and encoded one at a time; the audio packets are
    copied without re-encoding.  The output has as many frames as the source, at its frame rate
    (a variable-frame-rate source comes out at its average rate).
    """
    source = Path(source_video)
    out = Path(out_path)
    fmt = _FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"{out}: output must be one of {', '.join(_FORMATS)}")
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    info = probe(source)
    box = _pip_box(info.width, info.height, renderer.size, corner, scale, margin)
    log: TimingLog = []
    out.parent.mkdir(parents=True, exist_ok=True)  # the new video stream goes beside the output
    video_tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.video.mp4")
    try:
        with VideoWriter(video_tmp, fps=info.fps) as writer:
            track = sign_track(cues, renderer, info.fps, info.num_frames, log, progress)
            idle = _idle_forever(renderer, info.fps / renderer.fps)
            signs = chain.from_iterable(chain(track, idle))  # one frame at a time
            frames = iter_frames(source)
            bar = progress_bar(
                total=info.num_frames, desc="frames", unit="frame", disable=not progress
            )
            with closing(track), closing(frames), bar:
                # signs never ends (idle after the last cue): the source sets the length.
                for frame, sign in zip(frames, signs, strict=False):
                    writer.write(_composite(frame, sign, box))
                    bar.update()
        for entry in log:
            if entry["action"] == "pending":
                entry["action"] = "dropped"
                _warn(f"the video ended before cue {entry['cue']}; dropped")
        _mux(video_tmp, source, out, fmt)
    finally:
        video_tmp.unlink(missing_ok=True)
    if timing_log is not None:
        write_timing_log(timing_log, log)
    return log


def write_timing_log(path: str | os.PathLike[str], log: TimingLog) -> Path:
    """Write the timing log as JSON, atomically like the videos."""
    path = Path(path)
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _pip_box(
    width: int, height: int, sign_hw: tuple[int, int], corner: str, scale: float, margin: int
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the sign video inside a ``width`` x ``height`` frame."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    w = max(1, round(width * scale))
    h = max(1, round(w * sign_hw[0] / sign_hw[1]))
    if w + 2 * margin > width or h + 2 * margin > height:
        raise ValueError(
            f"a {w}x{h} sign video with a {margin}px margin does not fit a {width}x{height} "
            "video; lower --scale or --margin"
        )
    top = margin if corner.startswith("top") else height - margin - h
    left = margin if corner.endswith("left") else width - margin - w
    return top, left, h, w


def _composite(frame: np.ndarray, sign: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, h, w = box
    if sign.shape[:2] != (h, w):
        sign = np.asarray(Image.fromarray(sign).resize((w, h), Image.Resampling.BILINEAR))
    if not frame.flags.writeable:
        frame = frame.copy()
    frame[top : top + h, left : left + w] = sign
    return frame


def _mux(video: Path, source: Path, out: Path, fmt: str) -> None:
    """Write ``video``'s stream and ``source``'s audio streams (copied packets) to ``out``.

    Packets of the two inputs are merged in decode-time order so that the output is properly
    interleaved (handing the muxer all video first would make it buffer or interleave badly).
    The new video is shifted to the source video's start time, which keeps lip sync for
    sources whose streams do not start at zero (e.g. cut broadcast recordings).
    """
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with (
        atomic_target(out) as tmp,
        av.open(str(video)) as vin,
        av.open(str(source)) as ain,
        av.open(str(tmp), "w", format=fmt, options=options) as container,
    ):
        video_in = vin.streams.video[0]
        source_video = ain.streams.video[0]
        offset = float((source_video.start_time or 0) * source_video.time_base)
        video_out = {video_in.index: container.add_stream_from_template(video_in)}
        audio_in = list(ain.streams.audio)
        audio_out = {s.index: _audio_stream(container, s, source, out) for s in audio_in}
        packets = heapq.merge(
            _timed(vin.demux(video_in), video_out, offset),
            _timed(ain.demux(*audio_in), audio_out, 0.0) if audio_in else iter(()),
            key=lambda item: item[0],
        )
        try:
            for _, packet in packets:
                container.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(f"{out}: cannot write {fmt} ({exc})") from exc


def _audio_stream(
    container: av.container.OutputContainer, stream: av.AudioStream, source: Path, out: Path
) -> av.AudioStream:
    try:
        return container.add_stream_from_template(stream)
    except (av.FFmpegError, ValueError) as exc:
        raise VideoError(
            f"{source}: audio codec {stream.codec_context.name} cannot be copied into "
            f"{out.suffix} ({exc}); choose another output extension, e.g. .mkv"
        ) from exc


def _timed(
    packets: Iterable[av.Packet], streams: Mapping[int, av.stream.Stream], offset_s: float
) -> Iterator[tuple[float, av.Packet]]:
    """Packets re-targeted to ``streams[input index]``, shifted by ``offset_s``, keyed by
    decode time in seconds."""
    for packet in packets:
        # Demuxers end with an empty flush packet (dts None); it carries no data.
        if packet.dts is None:
            continue
        shift = round(offset_s / packet.time_base)
        packet.dts += shift
        if packet.pts is not None:
            packet.pts += shift
        packet.stream = streams[packet.stream_index]
        yield float(packet.dts * packet.time_base), packet
