"""Gloss -> pose: data, AR/NAR GlossToPose, metrics and baselines.

The two models are trained once per module on the four shortest PHOENIX dev sentences
(overfitting them; ~15 s on one thread together) and then checked for what inference must
guarantee: streaming == non-streaming, batched == unbatched, save -> load, the hard max length.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from text2pose.baselines import LexiconBaseline, MeanPoseBaseline
from text2pose.data import G2PData, GlossVocab, build_g2p_data, g2p_data_from_sentences
from text2pose.g2p import G2PConfig, GlossToPose, train_g2p
from text2pose.metrics import dtw, dtw_mje, evaluate_g2p

# Measured on the 4 sentences after the runs below: DTW-MJE AR 0.022, NAR 0.010 (mean pose
# ~0.06); length error AR 15 %, NAR 0 %.
AR_MAX_MJE, NAR_MAX_MJE = 0.035, 0.02

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def signer(shared_data: Path):
    from pgmm.data.synth.signer import SynthSigner

    return SynthSigner(data_dir=shared_data, languages=["de"])


@pytest.fixture(scope="module")
def short_data(signer) -> G2PData:
    sentences = sorted(signer.sentences("dev", "de"), key=lambda s: (s.num_frames, s.id))[:4]
    return g2p_data_from_sentences(signer, sentences)


def _train(mode: str, data: G2PData, out: Path, steps: int) -> tuple[GlossToPose, Path]:
    config = {"mode": mode, "dropout": 0.0}
    model = train_g2p(config, data, data, out, steps, batch_size=4, lr=3e-3, progress=False,
                      eval_every=steps, num_threads=1)  # fmt: skip
    return model, out


@pytest.fixture(scope="module")
def ar_run(short_data, tmp_path_factory) -> tuple[GlossToPose, Path]:
    return _train("ar", short_data, tmp_path_factory.mktemp("ar"), 400)


@pytest.fixture(scope="module")
def nar_run(short_data, tmp_path_factory) -> tuple[GlossToPose, Path]:
    return _train("nar", short_data, tmp_path_factory.mktemp("nar"), 200)


@pytest.fixture(params=["ar", "nar"])
def run(request) -> tuple[GlossToPose, Path]:
    return request.getfixturevalue(f"{request.param}_run")


def _log(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "log.csv").open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- data
def test_vocab_roundtrip_and_unknown(tmp_path: Path) -> None:
    vocab = GlossVocab.build([("A", "B"), ("B", "C")])
    assert vocab.tokens[:4] == GlossVocab.SPECIALS and vocab.tokens[4] == "B"
    ids = vocab.encode(["A", "ZZZ"])
    assert ids == [vocab.bos_id, vocab.index["A"], vocab.unk_id, vocab.eos_id]
    vocab.save(tmp_path / "v.json")
    assert GlossVocab.load(tmp_path / "v.json").tokens == vocab.tokens
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="not a gloss vocabulary"):
        GlossVocab.load(tmp_path / "bad.json")


def test_data_durations_tile_sentences_and_cache_roundtrips(signer, tmp_path: Path) -> None:
    data = build_g2p_data(signer, "dev", "de", tmp_path, max_sentences=5, progress=False)
    for pose, dur, glosses in zip(data.poses, data.durations, data.glosses, strict=True):
        assert pose.shape[1:] == (133, 2) and pose.dtype == np.float16
        assert len(dur) == len(glosses) and dur.sum() == len(pose) and (dur > 0).all()
    assert not data.labelled[17:23].any() and data.labelled[91:].all()  # no feet; both hands
    again = build_g2p_data(signer, "dev", "de", tmp_path, max_sentences=5, progress=False)
    assert again.glosses == data.glosses and again.ids == data.ids
    assert all(np.array_equal(a, b) for a, b in zip(again.poses, data.poses, strict=True))


# --------------------------------------------------------------------------- metrics
def _brute_force_dtw(cost: np.ndarray) -> tuple[float, int]:
    """Minimum over every monotone path, enumerated recursively, with its length."""
    n, m = cost.shape

    def paths(i: int, j: int):
        if (i, j) == (n - 1, m - 1):
            yield cost[i, j], 1
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                for total, length in paths(i + di, j + dj):
                    yield cost[i, j] + total, length + 1

    return min(paths(0, 0))


def test_dtw_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 4), (3, 2), (4, 4), (5, 3), (2, 6)]:
        cost = rng.random((n, m))
        total, length = dtw(cost)
        ref_total, ref_length = _brute_force_dtw(cost)
        assert total == pytest.approx(ref_total, abs=1e-12) and length == ref_length


def test_dtw_mje_ignores_timing_but_not_position() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((12, 133, 2))
    slowed = np.repeat(target, 2, axis=0)  # the same motion at half speed
    assert dtw_mje(slowed, target) == pytest.approx(0.0, abs=1e-12)
    shifted = target.copy()
    shifted[:, 91:, 0] += 0.1  # both hands 0.1 to the side
    assert dtw_mje(shifted, target, "hands") == pytest.approx(0.1, abs=1e-9)
    assert 0.0 < dtw_mje(shifted, target) < 0.1


# --------------------------------------------------------------------------- models
def test_overfits_short_sentences(run, short_data) -> None:
    model, out = run
    rows = _log(out)
    first, last = float(rows[0]["frames"]), float(rows[-1]["frames"])
    assert last < first / 5, (first, last)
    assert rows[-1]["dev_loss"] != ""
    scores = evaluate_g2p(model, short_data.glosses, short_data.poses)
    assert scores["dtw_mje"] < (AR_MAX_MJE if model.config.mode == "ar" else NAR_MAX_MJE), scores
    assert scores["duration_error_relative"] < 0.3, scores


def test_stream_equals_generate(run, short_data) -> None:
    model, _ = run
    glosses = short_data.glosses[1]
    full = model.generate([glosses])[0]
    chunks = list(model.generate_stream(glosses, chunk_frames=7))
    assert all(1 <= len(c) <= 7 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), full.data)
    assert full.data.shape[1:] == (133, 3) and full.fps == 25.0 and full.layout == "wholebody133"


def test_batched_equals_unbatched(run, short_data) -> None:
    model, _ = run
    batched = model.generate(short_data.glosses)
    for glosses, seq in zip(short_data.glosses, batched, strict=True):
        single = model.generate([glosses])[0]
        assert single.data.shape == seq.data.shape
        np.testing.assert_allclose(single.data, seq.data, atol=1e-5)


def test_save_load_gives_identical_outputs(run, short_data, tmp_path: Path) -> None:
    model, _ = run
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "vocab.json"]  # fmt: skip
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 10e6
    loaded = GlossToPose.from_pretrained(tmp_path / "m")
    glosses = [*short_data.glosses[:2], ["NEVER_SEEN_GLOSS", short_data.glosses[0][0]]]
    for a, b in zip(model.generate(glosses), loaded.generate(glosses), strict=True):
        assert np.array_equal(a.data, b.data)


def test_hard_max_length(run, short_data) -> None:
    model, _ = run
    for seq in model.generate(short_data.glosses, max_frames=9):
        assert 1 <= len(seq) <= 9
    assert sum(len(c) for c in model.generate_stream(short_data.glosses[0], 4, max_frames=6)) <= 6
    with pytest.raises(ValueError, match="max_frames"):
        model.generate(short_data.glosses, max_frames=model.config.max_frames + 1)


def test_untrained_ar_stops_at_max_length() -> None:
    vocab = GlossVocab.build([("A", "B")])
    model = GlossToPose(G2PConfig(vocab_size=len(vocab), max_frames=16), vocab)
    with torch.no_grad():
        model.head.bias[-1] = -5.0  # the counter never approaches 1
    assert [len(s) for s in model.generate([["A"], ["B", "A"]])] == [16, 16]


def test_corrupt_or_incomplete_checkpoint_is_a_clear_error(run, tmp_path: Path) -> None:
    model, _ = run
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        GlossToPose.from_pretrained(folder)
    (folder / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        GlossToPose.from_pretrained(folder)


def test_resume_is_bit_exact(short_data, tmp_path: Path) -> None:
    config = {"mode": "ar", "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
              "encoder_layers": 1, "decoder_layers": 1}  # fmt: skip
    kwargs = dict(batch_size=2, progress=False, checkpoint_every=2, num_threads=1)
    whole = train_g2p(config, short_data, None, tmp_path / "whole", 4, **kwargs)
    train_g2p(config, short_data, None, tmp_path / "split", 2, **kwargs)
    resumed = train_g2p(config, short_data, None, tmp_path / "split", 4, **kwargs)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- baselines
def test_baselines_generate_canonical_sequences(signer, short_data) -> None:
    glosses = [*short_data.glosses, ["NEVER_SEEN_GLOSS"]]
    mean = MeanPoseBaseline(short_data)
    lexicon = LexiconBaseline(signer, short_data)
    for baseline in (mean, lexicon):
        out = baseline.generate(glosses)
        assert len(out) == len(glosses)
        for seq in out:
            assert seq.data.shape[1:] == (133, 3) and len(seq) >= 1
            assert seq.layout == "wholebody133" and seq.fps == 25.0 and seq.width == 256
            assert np.isfinite(seq.data).all()
    # Lexicon timing follows the mean training durations: on its own training sentences each
    # length is within a few frames of the truth.
    lengths = [len(s) for s in lexicon.generate(short_data.glosses)]
    assert np.abs(np.array(lengths) - short_data.num_frames).max() <= 4
    assert evaluate_g2p(lexicon, short_data.glosses, short_data.poses)["dtw_mje"] < 0.05


def test_back_translation_reads_the_lexicon_but_not_the_mean_pose(signer, short_data) -> None:
    """The shipped German recognizer reads glosses back from lexicon poses (SynthSigner's own
    signs) far better than from the mean pose, which carries no sign at all."""
    from pgmm.metrics.recognizer import PoseCTCRecognizer

    recognizer = PoseCTCRecognizer.from_pretrained(REPO / "models" / "recognizer" / "de")
    glosses, poses = short_data.glosses, short_data.poses
    lexicon = evaluate_g2p(
        LexiconBaseline(signer, short_data), glosses, poses, recognizer=recognizer
    )
    mean = evaluate_g2p(MeanPoseBaseline(short_data), glosses, poses, recognizer=recognizer)
    assert mean["bt_wer"] >= 0.9 and mean["bt_bleu4"] == 0.0
    assert lexicon["bt_wer"] < 0.5 < mean["bt_wer"], (lexicon, mean)


def test_direct_t2p_data_keys_the_same_poses_by_text(signer, short_data) -> None:
    """The T2P variant's data: same poses, text tokens instead of glosses, frames shared
    equally among the tokens (whole frames that add up to each sentence)."""
    from text2pose.data import as_text_data, text_tokens

    text = as_text_data(short_data, signer, "dev")
    assert text.ids == short_data.ids and text.poses is not short_data.glosses
    for tokens, poses, durations in zip(text.glosses, text.poses, text.durations, strict=True):
        assert len(tokens) == len(durations) and durations.sum() == len(poses)
        assert durations.max() - durations.min() <= 1
        assert all(t == t.lower() for t in tokens)  # normalised like the T2G input
    # Punctuation stays a token, as in the corpus text the models train on.
    assert text_tokens("Am Montag: Regen!", "de") == ("am", "montag", ":", "regen", "!")
    assert text_tokens("明天 下雨。", "zh") == ("明", "天", "下", "雨", "。")


def test_back_translation_sees_only_the_frame(short_data) -> None:
    """Hands resting below the canvas keep exact coordinates in the G2P targets but a camera
    cannot see them: ``camera_view`` drops exactly those points (SynthSigner's own labels),
    nothing inside the frame."""
    from text2pose.baselines import canonical_sequence
    from text2pose.metrics import camera_view

    seq = canonical_sequence(short_data.poses[0], short_data.labelled)
    seen = camera_view(seq)
    outside = ~np.all((seq.xy >= 0) & (seq.xy <= 1), axis=-1)
    assert outside.any() and not outside.all()  # hands at rest below the frame
    assert (seen.confidence[outside] == 0).all()
    np.testing.assert_array_equal(seen.confidence[~outside], seq.confidence[~outside])
    np.testing.assert_array_equal(seen.xy, seq.xy)
