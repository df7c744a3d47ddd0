"""In-process synthesis: the serving graph's stages run one after another, without Ray.

``slp synthesize`` uses this for a single video on a laptop: no cluster to start, a tqdm bar
per frame, and the same chunked flow as the service -- each pose chunk is retargeted, rendered
and handed to a streaming :class:`~pgmm.video.VideoWriter` before the next one is made, so
memory stays flat however long the sentence is. Models are loaded on first use, so a
command that renders with the skeleton never needs a PGMM checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from pgmm.pose.sequence import PoseSequence
from pgmm.video import VideoWriter
from slp_pipeline.config import PipelineConfig, pipeline_config
from slp_pipeline.signers import InputError, SignerRegistry
from slp_pipeline.stages import (
    DrivingChunk,
    FrameRateConverter,
    HeatmapStage,
    RendererStage,
    Text2PoseStage,
)
from text2pose.canonical import FPS


class Synthesizer:
    """Text -> mp4 file with the stages of :mod:`slp_pipeline.stages`."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.registry = SignerRegistry(config.signers_dir)  # seeds the built-in signers
        self.heatmaps = HeatmapStage(config.heatmap_sigma)
        self._text2pose: dict[str, Text2PoseStage] = {}
        self._renderers: dict[str, RendererStage] = {}

    def text2pose(self, language: str) -> Text2PoseStage:
        cfg = self.config
        if language not in cfg.text2pose:
            raise InputError(
                f"unsupported language {language!r}; choose from {sorted(cfg.text2pose)}"
            )
        if language not in self._text2pose:
            self._text2pose[language] = Text2PoseStage.load(
                {language: cfg.text2pose[language]},
                cfg.text2pose_loader,
                cfg.max_text_chars,
                cfg.chunk_frames,
            )
        return self._text2pose[language]

    def renderer(self, name: str | None) -> RendererStage:
        cfg = self.config
        name = name or cfg.default_renderer
        if name not in cfg.renderers:
            raise InputError(f"unknown renderer {name!r}; choose from {sorted(cfg.renderers)}")
        if name not in self._renderers:
            self._renderers[name] = RendererStage.load(
                name, cfg.renderers[name], cfg.device, cfg.skeleton_size
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
        cfg = self.config
        if fps is not None and not cfg.min_fps <= fps <= cfg.max_fps:
            raise InputError(f"fps must be in [{cfg.min_fps}, {cfg.max_fps}], got {fps}")
        person = self.registry.get(signer)
        t2p, stage = self.text2pose(language), self.renderer(renderer)
        size = stage.heatmap_size
        state = stage.encode_signer(
            person, self.heatmaps.source_heatmaps(person, size) if size else None
        )
        converter = None
        with (
            VideoWriter(out, fps=fps or FPS) as writer,
            tqdm(unit="frame", desc=f"{language} -> {stage.name}", disable=not progress) as bar,
        ):
            for chunk in t2p.stream(text, language):
                if fps is not None and fps != chunk.fps:
                    converter = converter or FrameRateConverter(chunk.fps, fps)
                    chunk = converter.push(chunk)
                    if chunk is None:
                        continue
                frames = stage.render([state], [self.heatmaps.drive(chunk, person, size)])[0]
                writer.write(frames)
                bar.update(len(frames))
        return writer.path


class CaptionRenderer:
    """The in-process stages as the captioning track's ``SignRenderer`` (see
    :mod:`integrations.track`): sign clips at natural speed, and the signer at rest for gaps."""

    def __init__(
        self, synthesizer: Synthesizer, signer: str = "default", renderer: str | None = None
    ) -> None:
        self.synth = synthesizer
        self.person = synthesizer.registry.get(signer)
        self.stage = synthesizer.renderer(renderer)
        size = self.stage.heatmap_size
        self.heatmap_size = size
        self.state = self.stage.encode_signer(
            self.person, synthesizer.heatmaps.source_heatmaps(self.person, size) if size else None
        )
        self.fps = FPS
        rest = self._draw(self._rest_pose())
        self.size = (int(rest.shape[1]), int(rest.shape[2]))
        self._rest = rest[0]

    def _rest_pose(self) -> PoseSequence:
        """The signer's own pose, already in the signer's frame (no retargeting needed)."""
        data = self.person.pose[None].astype(np.float32)
        side = int(self.person.image.shape[0])
        return PoseSequence(data, FPS, "wholebody133", side, side)

    def _draw(self, pose: PoseSequence) -> np.ndarray:
        maps = self.synth.heatmaps.heatmaps(pose, self.heatmap_size) if self.heatmap_size else None
        return self.stage.render([self.state], [DrivingChunk(pose, maps)])[0]

    def render(self, text: str, language: str) -> Iterator[np.ndarray]:
        for chunk in self.synth.text2pose(language).stream(text, language):
            yield self.stage.render(
                [self.state], [self.synth.heatmaps.drive(chunk, self.person, self.heatmap_size)]
            )[0]

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
    serve_config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    cfg = pipeline_config(serve_config).resolved(Path(models_dir).resolve().parent)
    cfg.check_models()
    return CaptionRenderer(Synthesizer(cfg), signer, renderer)
