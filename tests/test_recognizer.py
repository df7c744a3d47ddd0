"""Pose-based CTC gloss recogniser (the default WER recogniser): decoding, I/O, learning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pgmm.metrics.recognizer import (
    PoseCTCRecognizer,
    RecognizerConfig,
    VideoGlossRecognizer,
    build_vocabulary,
    ctc_beam_search,
    ctc_greedy_decode,
    evaluate_recognizer,
    pose_features,
    video_keypoints,
)
from pgmm.metrics.wer import GlossRecognizer, wer_for_videos
from pgmm.pose.sequence import PoseSequence
from pgmm.training.recognizer import augment_keypoints, cache_reads, train_recognizer

VOCAB = ("A", "B", "C")


def tiny(vocab: tuple[str, ...] = VOCAB, **overrides) -> PoseCTCRecognizer:
    torch.manual_seed(0)
    cfg = {"hidden": 16, "rnn_hidden": 16, "rnn_layers": 1, "dropout": 0.0, **overrides}
    return PoseCTCRecognizer(RecognizerConfig("de", vocab, **cfg)).eval()


def random_keypoints(t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0.2, 0.8, size=(t, 36, 3)).astype(np.float32)
    kp[..., 2] = 1.0
    return kp


# --------------------------------------------------------------------------- decoding
def test_greedy_decoding_collapses_repeats_then_drops_blanks() -> None:
    # blank=0: "a a _ a b b _ _ c c" -> a a b c (the blank separates the two a's)
    assert ctc_greedy_decode([1, 1, 0, 1, 2, 2, 0, 0, 3, 3]) == [1, 1, 2, 3]
    assert ctc_greedy_decode([0, 0, 0]) == []
    assert ctc_greedy_decode([2, 2, 2]) == [2]
    assert ctc_greedy_decode(torch.tensor([0, 3, 0, 3, 3])) == [3, 3]
    assert ctc_greedy_decode([]) == []


def test_beam_search_sums_alignments_where_greedy_does_not() -> None:
    # Frame-wise best path is "_ _" (0.6 * 0.6 = 0.36), but "A" has total probability
    # 0.4*0.6 + 0.6*0.4 + 0.4*0.4 = 0.64 summed over its three alignments.
    probs = np.array([[0.6, 0.4], [0.6, 0.4]])
    lp = np.log(probs)
    assert ctc_greedy_decode(lp.argmax(-1)) == []
    assert ctc_beam_search(lp, beam_width=3) == [1]
    # A confident path: beam search agrees with greedy.
    sharp = np.log(np.array([[0.01, 0.98, 0.01], [0.98, 0.01, 0.01], [0.01, 0.01, 0.98]]))
    assert ctc_beam_search(sharp, beam_width=2) == ctc_greedy_decode(sharp.argmax(-1)) == [1, 2]
    with pytest.raises(ValueError, match="beam_width"):
        ctc_beam_search(lp, beam_width=0)


def test_decoding_maps_ids_to_glosses() -> None:
    model = tiny()
    assert model.encode_glosses(["C", "A"]) == [3, 1]
    assert model.decode_ids([3, 1]) == ["C", "A"]
    with pytest.raises(ValueError, match="not in the de recogniser vocabulary"):
        model.encode_glosses(["A", "UNKNOWN"])


# --------------------------------------------------------------------------- features
def test_features_are_invariant_to_signer_position_and_size() -> None:
    kp = torch.from_numpy(random_keypoints(12))[None]
    moved = kp.clone()
    moved[..., :2] = (kp[..., :2] - 0.5) * 1.7 + torch.tensor([0.3, -0.1])
    lengths = torch.tensor([12])
    assert torch.allclose(pose_features(kp, lengths), pose_features(moved, lengths), atol=1e-4)


def test_missing_points_and_padding_give_zero_features() -> None:
    kp = torch.from_numpy(random_keypoints(10))[None]
    kp[0, :, 20, 2] = 0.0  # one point never seen
    feats = pose_features(kp, torch.tensor([7])).reshape(1, 10, 36, 5)
    assert feats[0, :, 20].abs().sum() == 0
    assert feats[0, 7:].abs().sum() == 0
    assert torch.isfinite(feats).all()
    # No shoulders at all: a finite fallback normalisation, not NaN.
    kp[0, :, 1:3, 2] = 0.0
    assert torch.isfinite(pose_features(kp, torch.tensor([10]))).all()


def test_augmentation_keeps_shape_and_ctc_feasibility() -> None:
    kp = random_keypoints(100)
    kp[:, 5, 2] = 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = augment_keypoints(kp, rng, num_glosses=12)
        assert out.shape[1:] == (36, 3) and out.dtype == np.float32
        assert 6 * 12 <= len(out) <= math.ceil(100 * 1.25)
        assert (out[:, 5, 2] == 0).all()  # a missing point never becomes visible
        assert ((out[..., 2] == 0) | ((out[..., 2] >= 0.5) & (out[..., 2] <= 1))).all()


def test_augmentation_can_keep_an_estimators_confidences() -> None:
    """Readings of a real estimator keep their own peak heights (only dropped points change)."""
    kp = random_keypoints(60)
    kp[..., 2] = np.linspace(0.05, 0.95, 36, dtype=np.float32)  # one height per point
    out = augment_keypoints(
        kp, np.random.default_rng(1), 6, point_drop=0.0, rescale_confidence=False
    )
    assert np.array_equal(out[..., 2], np.broadcast_to(kp[0, :, 2], out[..., 2].shape))
    dropped = augment_keypoints(
        kp, np.random.default_rng(1), 6, point_drop=0.5, rescale_confidence=False
    )
    kept = dropped[..., 2] > 0
    assert 0.3 < kept.mean() < 0.7
    assert np.array_equal(dropped[..., 2][kept], np.broadcast_to(kp[0, :, 2], kept.shape)[kept])


# --------------------------------------------------------------------------- model I/O
def test_forward_shapes_and_batch_consistency() -> None:
    model = tiny()
    a, b = random_keypoints(23, 1), random_keypoints(40, 2)
    log_probs = model.log_probs([a, b])
    assert [tuple(lp.shape) for lp in log_probs] == [(5, 4), (10, 4)]
    assert torch.allclose(log_probs[0].exp().sum(-1), torch.ones(5), atol=1e-5)
    # Padding must not change a sequence's output: batched == alone.
    assert torch.allclose(log_probs[0], model.log_probs([a])[0], atol=1e-5)
    assert isinstance(model, GlossRecognizer)
    assert all(g in VOCAB for g in model.recognize(b))


def test_recognize_accepts_pose_sequences_and_short_clips() -> None:
    model = tiny()
    kp = random_keypoints(30)
    seq = PoseSequence(kp, layout="pgmm36")
    assert model.recognize(seq) == model.recognize(kp) == model.recognize(torch.from_numpy(kp))
    wholebody = PoseSequence(
        np.concatenate([kp, kp, kp, kp[:, :25]], axis=1), layout="wholebody133"
    )
    assert isinstance(model.recognize(wholebody), list)
    assert isinstance(model.recognize(kp[:2]), list)  # < 4 frames: padded, not an error


@pytest.mark.parametrize(
    ("sample", "error", "match"),
    [
        (np.zeros((10, 133, 3), np.float32), ValueError, r"\(T, 36, 3\)"),
        (np.zeros((10, 36, 2), np.float32), ValueError, r"\(T, 36, 3\)"),
        (np.zeros((36, 3), np.float32), ValueError, r"\(T, 36, 3\)"),
        (np.zeros((0, 36, 3), np.float32), ValueError, "empty"),
        (np.full((8, 36, 3), np.nan, np.float32), ValueError, "NaN"),
        ([[0.0] * 3] * 36, TypeError, "PoseSequence"),
        (np.zeros((8, 36, 3), dtype=object), TypeError, "numeric"),
    ],
)
def test_recognize_rejects_bad_input(sample, error, match) -> None:
    with pytest.raises(error, match=match):
        tiny().recognize(sample)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        RecognizerConfig("de", ())
    with pytest.raises(ValueError, match="duplicate"):
        RecognizerConfig("de", ("A", "A"))
    with pytest.raises(ValueError, match="reserved"):
        RecognizerConfig("de", ("A", "<blank>"))
    with pytest.raises(ValueError, match="odd"):
        RecognizerConfig("de", VOCAB, kernel_size=4)
    with pytest.raises(ValueError, match="unknown RecognizerConfig keys"):
        RecognizerConfig.from_dict({"language": "de", "vocab": ["A"], "width": 3})
    model = tiny()
    with pytest.raises(ValueError, match="lengths"):
        model(torch.zeros(1, 8, 36, 3), torch.tensor([3]))


def test_save_load_round_trip_and_errors(tmp_path) -> None:
    model = tiny(vocab=("ÜBER", "B", "C"))
    kp = torch.from_numpy(random_keypoints(33))
    directory = model.save_pretrained(tmp_path / "rec")
    loaded = PoseCTCRecognizer.from_pretrained(directory)
    assert loaded.config == model.config
    assert torch.equal(loaded.log_probs([kp])[0], model.log_probs([kp])[0])
    assert json.loads((directory / "config.json").read_text())["vocab"][0] == "ÜBER"

    with pytest.raises(FileNotFoundError, match="not found"):
        PoseCTCRecognizer.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        PoseCTCRecognizer.from_pretrained(tmp_path / "empty")
    bigger = tiny(vocab=("A", "B", "C", "D"))
    bigger.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(directory / "model.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        PoseCTCRecognizer.from_pretrained(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PoseCTCRecognizer.from_pretrained(directory)


# --------------------------------------------------------------------------- video path
class _FakeEstimator(torch.nn.Module):
    """Stands in for P_e: keypoints are a function of the mean frame brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.from_numpy(random_keypoints(1))[0])
        self.calls: list[int] = []

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3 and images.dtype == torch.float32
        assert float(images.max()) <= 1.0
        self.calls.append(images.shape[0])
        shift = images.mean(dim=(1, 2, 3))[:, None, None] * 0.1
        out = self.anchor[None].repeat(images.shape[0], 1, 1).detach()
        out[..., :2] += shift
        return out


