"""SynthSigner: hand model, lexicon, identities, motion, renderer, generator and CLI."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from pgmm.data.corpus import load_corpus
from pgmm.data.samplers import FramePairDataset
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.generate import GenerateConfig, generate
from pgmm.data.synth.hand import HANDSHAPES, hand_points
from pgmm.data.synth.identity import (
    HELD_OUT_IDENTITIES,
    NUM_IDENTITIES,
    corpus_identity,
    make_identity,
)
from pgmm.data.synth.lexicon import Sign, keyed_rng
from pgmm.data.synth.motion import sentence_pose, timeline
from pgmm.data.synth.render import render_frame
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseSequence
from pgmm.video import probe, read_video
from slp_pipeline.cli import main


@pytest.fixture(scope="module")
def signer(shared_data: Path) -> SynthSigner:
    return SynthSigner(seed=0, data_dir=shared_data)


def _sign(signer: SynthSigner, **changes) -> Sign:
    base = next(iter(signer.lexicon.values()))
    return dataclasses.replace(base, **changes)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- hand + lexicon
def test_handshape_library_is_large_and_distinct() -> None:
    assert len(HANDSHAPES) >= 12
    points = {name: hand_points(p) for name, p in HANDSHAPES.items()}
    names = sorted(points)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(points[a] - points[b]).max() > 0.05, (a, b)


def test_fist_is_shorter_than_flat_hand() -> None:
    flat, fist = hand_points(HANDSHAPES["B"]), hand_points(HANDSHAPES["S"])
    tip = 12  # middle fingertip
    assert np.linalg.norm(flat[tip]) > 0.95
    assert np.linalg.norm(fist[tip]) < 0.6


def test_lexicon_has_one_distinct_sign_per_gloss(signer: SynthSigner, shared_data: Path) -> None:
    vocab = {
        (lang, g)
        for lang in ("de", "zh")
        for split in ("train", "dev", "test")
        for s in load_corpus(lang, split, shared_data)
        for g in s.glosses
    }
    assert set(signer.lexicon) == vocab
    assert len(vocab) > 3000
    keys = [sign.key() for sign in signer.lexicon.values()]
    assert len(set(keys)) == len(keys)


def test_lexicon_is_stable_under_vocabulary_growth(signer: SynthSigner) -> None:
    from pgmm.data.synth.lexicon import build_lexicon

    small = build_lexicon({"de": ["WETTER", "REGEN"]}, seed=0)
    # Without collisions a gloss's sign depends only on (seed, language, gloss).
    assert small[("de", "WETTER")] == signer.lexicon[("de", "WETTER")]


# --------------------------------------------------------------------------- identities
def test_identities_are_distinct_and_held_out() -> None:
    idents = [make_identity(i) for i in range(NUM_IDENTITIES)]
    assert NUM_IDENTITIES >= 10 and len(HELD_OUT_IDENTITIES) == 2
    looks = {(p.skin, p.cloth, p.background, p.hair_style) for p in idents}
    assert len(looks) == NUM_IDENTITIES
    assert [p.id for p in idents if p.held_out] == list(HELD_OUT_IDENTITIES)
    assert make_identity(3, seed=1) == make_identity(3, seed=1)
    with pytest.raises(ValueError, match="identity"):
        make_identity(NUM_IDENTITIES)


def test_corpus_signers_map_to_corpus_identities() -> None:
    assert corpus_identity("de", "Signer01") == 0
    assert corpus_identity("de", "Signer09") == 8
    assert corpus_identity("zh", "9") == 9
    assert all(corpus_identity("zh", str(k)) not in HELD_OUT_IDENTITIES for k in range(10))


# --------------------------------------------------------------------------- motion
@pytest.mark.parametrize("num_frames", [10, 16, 117, 475])
def test_timeline_covers_the_sentence(num_frames: int) -> None:
    segs = timeline([1.0, 0.9, 1.2, 1.1], num_frames)
    assert segs[0][2] == 0 and segs[-1][3] == num_frames
    for (_, _, _, end), (_, _, start, _) in zip(segs[:-1], segs[1:], strict=True):
        assert end == pytest.approx(start)
    assert [k for k, *_ in segs].count("sign") == 4


def test_sentence_pose_length_motion_and_labels(signer: SynthSigner) -> None:
    sentence = signer.sentences("dev", "de")[0]
    pose = signer.pose(sentence)
    assert pose.keypoints.shape == (sentence.num_frames, L.NUM_WHOLEBODY, 2)
    # Idle motion: no two consecutive frames are identical.
    step = np.abs(np.diff(pose.keypoints, axis=0)).max(axis=(1, 2))
    assert step.min() > 0
    conf = pose.confidence
    assert np.all(conf[:, L.FEET] == 0)
    inside = np.all((pose.keypoints >= 0) & (pose.keypoints <= 1), axis=-1)
    np.testing.assert_array_equal(conf[:, L.FACE] > 0, inside[:, L.FACE])
    # The body wrist and the hand root are the same joint.
    np.testing.assert_allclose(
        pose.keypoints[:, L.WB["left_wrist"]], pose.keypoints[:, L.LEFT_HAND_OFFSET], atol=1e-6
    )


def test_face_sign_brings_the_hand_to_the_face(signer: SynthSigner) -> None:
    ident = make_identity(0)
    sign = _sign(
        signer,
        hand_type="one",
        location="chin",
        movement="hold",
        handshape="B",
        end_handshape="B",
        orientation="up_palm_in",
    )
    pose = sentence_pose([sign], 60, ident, keyed_rng(0, "chin"))
    mid = 30
    hand = pose.keypoints[mid, L.RIGHT_HAND].mean(0)
    chin = pose.keypoints[mid, L.FACE_OFFSET + 8]
    rest = sentence_pose([], 60, ident, keyed_rng(0, "rest")).keypoints[mid, L.RIGHT_HAND]
    assert np.linalg.norm(hand - chin) < 0.12
    assert np.linalg.norm(rest.mean(0) - chin) > 0.3


def test_unknown_gloss_is_a_clear_error(signer: SynthSigner) -> None:
    with pytest.raises(ValueError, match="NOT-A-GLOSS"):
        signer.signs("de", ["WETTER", "NOT-A-GLOSS"])


# --------------------------------------------------------------------------- renderer
def test_render_is_deterministic_and_labels_sit_on_the_hand(signer: SynthSigner) -> None:
    ident = make_identity(2)
    # "5": thumb out, so nothing covers the palm centre.
    sign = _sign(
        signer,
        hand_type="one",
        location="neutral",
        movement="hold",
        handshape="5",
        end_handshape="5",
        orientation="up_palm_out",
    )
    pose = sentence_pose([sign], 40, ident, keyed_rng(0, "label"))
    t = 20
    a = render_frame(pose.keypoints[t], pose.depth[t], ident, 256)
    b = render_frame(pose.keypoints[t], pose.depth[t], ident, 256)
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # The palm centre (between the wrist and the middle knuckle) is drawn in skin tones.
    hand = pose.keypoints[t, L.RIGHT_HAND]
    x, y = ((hand[0] + hand[9]) / 2 * 256).astype(int)
    skin = np.array(ident.skin, float)
    assert np.abs(a[y, x].astype(float) - skin).max() < 40
    # ... and a background corner is not.
    assert np.abs(a[2, 2].astype(float) - skin).max() > 20


def test_renders_differ_between_identities(signer: SynthSigner) -> None:
    pose = sentence_pose([], 3, make_identity(0), keyed_rng(0, "x"))
    a = render_frame(pose.keypoints[1], pose.depth[1], make_identity(0), 64)
    b = render_frame(pose.keypoints[1], pose.depth[1], make_identity(10), 64)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


# --------------------------------------------------------------------------- generator + CLI
@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("synth")
    cfg = GenerateConfig(out=out, videos=3, sizes=(64,), workers=1, data_dir=shared_data)
    generate(cfg, progress=False)
    return out


def test_generator_writes_the_documented_layout(synth_dir: Path) -> None:
    rows = []
    for split in ("train", "dev", "test"):
        path = synth_dir / "annotations" / f"{split}.csv"
        if path.exists():
            with path.open(encoding="utf-8") as f:
                rows += list(csv.DictReader(f))
    assert len(rows) == 3
    assert {r["language"] for r in rows} <= {"de", "zh"}
    for r in rows:
        n = int(r["num_frames"])
        seq = PoseSequence.load(synth_dir / "poses" / r["split"] / f"{r['id']}.npz")
        assert seq.layout == "wholebody133" and len(seq) == n
        seq36 = PoseSequence.load(synth_dir / "poses" / r["split"] / f"{r['id']}.pgmm36.npz")
        assert seq36.layout == "pgmm36" and len(seq36) == n
        video = synth_dir / "features" / "fullFrame-64x64px" / r["split"] / f"{r['id']}.mp4"
        frames, fps = read_video(video)
        assert frames.shape == (n, 64, 64, 3) and fps == 25
    for name in ("preview.mp4", "contact_sheet.png", "index.html", "README.md"):
        assert (synth_dir / name).stat().st_size > 0
    assert probe(synth_dir / "preview.mp4").width == 64 * 2


def test_generator_is_deterministic_and_resumable(
    synth_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    cfg = GenerateConfig(out=tmp_path, videos=3, sizes=(64,), workers=2, data_dir=shared_data)
    generate(cfg, progress=False)
    files = sorted(p.relative_to(synth_dir) for p in synth_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix in (".npz", ".mp4", ".csv"):
            assert _digest(synth_dir / rel) == _digest(tmp_path / rel), rel
    # A second run skips finished videos (files untouched) and leaves no temp files.
    videos = list(tmp_path.glob("features/*/*/*.mp4"))
    before = {p: p.stat().st_mtime_ns for p in videos}
    generate(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in videos} == before
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_rendered_dataset_feeds_the_frame_pair_sampler(signer: SynthSigner) -> None:
    ds = RenderedSynthSigner("dev", size=32, max_videos=2, signer=signer)
    item = ds[0]
    assert item["frames"].shape[1:] == (3, 32, 32)
    assert item["poses"].shape == (item["frames"].shape[0], L.NUM_WHOLEBODY, 3)
    pairs = FramePairDataset(ds, pairs_per_video=3)
    sample = pairs[4]
    assert sample["source"].shape == (3, 32, 32) and sample["driving_pose"].shape == (133, 3)
    assert sample["source_index"] != sample["driving_index"]


def test_pose_sequence_export_is_normalised(signer: SynthSigner) -> None:
    pose = signer.pose(signer.sentences("test", "zh")[0])
    seq = to_pose_sequence(pose, 128)
    assert seq.fps == 25 and seq.width == 128
    assert 0.2 < seq.xy[0, L.WB["nose"], 1] < 0.5


def test_cli_synth_and_errors(tmp_path: Path, shared_data: Path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--videos",
            "1",
            "--size",
            "32",
            "--workers",
            "1",
            "--language",
            "zh",
            "--split",
            "test",
            "--data-dir",
            str(shared_data),
        ]
    )
    assert rc == 0
    assert len(list(out.glob("features/fullFrame-32x32px/test/*.mp4"))) == 1
    assert "wrote 1 videos" in capsys.readouterr().out
    rc = main(["data", "synth", "--out", str(out), "--data-dir", str(tmp_path / "nowhere")])
    assert rc == 2
    assert "corpus file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "--out", str(out), "--videos", "0"])
    assert e.value.code == 2
