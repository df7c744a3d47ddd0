"""``TextToPose``: T2G + G2P as one object — streaming, multi-sentence text, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pgmm.data.synth.signer import SynthSigner
from slp_pipeline.cli import main
from text2pose import TextInputError, TextToPose
from text2pose.data import g2p_data_from_sentences
from text2pose.g2p import train_g2p
from text2pose.pipeline import BLEND_FRAMES
from text2pose.t2g import T2GConfig, TextToGloss
from text2pose.tokenizer import Tokenizer
from text2pose.train_t2g import corpus_pairs


@pytest.fixture(scope="module")
def model(shared_data: Path, tmp_path_factory) -> TextToPose:
    """An untrained tiny T2G (its glosses are replaced below) + a briefly trained NAR G2P."""
    torch.manual_seed(0)
    pairs = corpus_pairs("de", "train", shared_data)[:300]
    t2g = TextToGloss(
        T2GConfig(d_model=32, layers=1, heads=2, ffn_dim=64, num_beams=1),
        Tokenizer.train([t for t, _ in pairs], 200, "bpe"),
        Tokenizer.train([" ".join(g) for _, g in pairs], 100_000, "word"),
    )
    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    data = g2p_data_from_sentences(signer, signer.sentences("dev", "de")[:6])
    g2p = train_g2p({"mode": "nar", "hidden_size": 32, "intermediate_size": 64}, data, None,
                    tmp_path_factory.mktemp("g2p"), 5, batch_size=4, progress=False,
                    num_threads=1)  # fmt: skip
    return TextToPose(t2g, g2p)


@pytest.fixture
def fixed_glosses(model: TextToPose, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, non-empty glosses per sentence, so the pose side is what is tested."""
    vocab = ["REGEN", "NORD", "SONNE", "SUED", "MORGEN"]

    def translate(sentences: list[str], num_beams: int | None = None) -> list[list[str]]:
        return [vocab[: 1 + len(s.split()) % 4] for s in sentences]

    monkeypatch.setattr(model.t2g, "translate_normalized", translate)


TEXT = "Morgen regnet es im Norden. Im Süden scheint die Sonne!"


@pytest.mark.usefixtures("fixed_glosses")
@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_stream_equals_generate(model: TextToPose, chunk: int) -> None:
    whole = model.generate(TEXT)
    parts = list(model.generate_stream(TEXT, chunk_frames=chunk))
    assert all(1 <= len(p) <= chunk for p in parts)
    streamed = np.concatenate([p.data for p in parts])
    np.testing.assert_array_equal(streamed, whole.data)
    assert whole.layout == "wholebody133" and whole.fps == 25


@pytest.mark.usefixtures("fixed_glosses")
def test_sentences_are_joined_without_a_jump(model: TextToPose) -> None:
    first = model.generate("Morgen regnet es im Norden.")
    both = model.generate(TEXT)
    n = len(first)
    np.testing.assert_array_equal(both.data[:n], first.data)
    # the first frame of the second sentence moves only 1/(BLEND+1) of the way from the last pose
    alone = model.generate("Im Süden scheint die Sonne!")
    step = np.abs(both.xy[n] - both.xy[n - 1]).max()
    jump = np.abs(alone.xy[0] - first.xy[-1]).max()
    assert step <= jump / (BLEND_FRAMES + 1) + 1e-5


@pytest.mark.usefixtures("fixed_glosses")
def test_save_load_identical(model: TextToPose, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "t2p")
    again = TextToPose.from_pretrained(tmp_path / "t2p")
    again.t2g.translate_normalized = model.t2g.translate_normalized
    np.testing.assert_array_equal(again.generate(TEXT).data, model.generate(TEXT).data)
    assert again.language == "de"


def test_bad_text(model: TextToPose, tmp_path: Path) -> None:
    for text in ("", "   ", "🌧️", "x" * 6000, "今天下雨"):
        with pytest.raises(TextInputError):
            model.generate(text)
    with pytest.raises(FileNotFoundError, match="not a text2pose model folder"):
        TextToPose.from_pretrained(tmp_path)


def test_pack_cli(model: TextToPose, tmp_path: Path) -> None:
    model.t2g.save_pretrained(tmp_path / "t2g")
    model.g2p.save_pretrained(tmp_path / "g2p")
    argv = ["text2pose", "pack", "--t2g", str(tmp_path / "t2g"), "--g2p", str(tmp_path / "g2p")]
    assert main([*argv, "--out", str(tmp_path / "packed")]) == 0
    assert TextToPose.from_pretrained(tmp_path / "packed").language == "de"
    assert main([*argv[:-1], str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_a_runaway_gloss_sequence_is_cut_not_fatal(
    model: TextToPose, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = model.g2p.config.max_glosses - 2
    monkeypatch.setattr(model.t2g, "translate_normalized", lambda s, n=None: [["REGEN"] * 500])
    (glosses,) = model.glosses("Regen.")
    assert len(glosses) == limit
    assert len(model.generate("Regen.")) > 0
