"""The committed models in ``models/``: they load, they fit the size budget, and the real
text → pose → video path works with them in-process (what `make demo` runs over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.video import read_video
from slp_pipeline.config import pipeline_config
from slp_pipeline.synthesize import Synthesizer
from text2pose import TextInputError, TextToPose

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MAX_MIB = 80  # the budget of issue 16: models/ stays < 80 MiB


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_models_fit_the_budget_and_have_cards() -> None:
    size = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file()) / 2**20
    assert size < MAX_MIB
    for folder in ("pose_estimator", "pgmm/full-small", "text2pose/de"):
        assert (MODELS / folder / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        ("de", "Morgen regnet es im Norden.", {"REGEN", "NORD"}),
        ("zh", "我明天去北京。", {"明天", "北京"}),
    ],
)
def test_text2pose_models(language: str, text: str, expected: set[str]) -> None:
    model = TextToPose.from_pretrained(MODELS / "text2pose" / language)
    assert model.language == language
    (glosses,) = model.glosses(text)
    assert expected <= set(glosses)  # the trained model, not a random one
    poses = model.generate(text)
    assert 25 <= len(poses) <= 400 and poses.layout == "wholebody133"
    with pytest.raises(TextInputError):
        model.generate("   ")


def test_renderers_and_pose_estimator_load() -> None:
    for name, variant in (("full-small", "full"), ("tpsmm-small", "tpsmm")):
        model = PGMM.from_pretrained(MODELS / "pgmm" / name, variant=variant, image_size=128)
        assert all(p.dtype == torch.float32 for p in model.parameters())
    HRNetLite.from_pretrained(MODELS / "pose_estimator")


def test_end_to_end_readers_are_shipped_video_readers() -> None:
    """``slp eval --task text`` reads every language with a shipped reader that was trained on
    the evaluator's readings of video (the ``*_read`` folders), for the language it scores."""
    from pgmm.metrics.recognizer import PoseCTCRecognizer
    from slp_pipeline.evaluate_text import DEFAULT_RECOGNIZERS

    assert set(DEFAULT_RECOGNIZERS) == {"de", "zh"}
    for language, folder in DEFAULT_RECOGNIZERS.items():
        assert folder.name == f"{language}_read"
        reader = PoseCTCRecognizer.from_pretrained(REPO / folder)
        assert reader.config.language == language
        assert (REPO / folder / "MODEL_CARD.md").is_file()


def test_synthesize_with_the_shipped_models(tmp_path: Path) -> None:
    serve = yaml.safe_load((REPO / "configs/serve/cpu.yaml").read_text())
    config = pipeline_config(serve).resolved(REPO)
    config = type(config)(**{**config.__dict__, "signers_dir": str(tmp_path / "signers")})
    config.check_models()
    out = Synthesizer(config).synthesize(
        "Regen im Norden.", "de", tmp_path / "de.mp4", progress=False
    )
    frames, fps = read_video(out)
    assert fps == 25 and frames.shape[1:] == (128, 128, 3) and len(frames) >= 25
    assert frames.std() > 5  # an image of a signer, not a blank frame