def test_recognize_video_batches_frames_through_the_estimator() -> None:
    model, estimator = tiny(), _FakeEstimator()
    estimator.train()
    frames = np.random.default_rng(0).integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    hyp = model.recognize_video(frames, estimator, batch_size=4)
    assert estimator.calls == [4, 4, 2] and estimator.training  # mode restored
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    assert model.recognize_video(chw, estimator) == hyp
    assert model.recognize_video(list(frames), estimator) == hyp
    kp = video_keypoints(frames, estimator, size=8)
    assert kp.shape == (10, 36, 3)
    wrapper = VideoGlossRecognizer(model, estimator)
    assert wrapper.recognize(frames) == hyp
    # A head that always says "B" (zero weights, bias on B): every video decodes to ["B"].
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-5.0)
        model.head.bias[model.gloss_to_id["B"]] = 5.0
    assert wrapper.recognize(frames) == ["B"]
    # ["B"] vs ["B"]: 0 errors; vs ["A", "B", "C"]: 2 deletions; vs ["A"]: 1 substitution.
    refs = [["B"], ["A", "B", "C"], ["A"]]
    assert wer_for_videos(wrapper, [frames, frames, chw], refs) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        model.recognize_video(torch.zeros(4, 16, 16, 3), estimator)
    with pytest.raises(ValueError, match="empty"):
        model.recognize_video([], estimator)


