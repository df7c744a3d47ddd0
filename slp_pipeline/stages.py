"""The stages of the text -> sign-video pipeline, as plain objects with no Ray in them.

    text --Text2PoseStage--> canonical pose chunks --retarget_to--> poses on the signer's body
    --Renderer (PGMMRenderer | SkeletonRenderer)--> uint8 frames --EncodeStage--> mp4 /
    fragmented mp4 / zip / json

Keeping the stages Ray-free lets the same code run in three places: the Ray Serve graph
(:mod:`slp_pipeline.serve_app` wraps each stage in a small deployment), the in-process
:class:`~slp_pipeline.synthesize.Synthesizer` behind ``slp synthesize``, and unit tests.

Everything works chunk by chunk (``chunk_frames`` poses at a time) so that memory stays flat for
long sentences and a streaming client sees its first frames before the sentence is rendered.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import av
import numpy as np
import torch
from PIL import Image

from pgmm.allocator import keep_freed_memory
from pgmm.models.pgmm import PGMM, SourceState
from pgmm.models.pose_estimator import HRNetLite
from pgmm.pose.heatmaps import argmax_decode, pose_heatmaps
from pgmm.pose.layout import NUM_WHOLEBODY, PGMM36_FROM_WHOLEBODY
from pgmm.pose.sequence import PoseSequence
from pgmm.pose.skeleton import draw_skeleton
from pgmm.precision import cpu_computes_bf16
from slp_pipeline.signers import InputError, Signer
from text2pose.canonical import FPS, retarget
from text2pose.timeline import GlossTimeline

if TYPE_CHECKING:
    from slp_pipeline.config import PipelineConfig

SKELETON = "skeleton"
MEDIA_TYPES = {
    "mp4": "video/mp4",
    "frames-zip": "application/zip",
    "pose-json": "application/json",
    "pose": "application/octet-stream",  # pose-format's binary .pose (no registered type)
}


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Precisions chosen by the hardware rather than named: see :func:`resolve_precision`.
PRECISION_MODES = ("auto", "fast")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA where present, so one config file serves CPU and GPU hosts."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(
    precision: str, device: torch.device, capability: tuple[int, int] | None = None
) -> torch.dtype:
    """The renderer's autocast dtype; ``auto``: float32 off CUDA, bf16 on GPUs that run it
    natively (compute capability >= 8.0: A100, L4, H100, ...), else fp16 -- T4 and V100
    emulate bf16 at a fraction of their fp16 speed. ``fast``: as ``auto``, and bf16 on a CPU
    with bf16 instructions too (:func:`cpu_computes_bf16`), which renders faster but not the
    same frames as float32 (docs/performance.md, "Pipeline", measures by how much).
    ``capability`` overrides the device's."""
    if precision not in PRECISION_MODES:
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {[*PRECISION_MODES, *sorted(PRECISIONS)]}, "
                f"got {precision!r}"
            )
        return PRECISIONS[precision]
    if device.type != "cuda":
        fast_bf16 = precision == "fast" and device.type == "cpu" and cpu_computes_bf16()
        return torch.bfloat16 if fast_bf16 else torch.float32
    major, minor = capability or torch.cuda.get_device_capability(device)
    return torch.bfloat16 if (major, minor) >= (8, 0) else torch.float16


def _require_folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} model folder not found: {path} (train or download it, or point the serve "
            "config at an existing folder)"
        )
    return path


# --------------------------------------------------------------------------- text -> pose
class TextToPoseModel(Protocol):
    """What the pipeline needs from :class:`text2pose.TextToPose` (one language per model)."""

    language: str

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]: ...


TextToPoseLoader = Callable[[Path], TextToPoseModel]


def load_text_to_pose(path: Path) -> TextToPoseModel:
    """The production loader. text2pose is imported here, not at module level, because it pulls
    in transformers and sentencepiece, which renderer replicas and unit tests never need."""
    from text2pose import TextToPose

    return TextToPose.from_pretrained(path)


@dataclass(frozen=True)
class CheckedRequest:
    """A sign request that passed :func:`check_request`: what the stages may trust."""

    text: str  # stripped
    language: str
    renderer: str  # a configured renderer's name
    fps: float | None  # None: text2pose's own


