"""``SentenceLength`` (text2pose/length.py): a sentence's length read from its text, joined
with the gloss estimate; and its use on the text path (dictionary ``frames``, TextToPose)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from text2pose.length import SentenceLength, SentenceLengthConfig

# Every word takes its own number of frames; a sentence lasts their sum plus 20 frames.
COST = {"regen": 10.0, "sonne": 14.0, "wind": 8.0, "morgen": 12.0, "nord": 6.0, "und": 3.0}


def _corpus(count: int, seed: int) -> tuple[list[str], list[float]]:
    rng = np.random.default_rng(seed)
    texts, frames = [], []
    for _ in range(count):
        words = list(rng.choice(list(COST), int(rng.integers(2, 7))))
        texts.append(" ".join(words))
        frames.append(20.0 + sum(COST[w] for w in words))
    return texts, frames


@pytest.fixture(scope="module")
def fitted() -> SentenceLength:
    texts, frames = _corpus(400, 0)
    return SentenceLength.fit(
        SentenceLengthConfig("de", ridge=0.1, gloss_weight=0.0), texts, frames
    )


def test_reads_unseen_sentences_lengths_from_their_words(fitted: SentenceLength) -> None:
    texts, frames = _corpus(100, 1)
    predicted = np.array([fitted.text_frames(t) for t in texts])
    relative = np.abs(predicted - np.array(frames)) / np.array(frames)
    assert relative.mean() < 0.05  # log-linear in the counts: close, not exact, to a sum
    # A slow word makes a sentence longer than a quick one of the same word count.
    assert fitted.text_frames("sonne sonne regen") > fitted.text_frames("nord nord regen")
    # An unseen word adds no term, only its count.
    assert fitted.text_frames("regen hagel") > fitted.text_frames("regen")


def test_join_is_a_weighted_geometric_mean(fitted: SentenceLength) -> None:
    text = "regen und wind"
    t_text = fitted.text_frames(text)
    for w, expected in ((0.0, t_text), (1.0, 50.0), (0.5, np.sqrt(50.0 * t_text))):
        fitted.config = SentenceLengthConfig("de", 0.1, w)
        assert fitted.frames(text, 50.0) == pytest.approx(expected)
    fitted.config = SentenceLengthConfig("de", 0.1, 0.0)
    with pytest.raises(ValueError, match="gloss_frames"):
        fitted.frames(text, 0.0)


def test_save_load_round_trip_and_clear_errors(fitted: SentenceLength, tmp_path: Path) -> None:
    folder = fitted.save_pretrained(tmp_path / "length")
    loaded = SentenceLength.from_pretrained(folder)
    assert loaded.config == fitted.config and loaded.tokens == fitted.tokens
    assert loaded.text_frames("morgen regen") == fitted.text_frames("morgen regen")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "SentenceLength"
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a sentence length model"):
        SentenceLength.from_pretrained(folder)
    with pytest.raises(FileNotFoundError):
        SentenceLength.from_pretrained(tmp_path / "missing")


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="gloss_weight"):
        SentenceLengthConfig("de", gloss_weight=1.5)
    with pytest.raises(ValueError, match="language"):
        SentenceLengthConfig("fr")
    with pytest.raises(ValueError, match="texts"):
        SentenceLength.fit(SentenceLengthConfig("de"), ["regen"], [])
