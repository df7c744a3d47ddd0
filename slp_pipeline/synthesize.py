"""In-process synthesis: the serving graph's stages run one after another, without Ray.

``slp synthesize`` uses this for a single video on a laptop: no cluster to start, a progress
bar per frame (:func:`pgmm.console.progress`: plain lines in a log), and the same chunked flow
as the service -- each pose chunk is retargeted, rendered and handed to a streaming
:class:`~pgmm.video.VideoWriter` before the next one is made, so memory stays flat however
long the sentence is. Models are loaded on first use, so a command that renders with the
skeleton never needs a PGMM checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pgmm.console import progress as progress_bar
from pgmm.pose.sequence import PoseSequence
from pgmm.video import VideoWriter, probe
from slp_pipeline.config import PipelineConfig, load_serve_config, pipeline_config
from slp_pipeline.signers import InputError, SignerRegistry
from slp_pipeline.stages import (
    FrameRateConverter,
    Renderer,
    Text2PoseStage,
    check_renderer,
    check_request,
    load_renderer,
    retarget_to,
)
from text2pose.canonical import FPS, to_canonical

# A driving clip is labelled frame by frame before anything is drawn (MediaPipe, ~20 frames/s
# on one core): two minutes is ~2.5 minutes of labelling, the most a command should ask for
# without the user splitting the clip. The byte cap is checked before a byte is decoded.
MAX_DRIVING_SECONDS = 120.0
MAX_DRIVING_BYTES = 512 * 2**20
POSE_SUFFIXES = (".pose", ".npz")


def driving_poses(
    path: str | Path, max_seconds: float = MAX_DRIVING_SECONDS, progress: bool = True
) -> PoseSequence:
    """The whole-body poses of a driving clip: a ``.pose``/``.npz`` file as it is, a video (or
    folder of frames) labelled by MediaPipe Holistic. Too long, too large, unreadable or
    without a person: a ``ValueError`` saying which, before the expensive part where possible."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"driving clip not found: {path}")
    if path.is_file() and path.stat().st_size > MAX_DRIVING_BYTES:
        raise ValueError(f"{path}: larger than {MAX_DRIVING_BYTES >> 20} MiB")
    if path.suffix in POSE_SUFFIXES:
        poses = PoseSequence.load(path)
    else:
        info = probe(path)  # VideoError (a ValueError) for anything that is not a video
        if info.num_frames > max_seconds * info.fps:
            raise ValueError(
                f"{path}: {info.num_frames / info.fps:.1f} s is longer than the {max_seconds:g} s "
                "a driving clip may last; cut it into parts"
            )
        from pgmm.pose.mediapipe_labels import label_video  # the optional 'real' extra

        poses = label_video(path, progress=progress)
    if len(poses) > max_seconds * poses.fps:
        raise ValueError(
            f"{path}: {len(poses) / poses.fps:.1f} s of poses is longer than {max_seconds:g} s"
        )
    return poses


def driving_motion(
    config: PipelineConfig,
    driving: str | Path,
    fps: float | None = None,
    max_seconds: float = MAX_DRIVING_SECONDS,
    progress: bool = True,
) -> PoseSequence:
    """A driving clip's poses in text2pose's canonical frame at ``fps`` (default: the clip's):
    what ``slp animate`` and ``POST /v1/animate`` hand the renderers, which retarget them onto
    the signer exactly as they do a sentence's poses. The driving person is normalised by
    their own shoulders (one scale and shift for the whole clip, so leaning and reaching are
    kept). ``fps`` is checked first, before a clip is labelled; the clip's own rate, the
    output's when no ``fps`` is asked, must be in the same range (a file from elsewhere may
    carry any number, NaN included)."""
    rates = f"[{config.min_fps}, {config.max_fps}]"
    if fps is not None and not config.min_fps <= fps <= config.max_fps:
        raise InputError(f"fps must be in {rates}, got {fps}")
    raw = driving_poses(driving, max_seconds, progress)
    if not len(raw) or min(raw.width, raw.height) < 1 or not np.isfinite(raw.fps):
        raise ValueError(
            f"{driving}: no frames, frame rate or image size "
            f"({len(raw)} frames at {raw.fps:g} fps, {raw.width}x{raw.height})"
        )
    if fps is None and not config.min_fps <= raw.fps <= config.max_fps:
        raise InputError(f"{driving}: its {raw.fps:g} fps is outside {rates}; ask for an fps")
    poses = to_canonical(raw)
    if fps is not None and fps != poses.fps:
        converted = FrameRateConverter(poses.fps, fps).push(poses)
        if converted is None:
            raise ValueError(f"{driving}: too short to resample to {fps:g} fps")
        poses = converted
    return poses


def in_chunks(poses: PoseSequence, frames: int) -> list[PoseSequence]:
    """``poses`` cut into chunks of ``frames`` frames (the last may be shorter), the unit the
    renderers take, so memory per step stays flat however long the clip is."""
    return [poses[start : start + frames] for start in range(0, len(poses), frames)]


