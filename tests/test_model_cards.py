"""Every headline held-out number a shipped model's card claims, recomputed from the model.

Each test reads the claimed number (and, where the card states it, the protocol: split,
sentence or video count, frames) from ``models/**/MODEL_CARD.md`` itself and recomputes it from
the shipped weights, so a card that drifts from its model -- a retrained model shipped without
updating the card, or a card edited by hand -- fails here. A card whose wording no longer
matches the pattern fails with a message saying so: then update the pattern with the card.

Slow (about 1-3 CPU minutes each, on one thread): ``pytest -m slow tests/test_model_cards.py``.
Tolerances are stated per test: the rounding of the card, plus, where the card reports the
float32 run model but the float16 file ships, what the card says that storage changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import evaluate
from pgmm.metrics.recognizer import PoseCTCRecognizer, evaluate_recognizer
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.training.pose_estimator import evaluate_pck
from text2pose.pipeline import TextToPose
from text2pose.t2g import gloss_scores
from text2pose.train_t2g import corpus_pairs

MODELS = Path(__file__).resolve().parents[1] / "models"
NUMBER = r"\**([0-9]+(?:\.[0-9]+)?)\**"  # a number, possibly in markdown bold

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def card(folder: str) -> str:
    """The card's text with runs of whitespace (line breaks included) as single spaces."""
    return " ".join((MODELS / folder / "MODEL_CARD.md").read_text(encoding="utf-8").split())


