"""Stand-ins for the trained models, so the serving graph can run before any model is trained.

``bench/serve_latency.py`` and ``tests/test_web_graph.py`` measure and check the serving
machinery -- HTTP, queues, batching, streaming, the web page -- which does not depend on what
the models have learnt. They run it with tiny random PGMMs and :class:`SynthTextToPose`, which
signs each word of a text as one SynthSigner sign. It lives with the tests, not in the service:
Serve replicas cannot import it from here, so :func:`tiny_pipeline` ships it to them by value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.lexicon import Sign, build_lexicon, keyed_rng
from pgmm.data.synth.motion import sentence_pose, timeline
from pgmm.data.synth.signer import to_pose_sequence
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.pose.sequence import PoseSequence
from slp_pipeline.config import PipelineConfig, pipeline_config
from text2pose.canonical import FPS, to_canonical
from text2pose.timeline import GlossSpan, GlossTimeline

#: Widths of the unit tests' tiny PGMM (tests/tiny.py): every module runs, in milliseconds.
TINY_PGMM: dict[str, Any] = dict(  # ints and floats, unpacked into PGMMConfig
    num_tps=4,
    backbone_width=0.125,
    dense_block_expansion=8,
    dense_num_blocks=3,
    dense_max_features=32,
    block_expansion=8,
    max_features=32,
    pose_block_expansion=4,
    driving_head_channels=32,
)
TINY_SIZE = 64


class SynthTextToPose:
    """text2pose stand-in: each word one SynthSigner sign of ``FRAMES_PER_WORD`` frames."""

    FRAMES_PER_WORD = 12  # ~2 signs/s at 25 fps, about PHOENIX-2014T's pace

    def __init__(self, language: str) -> None:
        self.language = language

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SynthTextToPose:
        """The folder's name is the language; the folder itself holds nothing."""
        return cls(Path(directory).name)

    def _signs(self, text: str) -> list[Sign]:
        words = [w.upper() for w in text.split()]
        if not words:
            raise ValueError("empty text")
        lexicon = build_lexicon({self.language: words})
        return [lexicon[(self.language, w)] for w in words]

    def timeline(self, text: str) -> GlossTimeline:
        """Each word a gloss, timed where :func:`sentence_pose` signs it (the same schedule),
        so the page's gloss highlighting runs against the tiny graph too."""
        words = [w.upper() for w in text.split()]
        signs = self._signs(text)
        frames = self.FRAMES_PER_WORD * len(signs)
        # hand_tracks samples frame k at time k + 0.5: a segment [a, b) holds the frames
        # ceil(a - 0.5) .. ceil(b - 0.5) - 1.
        spans = [
            GlossSpan(words[j], 0, math.ceil(a - 0.5), math.ceil(b - 0.5))
            for kind, j, a, b in timeline([s.duration for s in signs], frames)
            if kind == "sign"
        ]
        return GlossTimeline([words], spans, frames, timed=True, fps=FPS)

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        signs = self._signs(text)
        frames = self.FRAMES_PER_WORD * len(signs)
        pose = sentence_pose(signs, frames, make_identity(0), keyed_rng(0, text))
        seq = to_canonical(to_pose_sequence(pose))
        for start in range(0, len(seq), chunk_frames):
            yield seq[start : start + chunk_frames]


def tiny_pipeline(root: Path, serve_config: Mapping[str, Any]) -> PipelineConfig:
    """Write tiny random models under ``root``; the serve config's pipeline settings with its
    model paths pointing at them and text2pose replaced by :class:`SynthTextToPose`."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    torch.manual_seed(0)
    for variant in ("full", "tpsmm"):
        cfg = PGMMConfig(variant=variant, image_size=TINY_SIZE, **TINY_PGMM)
        PGMM(cfg).save_pretrained(root / "pgmm" / variant)
    HRNetLite(HRNetLiteConfig(widths=(8, 16), stem_width=8)).save_pretrained(root / "pe")
    for lang in ("de", "zh"):
        (root / "t2p" / lang).mkdir(parents=True)
    config = pipeline_config(serve_config)
    config.text2pose = {lang: str(root / "t2p" / lang) for lang in ("de", "zh")}
    config.renderers = {
        "full": str(root / "pgmm/full"),
        "tpsmm": str(root / "pgmm/tpsmm"),
        "skeleton": "skeleton",
    }
    config.pose_estimator = str(root / "pe")
    config.upload_poses = "pe"  # the tiny P_e: no MediaPipe needed by the serving tests
    config.signers_dir = str(root / "signers")
    config.text2pose_loader = SynthTextToPose.from_pretrained
    return config