# --------------------------------------------------------------------------- learning
def test_training_learns_and_resumes(shared_data, tmp_path) -> None:
    """~20 German dev sentences, a few hundred CPU steps: WER on them must fall well below 1.

    An untrained model outputs (almost) nothing, i.e. WER ~1; after 400 steps we observe ~0.25,
    so 0.5 leaves margin while a broken loss, decoder or feature path still fails.
    """
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    sentences = signer.sentences("dev", "de")[:20]
    arch = {"hidden": 128, "rnn_hidden": 128, "rnn_layers": 1, "dropout": 0.0}
    kwargs = dict(
        split="dev", max_sentences=20, batch_size=8, lr=3e-3, noise=0.02, config=arch,
        progress=False, num_threads=1,
    )  # fmt: skip
    threads = torch.get_num_threads()
    untrained = PoseCTCRecognizer(
        RecognizerConfig("de", build_vocabulary(signer.sentences(None, "de")), **arch)
    )
    assert evaluate_recognizer(untrained, signer, "dev", "de", max_sentences=20) > 0.9

    model = train_recognizer(signer, "de", tmp_path, steps=400, checkpoint_every=200, **kwargs)
    assert torch.get_num_threads() == threads  # restored
    wer = evaluate_recognizer(model, signer, "dev", "de", max_sentences=20)
    assert wer < 0.5, f"training WER {wer:.3f} on {len(sentences)} sentences"
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "checkpoints" / "last" / "state.json").is_file()

    # A finished run resumes to the same model without training again.
    again = train_recognizer(signer, "de", tmp_path, steps=400, **kwargs)
    kp = torch.from_numpy(random_keypoints(40))
    assert torch.equal(again.log_probs([kp])[0], model.log_probs([kp])[0])
    with pytest.raises(ValueError, match="no zh/dev sentences"):
        train_recognizer(signer, "zh", tmp_path, steps=10, **kwargs)