def check_renderer(config: PipelineConfig, renderer: str | None) -> str:
    """The name of a configured renderer (``None``: the default one)."""
    renderer = renderer or config.default_renderer
    if renderer not in config.renderers:
        raise InputError(f"unknown renderer {renderer!r}; choose from {sorted(config.renderers)}")
    return renderer


def check_request(
    config: PipelineConfig, text: str, language: str, renderer: str | None, fps: float | None
) -> CheckedRequest:
    """Reject what no model can sign before any work is queued. The one check of a request,
    shared by the service and ``slp synthesize``; the stages behind it do not repeat it."""
    if language not in config.text2pose:
        raise InputError(
            f"unsupported language {language!r}; choose from {sorted(config.text2pose)}"
        )
    text = (text or "").strip()
    if not text:
        raise InputError("text is empty")
    if len(text) > config.max_text_chars:
        raise InputError(f"text has {len(text)} characters; the limit is {config.max_text_chars}")
    renderer = check_renderer(config, renderer)
    if fps is not None and not config.min_fps <= fps <= config.max_fps:
        raise InputError(f"fps must be in [{config.min_fps}, {config.max_fps}], got {fps}")
    return CheckedRequest(text, language, renderer, fps)


def chunk_schedule(
    chunks: Iterable[PoseSequence], first_frames: int, frames: int
) -> Iterator[PoseSequence]:
    """``chunks`` re-cut into one of ``first_frames`` frames, then ``frames`` at a time (the
    last may be shorter); the frames themselves are unchanged.

    Why: a chunk is rendered whole before any of its frames is shown, so the first frame waits
    for the first chunk; a small one shows it after a fraction of the time, while the larger
    chunks after it keep the per-call overhead low. Each chunk is yielded as soon as enough
    frames have arrived, so nothing is held back longer than it has to be.
    """
    pending: list[PoseSequence] = []
    have, want = 0, first_frames
    for chunk in chunks:
        pending.append(chunk)
        have += len(chunk)
        while have >= want:
            whole = concat_poses(pending)
            rest = whole[want:]
            yield whole[:want]
            pending, have, want = [rest], len(rest), frames
    if have:
        yield concat_poses(pending)


def concat_poses(parts: Iterable[PoseSequence]) -> PoseSequence:
    """Consecutive chunks as one sequence (with the first chunk's rate, layout and size)."""
    chunks = list(parts)
    if not chunks:
        raise ValueError("no poses")
    if len(chunks) == 1:
        return chunks[0]
    return dataclasses.replace(chunks[0], data=np.concatenate([c.data for c in chunks]))


