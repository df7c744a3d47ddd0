"""Glosses with their frame ranges (``TextToPose.timeline``, ``Text2PoseStage.timeline``): what the
page shows under the video and highlights during playback. Checked against the shipped German
text2pose (T2G + dictionary G2P): the spans must be where the poses really show each sign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slp_pipeline.signers import InputError
from slp_pipeline.stages import Text2PoseStage
from text2pose import TextToPose
from text2pose.dictionary import GlossDictionary

REPO = Path(__file__).resolve().parents[1]
TEXT = "Am Tag regnet es im Norden. Morgen scheint die Sonne."


@pytest.fixture(scope="module")
def model() -> TextToPose:
    model = TextToPose.from_pretrained(REPO / "models/text2pose/de")
    assert isinstance(model.g2p, GlossDictionary)  # the shipped default
    return model


def test_spans_are_the_signs_cores_in_the_generated_poses(model: TextToPose) -> None:
    timeline = model.timeline(TEXT)
    poses = model.generate(TEXT)
    assert timeline.timed and timeline.fps == poses.fps == 25
    assert timeline.frames == len(poses)
    assert [s.gloss for s in timeline.spans] == [g for sent in timeline.glosses for g in sent]
    assert len(timeline.glosses) == 2
    assert [s.sentence for s in timeline.spans] == [
        k for k, sent in enumerate(timeline.glosses) for _ in sent
    ]
    ends = [0] + [s.end for s in timeline.spans]
    assert all(a <= s.start < s.end for a, s in zip(ends, timeline.spans, strict=False))
    assert timeline.spans[-1].end < timeline.frames  # the exit and the rest hold follow
    g2p = model.g2p
    first_sentence = [s for s in timeline.spans if s.sentence == 0]  # no blend with a previous
    for span in first_sentence:
        row = g2p._row(span.gloss)
        assert row is not None, span.gloss
        core = g2p._full(g2p._core(row, span.end - span.start))
        np.testing.assert_array_equal(poses.data[span.start : span.end], core)
        # the frame before the span is the transition into the sign, not the sign itself
        assert not np.array_equal(poses.data[span.start - 1], core[0])


def test_stage_rescales_the_spans_to_the_output_rate(model: TextToPose) -> None:
    stage = Text2PoseStage({"de": model}, chunk_frames=16)
    native = stage.timeline(TEXT, "de")
    half = stage.timeline(TEXT, "de", fps=12.5)
    streamed = sum(len(c) for c in stage.stream(TEXT, "de", fps=12.5))
    assert half.fps == 12.5 and half.frames == streamed
    assert native.frames == sum(len(c) for c in stage.stream(TEXT, "de"))
    for a, b in zip(native.spans, half.spans, strict=True):
        assert b.gloss == a.gloss
        assert b.start == -(-a.start // 2) and b.end == -(-a.end // 2)  # ceil(frame / 2)


def test_stage_errors_and_models_without_glosses(model: TextToPose) -> None:
    class NoGlosses:  # like the SynthSigner stand-in: poses, but no gloss plan
        language = "de"

    stage = Text2PoseStage({"de": model, "xx": NoGlosses()})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="unsupported language"):
        stage.timeline(TEXT, "fr")
    with pytest.raises(InputError):
        stage.timeline("!!!", "de")
    empty = stage.timeline(TEXT, "xx", fps=30)
    assert not empty.timed and empty.spans == [] and empty.fps == 30