def test_readings_are_cached_per_sentence_and_resume(shared_data, tmp_path) -> None:
    """The estimator reads SynthSigner's video of each sentence once; a second call (a resumed
    run) reads the files, and a half-written temporary file is redone, never used."""
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    sentences = signer.sentences("dev", "de")[:2]
    estimator = _FakeEstimator()
    reads = cache_reads(signer, sentences, estimator, tmp_path, progress=False)
    assert [r.shape for r in reads] == [(s.num_frames, 36, 3) for s in sentences]
    assert all(r.dtype == np.float16 for r in reads)
    assert sum(estimator.calls) == sum(s.num_frames for s in sentences)
    # Frames differ in brightness as the signer moves, so the fake readings vary over time.
    assert float(np.ptp(reads[0][:, 0, 0].astype(np.float32))) > 0
    (tmp_path / f"{sentences[1].id}.npy").unlink()
    (tmp_path / f"{sentences[1].id}.tmp.npy").write_bytes(b"half")
    again = cache_reads(signer, sentences, estimator, tmp_path, progress=False)
    assert sum(estimator.calls) == sum(s.num_frames for s in sentences) + sentences[1].num_frames
    assert all(np.array_equal(a, b) for a, b in zip(reads, again, strict=True))
    # Another estimator (other weights) is refused: the folder holds the first one's readings.
    other = _FakeEstimator()
    with torch.no_grad():
        other.anchor.add_(0.01)
    with pytest.raises(ValueError, match="readings by another estimator"):
        cache_reads(signer, sentences, other, tmp_path, progress=False)


def test_training_with_readings_mixes_them_into_batches(shared_data, tmp_path, monkeypatch) -> None:
    """``read_by``: a share of each batch are the estimator's readings (confidences kept), the
    rest exact poses (confidences rescaled), as without it; ``read_sentences`` reads only the
    first sentences, and read items are drawn among those."""
    import pgmm.training.recognizer as rec
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    seen: list[bool] = []
    read_lengths: set[int] = set()
    original = rec.augment_keypoints

    def spy(*args, **kw):
        seen.append(kw.get("rescale_confidence", True))
        if not seen[-1]:
            read_lengths.add(len(args[0]))
        return original(*args, **kw)

    monkeypatch.setattr(rec, "augment_keypoints", spy)
    train_recognizer(
        signer, "de", tmp_path, steps=4, split="dev", max_sentences=3, batch_size=8,
        config={"hidden": 16, "rnn_hidden": 16, "rnn_layers": 1}, progress=False,
        num_threads=1, read_by=_FakeEstimator(), read_fraction=0.5, read_sentences=2,
    )  # fmt: skip
    assert len(list((tmp_path / "reads" / "dev").glob("*.npy"))) == 2
    assert len(seen) == 32 and 8 <= seen.count(False) <= 24
    first_two = {s.num_frames for s in signer.sentences("dev", "de")[:2]}
    assert read_lengths <= first_two
    with pytest.raises(ValueError, match="read_fraction"):
        train_recognizer(signer, "de", tmp_path / "x", steps=1, split="dev", read_fraction=0.0)