class Text2PoseStage:
    """Language -> text2pose model; text -> canonical whole-body pose chunks (25 fps):
    ``first_chunk_frames`` frames first (default: ``chunk_frames``), then ``chunk_frames``."""

    def __init__(
        self,
        models: Mapping[str, TextToPoseModel],
        chunk_frames: int = 16,
        first_chunk_frames: int | None = None,
    ) -> None:
        self.models = dict(models)
        self.chunk_frames = chunk_frames
        self.first_chunk_frames = first_chunk_frames or chunk_frames

    @classmethod
    def load(
        cls,
        paths: Mapping[str, str | Path],
        loader: TextToPoseLoader | None = None,
        chunk_frames: int = 16,
        first_chunk_frames: int | None = None,
    ) -> Text2PoseStage:
        loader = loader or load_text_to_pose
        models = {}
        for lang, path in paths.items():
            model = loader(_require_folder(path, f"text2pose ({lang})"))
            if model.language != lang:
                raise ValueError(f"{path} holds a {model.language!r} model, not {lang!r}")
            models[lang] = model
        return cls(models, chunk_frames, first_chunk_frames)

    def timeline(self, text: str, language: str, fps: float | None = None) -> GlossTimeline:
        """The glosses ``text`` is signed with and each sign's frames at the output rate ``fps``
        (what :meth:`stream` resamples to), from the model's plan -- no pose is made. A model
        without gloss timing (the SynthSigner stand-in, test doubles) gives an empty one."""
        model = self._model(language)
        if not hasattr(model, "timeline"):
            return GlossTimeline([], [], 0, timed=False, fps=fps or FPS)
        try:
            timeline = model.timeline(text)
        except ValueError as e:  # TextInputError: the caller's text, as in stream()
            raise InputError(str(e)) from e
        if fps is None or fps == timeline.fps or not timeline.timed:
            return dataclasses.replace(timeline, fps=fps or timeline.fps)
        # Output frame j shows input time j * step (FrameRateConverter): a span [a, b) of input
        # frames holds the output frames ceil(a / step) .. ceil(b / step) - 1.
        step = timeline.fps / fps
        frames = math.floor((timeline.frames - 1) / step) + 1 if timeline.frames else 0

        def at(frame: int) -> int:
            return min(math.ceil(frame / step - 1e-9), frames)

        spans = [dataclasses.replace(s, start=at(s.start), end=at(s.end)) for s in timeline.spans]
        return dataclasses.replace(timeline, spans=spans, frames=frames, fps=fps)

    def _model(self, language: str) -> TextToPoseModel:
        if language not in self.models:
            raise InputError(
                f"unsupported language {language!r}; choose from {sorted(self.models)}"
            )
        return self.models[language]

    def stream(self, text: str, language: str, fps: float | None = None) -> Iterator[PoseSequence]:
        """Pose chunks (:func:`chunk_schedule`), resampled to ``fps`` if given.

        text2pose validates ``text`` again (a library of its own) at the first chunk: a
        ``ValueError`` there is the caller's and becomes an :class:`InputError`; later errors
        are ours and propagate unchanged.
        """
        # The model is asked for pieces no larger than the first chunk, so an autoregressive
        # one hands that chunk over as soon as it is decoded, not after a whole chunk.
        pieces = self._model(language).generate_stream(
            text, chunk_frames=min(self.first_chunk_frames, self.chunk_frames)
        )
        chunks = chunk_schedule(pieces, self.first_chunk_frames, self.chunk_frames)
        try:
            first = next(chunks)
        except StopIteration:
            raise InputError("text2pose produced no poses for this text") from None
        except ValueError as e:
            raise InputError(str(e)) from e
        converter = None
        for chunk in itertools.chain([first], chunks):
            out: PoseSequence | None = chunk
            if fps is not None and fps != chunk.fps:
                converter = converter or FrameRateConverter(chunk.fps, fps)
                out = converter.push(chunk)
            if out is not None:
                yield out


class FrameRateConverter:
    """Resamples a chunked pose stream to another frame rate by linear interpolation.

    It carries the last input frame across chunk boundaries, so chunked and whole-sequence
    conversion give the same frames.
    """

    def __init__(self, fps_in: float, fps_out: float) -> None:
        self.step = fps_in / fps_out  # input frames per output frame
        self.cursor = 0.0  # next output time, in input frames since the first input frame
        self.offset = 0  # input index of ``self.frames[0]``
        self.frames: np.ndarray | None = None
        self.fps_out = fps_out

    def push(self, chunk: PoseSequence) -> PoseSequence | None:
        data = chunk.data if self.frames is None else np.concatenate([self.frames, chunk.data])
        last = self.offset + len(data) - 1
        times = []
        while self.cursor <= last:
            times.append(self.cursor)
            self.cursor += self.step
        # Keep one frame back: the next output may fall between it and the next chunk's first.
        keep = len(data) - 1
        self.frames, base = data[keep:], self.offset
        self.offset += keep
        if not times:
            return None
        t = np.asarray(times) - base
        lo = np.floor(t).astype(int)
        hi = np.minimum(lo + 1, len(data) - 1)
        w = (t - lo)[:, None, None].astype(np.float32)
        out = data[lo] * (1 - w) + data[hi] * w
        out[..., 2] = np.minimum(data[lo][..., 2], data[hi][..., 2])  # never invent points
        return PoseSequence(out, self.fps_out, chunk.layout, chunk.width, chunk.height)


# --------------------------------------------------------------------------- signer pose
class PoseEstimatorStage:
    """P_e on one image: where a newly uploaded signer's body is, for retargeting."""

    def __init__(self, model: HRNetLite, size: int = 256) -> None:
        self.model = model.eval()
        self.size = size

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``(S, S, 3)`` -> ``(133, 3)`` whole-body points; only P_e's 36 are known."""
        img = Image.fromarray(image).resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.tensor(np.asarray(img)).permute(2, 0, 1)[None].float() / 255
        points = argmax_decode(self.model(x))[0].numpy()
        pose = np.zeros((NUM_WHOLEBODY, 3), np.float32)
        pose[PGMM36_FROM_WHOLEBODY] = points
        left, right = points[1, :2], points[2, :2]  # PGMM36 shoulders
        if np.linalg.norm(left - right) < 0.05:
            raise InputError("no signer found in the image (the shoulders could not be located)")
        return pose