class Synthesizer:
    """Text -> mp4 file with the stages of :mod:`slp_pipeline.stages`."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.registry = SignerRegistry(config.signers_dir)  # seeds the built-in signers
        self._text2pose: dict[str, Text2PoseStage] = {}
        self._renderers: dict[str, Renderer[Any]] = {}

    def text2pose(self, language: str) -> Text2PoseStage:
        """The stage of a configured ``language`` (checked by :func:`check_request`)."""
        cfg = self.config
        if language not in self._text2pose:
            self._text2pose[language] = Text2PoseStage.load(
                {language: cfg.text2pose[language]},
                cfg.text2pose_loader,
                cfg.chunk_frames,
                cfg.first_chunk_frames,
            )
        return self._text2pose[language]

    def renderer(self, name: str) -> Renderer[Any]:
        """The configured renderer ``name`` (checked by :func:`check_request`)."""
        cfg = self.config
        if name not in self._renderers:
            self._renderers[name] = load_renderer(
                name,
                cfg.renderers[name],
                cfg.device,
                cfg.precision,
                cfg.skeleton_size,
                cfg.compile,
                (cfg.first_chunk_frames, cfg.chunk_frames),
            )
        return self._renderers[name]

    def synthesize(
        self,
        text: str,
        language: str,
        out: str | Path,
        signer: str = "default",
        renderer: str | None = None,
        fps: float | None = None,
        progress: bool = True,
    ) -> Path:
        """Render ``text`` signed by ``signer`` to the mp4 ``out`` (written atomically)."""
        job = check_request(self.config, text, language, renderer, fps)
        person = self.registry.get(signer)
        t2p, stage = self.text2pose(job.language), self.renderer(job.renderer)
        state = stage.prepare(person)
        with (
            VideoWriter(out, fps=fps or FPS) as writer,
            progress_bar(
                unit="frame", desc=f"{language} -> {stage.name}", disable=not progress
            ) as bar,
        ):
            for chunk in t2p.stream(job.text, job.language, job.fps):
                frames = stage.render([state], [retarget_to(chunk, person)])[0]
                writer.write(frames)
                bar.update(len(frames))
        return writer.path

    def animate(
        self,
        driving: str | Path,
        out: str | Path,
        signer: str = "default",
        renderer: str | None = None,
        fps: float | None = None,
        max_seconds: float = MAX_DRIVING_SECONDS,
        progress: bool = True,
    ) -> Path:
        """The paper's inference setting: ``signer`` performs the motion of a driving video
        (see :func:`driving_motion`), rendered chunk by chunk like a sentence. ``fps``: output
        frame rate (default: the driving clip's).
        """
        name = check_renderer(self.config, renderer)
        person = self.registry.get(signer)
        poses = driving_motion(self.config, driving, fps, max_seconds, progress)
        stage = self.renderer(name)
        state = stage.prepare(person)
        with (
            VideoWriter(out, fps=poses.fps) as writer,
            progress_bar(
                total=len(poses), unit="frame", desc=f"animate -> {stage.name}",
                disable=not progress,
            ) as bar,
        ):  # fmt: skip
            for chunk in in_chunks(poses, self.config.chunk_frames):
                writer.write(stage.render([state], [retarget_to(chunk, person)])[0])
                bar.update(len(chunk))
        return writer.path


class CaptionRenderer:
    """The in-process stages as the captioning track's ``SignRenderer`` (see
    :mod:`integrations.track`): sign clips at natural speed, and the signer at rest for gaps."""

    def __init__(
        self, synthesizer: Synthesizer, signer: str = "default", renderer: str | None = None
    ) -> None:
        self.synth = synthesizer
        self.person = synthesizer.registry.get(signer)
        self.renderer = check_renderer(synthesizer.config, renderer)
        self.stage = synthesizer.renderer(self.renderer)
        self.state = self.stage.prepare(self.person)
        self.fps = FPS
        rest = self.stage.render([self.state], [self._rest_pose()])[0]
        self.size = (int(rest.shape[1]), int(rest.shape[2]))
        self._rest = rest[0]

    def _rest_pose(self) -> PoseSequence:
        """The signer's own pose, already in the signer's frame (no retargeting needed)."""
        data = self.person.pose[None].astype(np.float32)
        side = int(self.person.image.shape[0])
        return PoseSequence(data, FPS, "wholebody133", side, side)

    def render(self, text: str, language: str) -> Iterator[np.ndarray]:
        job = check_request(self.synth.config, text, language, self.renderer, None)
        for chunk in self.synth.text2pose(job.language).stream(job.text, job.language):
            yield self.stage.render([self.state], [retarget_to(chunk, self.person)])[0]

    def idle(self, num_frames: int) -> np.ndarray:
        # One rendered rest frame, repeated: continuous across calls by construction.
        return np.repeat(self._rest[None], num_frames, axis=0)


def caption_renderer(
    signer: str = "default",
    models_dir: str | Path = "models",
    config: str | Path = "configs/serve/cpu.yaml",
    renderer: str | None = None,
) -> CaptionRenderer:
    """``slp caption``'s renderer: the serve config's models, looked up under ``models_dir``'s
    parent (the config names them as ``models/...`` relative to the repository root)."""
    cfg = pipeline_config(load_serve_config(config)).resolved(Path(models_dir).resolve().parent)
    cfg.check_models()
    return CaptionRenderer(Synthesizer(cfg.localized()), signer, renderer)