def test_interrupted_training_resumes_exactly(shared_data, tmp_path, monkeypatch) -> None:
    """Ctrl-C at step 3 of 6, then resume == 6 uninterrupted steps (same batches, same state)."""
    import pgmm.training.recognizer as rec
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    kwargs = dict(
        steps=6, split="dev", max_sentences=4, batch_size=2, lr=1e-2, checkpoint_every=100,
        config={"hidden": 16, "rnn_hidden": 16, "rnn_layers": 1, "dropout": 0.0},
        progress=False, num_threads=1,
    )  # fmt: skip
    straight = train_recognizer(signer, "de", tmp_path / "straight", **kwargs)

    calls = {"n": 0}
    original = rec.augment_keypoints

    def interrupting(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 3 * 2:  # batch_size samples per step: stop inside step 4
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(rec, "augment_keypoints", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_recognizer(signer, "de", tmp_path / "resumed", **kwargs)
    state = json.loads((tmp_path / "resumed/checkpoints/last/state.json").read_text())
    assert state["step"] == 3
    monkeypatch.setattr(rec, "augment_keypoints", original)
    resumed = train_recognizer(signer, "de", tmp_path / "resumed", **kwargs)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_init_from_continues_a_saved_recogniser(shared_data, tmp_path) -> None:
    """``init_from``: a new run starts from a saved model's weights (a zero-step run returns
    them unchanged), inherits the settings it was not told, and refuses a model whose
    architecture or vocabulary differs; a run folder with a checkpoint resumes instead."""
    from pgmm.data.synth.signer import SynthSigner

    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    arch = {"hidden": 16, "rnn_hidden": 16, "rnn_layers": 1, "dropout": 0.0}
    kwargs = dict(split="dev", max_sentences=4, batch_size=2, progress=False, num_threads=1)
    base = train_recognizer(signer, "de", tmp_path / "base", steps=2, config=arch, **kwargs)
    base.half().save_pretrained(tmp_path / "shipped")  # shipped models are float16

    cont = train_recognizer(
        signer, "de", tmp_path / "cont", steps=3, lr=1e-9, init_from=tmp_path / "shipped", **kwargs
    )  # no config: hidden 16 etc. come from the saved model, not the defaults
    assert cont.config.hidden == 16 and next(cont.parameters()).dtype == torch.float32
    for (name, a), b in zip(base.state_dict().items(), cont.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b, atol=1e-5), name  # lr 1e-9: the saved weights
    state = json.loads((tmp_path / "cont/checkpoints/last/state.json").read_text())
    assert state["step"] == 3

    with pytest.raises(ValueError, match="hidden, rnn_hidden differ"):
        train_recognizer(
            signer, "de", tmp_path / "wide", steps=1, init_from=tmp_path / "shipped",
            config={"hidden": 32, "rnn_hidden": 32}, **kwargs,
        )  # fmt: skip
    zh = SynthSigner(data_dir=shared_data, languages=["zh"])
    with pytest.raises(ValueError, match="language, vocab differ"):
        train_recognizer(
            zh, "zh", tmp_path / "zh", steps=1, init_from=tmp_path / "shipped", **kwargs
        )


def test_cli_init_from_without_a_model_fails_clearly(tmp_path, capsys) -> None:
    """``slp train recognizer --init-from`` a folder without a model: one line, exit 2."""
    from slp_pipeline.cli import main

    rc = main(
        ["train", "recognizer", "--language", "de", "--out", str(tmp_path / "run"),
         "--init-from", str(tmp_path / "missing"), "--steps", "1"]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "no recogniser there" in err and "Traceback" not in err