class MediaPipeEstimatorStage:
    """MediaPipe Holistic on one photo: the whole 133-point body of a *real* person, which
    our SynthSigner-trained P_e cannot find (see :mod:`pgmm.pose.mediapipe_labels`)."""

    def __init__(self) -> None:
        from pgmm.pose.mediapipe_labels import require_mediapipe

        require_mediapipe()  # a missing extra fails at startup, not on the first upload

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from pgmm.pose.mediapipe_labels import NoPersonError, label_image

        try:
            return label_image(image, "the uploaded image")
        except NoPersonError as e:
            raise InputError(str(e)) from e


def upload_pose_estimator(
    upload_poses: str, pose_estimator: str | None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """What finds an uploaded signer's pose (``None``: uploads are refused)."""
    if upload_poses == "mediapipe":
        return MediaPipeEstimatorStage()
    if not pose_estimator:
        return None
    model = HRNetLite.from_pretrained(_require_folder(pose_estimator, "pose estimator"))
    return PoseEstimatorStage(model)


# --------------------------------------------------------------------------- renderers
def retarget_to(chunk: PoseSequence, signer: Signer) -> PoseSequence:
    """Scale + shift text2pose's body-normalised chunk onto the signer's shoulders."""
    size = int(signer.image.shape[0])
    return retarget(chunk, signer.pose[:, :2], size, size)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` in [0, 1] -> ``(T, H, W, 3)`` uint8, rounded rather than truncated."""
    out = frames.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def square_resized(image: np.ndarray, size: int) -> np.ndarray:
    """A square ``(S, S, 3)`` image at ``size`` x ``size`` (itself when it has that size)."""
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


StateT = TypeVar("StateT")


def in_groups(
    keys: Sequence[Hashable], render: Callable[[list[int]], list[np.ndarray]]
) -> list[np.ndarray]:
    """``render`` once per group of equal ``keys`` (given the indices); results in key order."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(keys)
    for idx in groups.values():
        for i, result in zip(idx, render(idx), strict=True):
            out[i] = result
    return out


class Renderer(Protocol[StateT]):
    """Poses on a signer's body -> frames. ``prepare`` does the per-signer work once (serving
    caches it per signer); ``render`` takes chunks of several requests at once, so concurrent
    requests share a forward pass. How inputs are shaped (heatmap size, sigma) is its own."""

    name: str
    size: int  # side of the square frames

    def prepare(self, signer: Signer) -> StateT: ...

    def render(self, states: Sequence[StateT], poses: Sequence[PoseSequence]) -> list[np.ndarray]:
        """``(T_i, size, size, 3)`` uint8 frames for each (state, pose chunk) pair."""


@dataclass
class SkeletonState:
    """The skeleton preview's per-signer state: the faded signer image it draws over."""

    background: np.ndarray


class SkeletonRenderer:
    """The pose drawn over the faded signer image: a preview that needs no model at all."""

    def __init__(self, name: str, size: int = 256) -> None:
        self.name, self.size = name, size

    def prepare(self, signer: Signer) -> SkeletonState:
        image = square_resized(signer.image, self.size)
        return SkeletonState((image.astype(np.float32) * 0.35).astype(np.uint8))

    def render(
        self, states: Sequence[SkeletonState], poses: Sequence[PoseSequence]
    ) -> list[np.ndarray]:
        return [
            draw_skeleton(p.data, layout=p.layout, background=s.background)
            for s, p in zip(states, poses, strict=True)
        ]


@dataclass
class PGMMState:
    """A signer encoded by a PGMM: the weights it renders with (the renderer's, or the
    signer's own adapted ones) and its :class:`SourceState`."""

    model: PGMM
    source: SourceState


class PGMMRenderer:
    """A PGMM checkpoint (any variant, ``tpsmm`` included), driven by 36 Gaussian heatmaps drawn
    with the stride and sigma saved in its config -- those it was trained on."""

    def __init__(
        self,
        name: str,
        model: PGMM,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        compile: bool = False,
        compile_sizes: tuple[int, ...] = (4, 16),
    ) -> None:
        """``compile``: render through ``torch.compile(model.animate)`` (inductor), compiled by
        :meth:`warm_up` once for each chunk length in ``compile_sizes`` -- the pipeline's first
        and later chunks. A compilation is specialised to its frame count: compiled with
        dynamic shapes the graph renders *slower* than eager PyTorch on a CPU (1.47 vs 1.26 s
        per 16 frames, one thread), with static ones faster (0.90 s), so every chunk is padded
        to the next compiled length (its last pose repeated, the extra frames dropped) and
        longer ones are cut. Only this renderer's own weights are compiled; a signer's adapted
        model runs eagerly."""
        self.name = name
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # ~16 % of a CPU animate() was page faults (pgmm.allocator)
        self.model = model.to(self.device).eval()
        self.size = model.config.image_size
        self.dtype = resolve_precision(precision, self.device)  # autocast dtype of animate()
        self.compile_sizes = tuple(sorted(set(compile_sizes)))
        if not self.compile_sizes or min(self.compile_sizes) < 1:
            raise ValueError(f"compile_sizes must be >= 1, got {compile_sizes}")
        self._compiled: Callable[..., torch.Tensor] | None = None
        if compile:
            self._compiled = torch.compile(self.model.animate, dynamic=False)

    def warm_up(self) -> float:
        """Render a grey signer in blank poses, a chunk of each of ``compile_sizes``; return
        the seconds taken.

        With ``compile`` this is the compilation (minutes on a CPU: docs/performance.md), so a
        service pays it when its replica starts rather than on its first request."""
        start = time.perf_counter()
        grey = torch.full((1, 3, self.size, self.size), 0.5, device=self.device)
        maps = self.heatmaps(np.zeros((max(self.compile_sizes) + 1, 36, 3), np.float32))
        maps = maps.to(self.device)
        state = self.model.encode_source(grey, maps[:1])
        for size in self.compile_sizes:
            self._frames(self.model, state, maps[1 : size + 1])
        return time.perf_counter() - start

    def heatmaps(self, points: np.ndarray) -> torch.Tensor:
        """``(..., 36, h, w)`` maps of whole-body (or PGMM36) points, as in training."""
        cfg = self.model.config
        return pose_heatmaps(
            torch.from_numpy(points), cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma
        )

    def prepare(self, signer: Signer) -> PGMMState:
        image = square_resized(signer.image, self.size)
        x = torch.tensor(image).permute(2, 0, 1)[None].float().div(255).to(self.device)
        model = self.signer_model(signer)
        maps = self.heatmaps(signer.pose[None]).to(self.device)
        return PGMMState(model, model.encode_source(x, maps))

    def signer_model(self, signer: Signer) -> PGMM:
        """The weights to render ``signer`` with: the signer's own (adapted) PGMM when it has
        one of this renderer's variant and size, else this renderer's. Loaded per signer and
        kept only in the signer's state, so the serving layer's multiplexed LRU bounds how many
        adapted models a replica holds."""
        if signer.model_dir is None:
            return self.model
        own = PGMM.from_pretrained(signer.model_dir, map_location=self.device)
        base = self.model.config
        if (own.config.variant, own.config.image_size) != (base.variant, base.image_size):
            return self.model
        return own.eval()

    def render(
        self, states: Sequence[PGMMState], poses: Sequence[PoseSequence]
    ) -> list[np.ndarray]:
        """One forward pass per set of weights: adapted signers bring their own."""
        return in_groups(
            [id(s.model) for s in states],
            lambda idx: self._animate(
                states[idx[0]].model, [states[i].source for i in idx], [poses[i] for i in idx]
            ),
        )

    def _animate(
        self, model: PGMM, sources: Sequence[SourceState], poses: Sequence[PoseSequence]
    ) -> list[np.ndarray]:
        lengths = [len(p) for p in poses]
        state = sources[0] if len(sources) == 1 else _stack_states(sources, lengths)
        maps = torch.cat([self.heatmaps(p.data) for p in poses]).to(self.device)
        return list(np.split(self._frames(model, state, maps), np.cumsum(lengths)[:-1]))

    def _frames(self, model: PGMM, state: SourceState, maps: torch.Tensor) -> np.ndarray:
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32):
            if self._compiled is None or model is not self.model:
                return _to_uint8(model.animate(state, maps))
            step = max(self.compile_sizes)
            return np.concatenate(
                [self._compiled_frames(_state_frames(state, i, i + step), maps[i : i + step])
                 for i in range(0, len(maps), step)]
            )  # fmt: skip

    def _compiled_frames(self, state: SourceState, maps: torch.Tensor) -> np.ndarray:
        """Frames of one chunk no longer than the largest compiled length, padded to the
        nearest one by repeating its last pose (and the state of a batched chunk, its last
        signer) so the compiled graph sees a length it was compiled for."""
        assert self._compiled is not None
        n = len(maps)
        size = next(s for s in self.compile_sizes if s >= n)
        if size > n:
            maps = torch.cat([maps, maps[-1:].expand(size - n, -1, -1, -1)])
            state = _pad_state(state, size)
        return _to_uint8(self._compiled(state, maps))[:n]


def _map_state(state: SourceState, change: Callable[[torch.Tensor], torch.Tensor]) -> SourceState:
    """``change`` applied to every per-frame tensor of a stacked state (batch = its chunk's
    frames, :func:`_stack_states`); a one-signer state (batch 1) serves any frame count as
    it is."""

    def apply(t: torch.Tensor) -> torch.Tensor:
        return t if t.shape[0] == 1 else change(t)

    return SourceState(
        image=apply(state.image),
        features=[apply(f) for f in state.features],
        kp_source=apply(state.kp_source),
        heatmaps=None if state.heatmaps is None else apply(state.heatmaps),
    )


def _state_frames(state: SourceState, start: int, stop: int) -> SourceState:
    """The state of frames ``start:stop`` of a chunk."""
    return _map_state(state, lambda t: t[start:stop])


def _pad_state(state: SourceState, frames: int) -> SourceState:
    """The state padded to ``frames`` frames by repeating its last frame's entries."""
    return _map_state(
        state, lambda t: torch.cat([t, t[-1:].expand(frames - t.shape[0], *t.shape[1:])])
    )


def _stack_states(states: Sequence[SourceState], lengths: Sequence[int]) -> SourceState:
    """Concatenate per-signer states, each repeated once per frame of its chunk."""

    def cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.expand(n, *t.shape[1:]) for t, n in zip(tensors, lengths, strict=True)])

    return SourceState(
        image=cat([s.image for s in states]),
        features=[cat(level) for level in zip(*(s.features for s in states), strict=True)],
        kp_source=cat([s.kp_source for s in states]),
        # prepare() always encodes the source pose; a state without one fails the strict zip.
        heatmaps=cat([s.heatmaps for s in states if s.heatmaps is not None]),
    )


def is_skeleton(spec: str | Path) -> bool:
    """Whether a renderer spec names the skeleton preview rather than a checkpoint folder."""
    return str(spec) == SKELETON


def load_renderer(
    name: str,
    spec: str | Path,
    device: str = "auto",
    precision: str = "auto",
    skeleton_size: int = 256,
    compile: bool = False,
    compile_sizes: tuple[int, ...] = (4, 16),
) -> Renderer[Any]:
    """The renderer a serve config's ``renderers`` entry names: ``skeleton`` or a PGMM
    checkpoint folder. ``compile`` compiles a PGMM renderer here, for chunks of
    ``compile_sizes`` frames, before it is returned."""
    if is_skeleton(spec):
        return SkeletonRenderer(name, skeleton_size)
    dev = resolve_device(device)
    model = PGMM.from_pretrained(_require_folder(spec, f"renderer '{name}'"), map_location=dev)
    renderer = PGMMRenderer(name, model, dev, precision, compile, compile_sizes)
    if compile:  # minutes without a word would look like a hang
        sizes = " and ".join(map(str, renderer.compile_sizes))
        print(f"compiling renderer '{name}' for chunks of {sizes} frames (minutes on a CPU) ...",
              file=sys.stderr, flush=True)  # fmt: skip
        print(f"compiled renderer '{name}' in {renderer.warm_up():.0f} s", file=sys.stderr)
    return renderer


# --------------------------------------------------------------------------- frames -> bytes
class _Sink:
    """Write-only, non-seekable byte sink: makes FFmpeg's mp4 muxer write sequentially, so
    fragmented output can be handed to the client as it is produced."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Mp4Encoder:
    """H.264 in an mp4 written to memory, one frame chunk at a time.

    ``fragmented=True`` gives fragmented mp4 (an empty ``moov`` up front, then one
    ``moof``/``mdat`` pair per second) that a browser can start playing while it downloads;
    the encoder is set to zero latency so each chunk's bytes leave with that chunk.
    ``fragmented=False`` gives a regular ``faststart`` mp4, available only at :meth:`close`.
    """

    def __init__(
        self, fps: float, fragmented: bool, crf: int = 20, preset: str = "veryfast"
    ) -> None:
        self.sink = _Sink()
        self.tmpdir: tempfile.TemporaryDirectory | None = None
        if fragmented:
            target: _Sink | str = self.sink
            flags = "frag_keyframe+empty_moov+default_base_moof"
        else:
            # faststart rewrites the file in a second pass, which needs a real, seekable file.
            self.tmpdir = tempfile.TemporaryDirectory(prefix="slp-mp4-")
            target, flags = str(Path(self.tmpdir.name) / "video.mp4"), "+faststart"
        self.container = av.open(target, "w", format="mp4", options={"movflags": flags})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency"}
        self.stream.codec_context.gop_size = max(1, round(fps))
        self.opened = False
        self.frames = 0

    def write(self, frames: np.ndarray) -> bytes:
        """Encode ``(T, H, W, 3)`` uint8 frames; returns the bytes that became final."""
        h, w = frames.shape[1:3]
        if not self.opened:
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.opened = True
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.frames
            self.frames += 1
            self.container.mux(self.stream.encode(vf))
        return self.sink.take()

    def close(self) -> bytes:
        """Flush and finalise; returns the remaining bytes (the whole file if not fragmented)."""
        if not self.opened:
            self.abort()
            raise ValueError("no frames to encode")
        self.container.mux(self.stream.encode(None))
        self.container.close()
        if self.tmpdir is None:
            return self.sink.take()
        with self.tmpdir as folder:
            return (Path(folder) / "video.mp4").read_bytes()

    def abort(self) -> None:
        """Release the encoder and its temporary file after a failed request."""
        with suppress(Exception):  # a half-written container may fail to close; moot here
            self.container.close()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


class EncodeStage:
    """Frames or poses -> the bytes of one of the formats of :data:`MEDIA_TYPES`."""

    @staticmethod
    def mp4(fps: float, fragmented: bool = False) -> Mp4Encoder:
        return Mp4Encoder(fps, fragmented)

    @staticmethod
    def frames_zip(chunks: Iterator[np.ndarray]) -> bytes:
        """A zip of numbered PNG frames (PNG is already compressed, so the zip only stores)."""
        buf = io.BytesIO()
        index = 0
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for chunk in chunks:
                for frame in chunk:
                    png = io.BytesIO()
                    Image.fromarray(frame).save(png, format="PNG")
                    zf.writestr(f"frame_{index:05d}.png", png.getvalue())
                    index += 1
        if index == 0:
            raise ValueError("no frames to encode")
        return buf.getvalue()

    @staticmethod
    def pose_file(chunks: Iterator[PoseSequence]) -> bytes:
        """The retargeted poses as a ``.pose`` file (pose-format; pixel coordinates), what
        sign-language tools (pose viewers, other translators) read."""
        whole = concat_poses(chunks)
        with tempfile.TemporaryDirectory(prefix="slp-pose-") as folder:
            path = Path(folder) / "sign.pose"
            whole.save_pose(path)
            return path.read_bytes()

    @staticmethod
    def pose_json(
        chunks: Iterator[PoseSequence], signer: str, glosses: Mapping[str, Any] | None = None
    ) -> bytes:
        """The retargeted whole-body poses: normalised x, y, confidence per keypoint; with
        ``glosses`` (the signs and their frames) where the caller has them."""
        whole = concat_poses(chunks)
        payload = {k: getattr(whole, k) for k in ("fps", "layout", "width", "height")}
        payload.update(signer=signer, frames=np.round(whole.data, 4).tolist())
        if glosses is not None:
            payload["glosses"] = glosses
        return json.dumps(payload).encode()