def claimed(folder: str, pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` in the card of ``folder``; fails clearly if it is absent."""
    found = re.search(pattern, card(folder))
    if found is None:
        pytest.fail(f"models/{folder}/MODEL_CARD.md no longer matches {pattern!r}: update the test")
    return found.groups()


def table_row(folder: str, first_cell: str, cells: int) -> list[float]:
    """The ``cells`` numbers after ``| first_cell |`` in a markdown table of the card."""
    row = r"\|\s*" + first_cell + r"\s*" + r"\|\s*" + r"\s*\|\s*".join([NUMBER] * cells)
    return [float(x) for x in claimed(folder, row + r"\s*\|")]


# --------------------------------------------------------------------------- recognizer
@pytest.mark.parametrize("language", ["de", "zh"])
def test_recognizer_card(language: str, shared_data: Path) -> None:
    """Test-split WER on ground-truth SynthSigner poses, greedy; the card rounds to 3 places."""
    sentences, wer = table_row(f"recognizer/{language}", "test", 2)
    signer = SynthSigner(data_dir=shared_data, languages=[language])
    assert len(signer.sentences("test", language)) == sentences
    model = PoseCTCRecognizer.from_pretrained(MODELS / "recognizer" / language)
    assert evaluate_recognizer(model, signer, "test", language) == pytest.approx(wer, abs=0.0005)


@pytest.mark.parametrize("language", ["de", "zh"])
def test_recognizer_read_card(language: str, shared_data: Path, tmp_path: Path) -> None:
    """Test-split WER of a video reader (``recognizer/<lang>_read``) from exact poses and from
    the evaluator's readings of SynthSigner's videos (read afresh: ~10 min on one thread for
    de, ~20 for zh); 3 places in the card."""
    from pgmm.training.recognizer import cache_reads

    folder = f"recognizer/{language}_read"
    sentences, wer_poses, wer_read = table_row(folder, "test", 3)
    signer = SynthSigner(data_dir=shared_data, languages=[language])
    test = signer.sentences("test", language)
    assert len(test) == sentences
    model = PoseCTCRecognizer.from_pretrained(MODELS / folder)
    got_poses = evaluate_recognizer(model, signer, "test", language)
    assert got_poses == pytest.approx(wer_poses, abs=0.0005)
    evaluator = HRNetLite.from_pretrained(MODELS / "evaluator").eval()
    reads = cache_reads(signer, test, evaluator, tmp_path, progress=False)
    got = evaluate_recognizer(model, signer, "test", language, samples=reads)
    assert got == pytest.approx(wer_read, abs=0.0005)


# --------------------------------------------------------------------------- text2pose
def t2g_scores(language: str, split: str, data_dir: Path, limit: int | None = None) -> dict:
    """Gloss BLEU/chrF of the shipped T2G on a split, decoded as ``slp text2pose eval`` does
    (its configured beam and repeat guard, batches of 32 normalised sentences)."""
    model = TextToPose.from_pretrained(MODELS / "text2pose" / language)
    pairs = corpus_pairs(language, split, data_dir)[:limit]
    hyps: list[list[str]] = []
    for start in range(0, len(pairs), 32):
        hyps += model.t2g.translate_normalized([t for t, _ in pairs[start : start + 32]])
    return gloss_scores(hyps, [g for _, g in pairs])


@pytest.mark.parametrize("language", ["de", "zh"])
def test_text2pose_card(language: str, shared_data: Path) -> None:
    """Test-split BLEU-1..4 and chrF (the card's table, 2 decimals): exact up to rounding."""
    bleu1, bleu2, bleu3, bleu4, chrf = table_row(f"text2pose/{language}", "test", 5)
    scores = t2g_scores(language, "test", shared_data)
    measured = [scores[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "chrf")]
    assert measured == pytest.approx([bleu1, bleu2, bleu3, bleu4, chrf], abs=0.011)


# --------------------------------------------------------------------------- P_e
def pe_pck(folder: str, identity: int, videos: int, data_dir: Path) -> dict:
    """PCK of a shipped HRNetLite (P_e or the evaluator) on the first ``videos`` test sentences
    rendered for a held-out identity, 8 frames each (what ``slp train pose-estimator`` scores
    into eval.json)."""
    model = HRNetLite.from_pretrained(MODELS / folder)
    held = RenderedSynthSigner("test", 128, identity=identity, max_videos=videos, data_dir=data_dir)
    return evaluate_pck(model, held, frames_per_video=8)


@pytest.mark.parametrize("folder", ["pose_estimator", "evaluator"])
@pytest.mark.parametrize("identity", [10, 11])
def test_pose_estimator_card(folder: str, identity: int, shared_data: Path) -> None:
    """PCK@0.05 (all points, hands) of each held-out identity; the card rounds to 3 places."""
    pck, pck_hands = table_row(folder, rf"{identity} \(held out[^|]*", 2)
    frames, videos = claimed(folder, r"(\d+) evenly spaced frames of each of the first (\d+)")
    result = pe_pck(folder, identity, int(videos), shared_data)
    assert result["frames"] == int(frames) * int(videos)
    assert result["pck"] == pytest.approx(pck, abs=0.0005)
    assert result["pck_hands"] == pytest.approx(pck_hands, abs=0.0005)


# --------------------------------------------------------------------------- PGMM renderers
def renderer_metrics(
    name: str, videos: int, frames: int, data_dir: Path, reader: str = "pose_estimator"
) -> dict:
    """The ablation's pose-driven reconstruction evaluation of a shipped renderer on
    SynthSigner dev, the hand columns read by ``models/<reader>`` (the cards give both P_e's
    and the independent evaluator's reading)."""
    model = PGMM.from_pretrained(MODELS / "pgmm" / name)
    pe = HRNetLite.from_pretrained(MODELS / reader).freeze()
    data = RenderedSynthSigner("dev", 128, max_videos=videos, data_dir=data_dir)
    row = evaluate(
        model, data, "reconstruction", max_frames=frames, drive="pose", evaluator=pe,
        comparison_videos=0, progress=False,
    )  # fmt: skip
    return row["metrics"]


@pytest.mark.parametrize("name", ["full-small", "tpsmm-small"])
def test_renderer_card(name: str, shared_data: Path) -> None:
    """L1, SSIM, hand keypoint error and hand PCK of the card's evaluation.

    The cards report the float32 run model; the float16 file that ships differs by at most
    0.0007 per pixel (full-small card), so L1 may move by that much on top of the card's
    4-decimal rounding; SSIM (3 decimals) gets 0.003, the hand keypoint error (3 decimals,
    read from those pixels by P_e) 0.003, hand PCK (2 decimals) 0.02.
    """
    videos, frames = claimed(
        f"pgmm/{name}", r"SynthSigner dev, (\d+) videos × (\d+) frames, pose-driven"
    )
    l1, ssim, ke_hands, pck_hands = (
        float(x)
        for x in claimed(
            f"pgmm/{name}",
            rf"L1 {NUMBER}, SSIM {NUMBER}, hand keypoint error {NUMBER} "
            rf"\(hand PCK@0\.05 {NUMBER}\)",
        )
    )
    m = renderer_metrics(name, int(videos), int(frames), shared_data)
    assert m["l1"] == pytest.approx(l1, abs=0.00005 + 0.0007)
    assert m["ssim"] == pytest.approx(ssim, abs=0.003)
    assert m["ke_hands"] == pytest.approx(ke_hands, abs=0.003)
    assert m["pck_hands"] == pytest.approx(pck_hands, abs=0.02)
    ev_ke, ev_pck = (
        float(x)
        for x in claimed(
            f"pgmm/{name}",
            rf"evaluator hand keypoint error {NUMBER} \(evaluator hand PCK@0\.05 {NUMBER}\)",
        )
    )
    # The evaluator's reading is of the shipped file (float16; tpsmm-small int8): only the
    # card's rounding.
    m = renderer_metrics(name, int(videos), int(frames), shared_data, reader="evaluator")
    assert m["ke_hands"] == pytest.approx(ev_ke, abs=0.0005)
    assert m["pck_hands"] == pytest.approx(ev_pck, abs=0.005)
