"""``slp train text2pose --device``: T2G and G2P train and resume on the device they are given.

No GPU is lent to CI (issue 21): an explicit ``cpu`` trains and resumes, and a device the host
cannot provide (a typo, or CUDA reported absent) is a one-line :class:`DeviceError` before any
file is written or any pose target built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgmm.checkpoint import DeviceError
from slp_pipeline.cli import main
from text2pose.data import g2p_data_from_sentences
from text2pose.g2p import train_g2p
from text2pose.t2g import T2GConfig
from text2pose.train_g2p import G2PTrainConfig, run_g2p
from text2pose.train_t2g import T2GTrainConfig, train_t2g

TINY_T2G = T2GConfig(d_model=32, layers=1, heads=2, ffn_dim=64, text_vocab_size=200)
TINY_G2P = {"mode": "ar", "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
            "encoder_layers": 1, "decoder_layers": 1}  # fmt: skip
ABSENT = [("gpu", "unknown device 'gpu'"), ("cuda", "no usable CUDA device")]


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _t2g_config(epochs: int) -> T2GTrainConfig:
    return T2GTrainConfig(model=TINY_T2G, epochs=epochs, batch_tokens=200, warmup_steps=2,
                          average_best=1, max_train=6, max_eval=2, progress=False)  # fmt: skip


def test_t2g_trains_and_resumes_on_an_explicit_cpu(shared_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train_t2g(_t2g_config(1), tmp_path, shared_data, device="cpu")
    results = train_t2g(_t2g_config(2), tmp_path, shared_data, device=torch.device("cpu"))
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert "cuda_rng" not in torch.load(tmp_path / "state.pt", weights_only=True)
    assert set(results) >= {"dev", "test"} and (tmp_path / "model").is_dir()


@pytest.mark.parametrize(("device", "message"), ABSENT)
@pytest.mark.usefixtures("no_cuda")
def test_t2g_refuses_a_device_it_cannot_have(tmp_path: Path, device: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        train_t2g(_t2g_config(1), tmp_path / "run", device=device)
    assert not (tmp_path / "run").exists()


def test_g2p_trains_and_resumes_on_an_explicit_cpu(shared_data: Path, tmp_path: Path) -> None:
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    sentences = sorted(signer.sentences("dev", "de"), key=lambda s: (s.num_frames, s.id))[:2]
    data = g2p_data_from_sentences(signer, sentences)
    kwargs = dict(batch_size=2, progress=False, checkpoint_every=1, num_threads=1, device="cpu")
    train_g2p(TINY_G2P, data, None, tmp_path, 1, **kwargs)
    model = train_g2p(TINY_G2P, data, None, tmp_path, 2, **kwargs)  # optimizer state read back
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert (tmp_path / "model").is_dir()


@pytest.mark.parametrize(("device", "message"), ABSENT)
@pytest.mark.usefixtures("no_cuda")
def test_g2p_refuses_a_device_before_building_targets(
    tmp_path: Path, device: str, message: str
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DeviceError, match=message):
        run_g2p(G2PTrainConfig(cache_dir=str(cache)), tmp_path / "run", device=device)
    assert not cache.exists() and not (tmp_path / "run").exists()


@pytest.mark.usefixtures("no_cuda")
def test_train_text2pose_device_flag_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for stage in ("t2g", "g2p"):
        code = main(["train", "text2pose", "--stage", stage, "--lang", "de",
                     "--out", str(tmp_path / stage), "--device", "cuda"])  # fmt: skip
        assert code == 2
        assert "no usable CUDA device" in capsys.readouterr().err
    code = main(["train", "text2pose", "--stage", "dict", "--lang", "de",
                 "--out", str(tmp_path / "dict"), "--device", "cuda"])  # fmt: skip
    assert code == 2 and "--device does not apply to --stage dict" in capsys.readouterr().err


def test_every_language_recipe_named_by_lang_exists() -> None:
    """``--lang de`` resolves to ``configs/text2pose/<stage>-de.yaml`` in the repository (the
    folder moved once with the CLI module and the flag broke without any other test noticing)."""
    from slp_pipeline.cli.text2pose import CONFIGS

    for stage in ("t2g", "g2p", "dict"):
        for lang in ("de", "zh"):
            assert (CONFIGS / f"{stage}-{lang}.yaml").is_file(), (stage, lang)
