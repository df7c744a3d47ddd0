"""Training data for unseen signers: appearance jitter (pgmm/training/appearance.py),
signer-balanced video selection and cross-identity SynthSigner videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pgmm.data.loaders import spread_over_signers
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.training.appearance import jitter_appearance, random_color_transform
from pgmm.training.distributed import build_dataset


def test_strength_zero_is_the_identity() -> None:
    x = torch.rand(3, 3, 5, 5)
    assert jitter_appearance((x,), 0.0)[0] is x
    matrix, bias = random_color_transform(4, 0.0)
    assert torch.allclose(matrix, torch.eye(3).expand(4, 3, 3), atol=1e-6)
    assert torch.allclose(bias, torch.zeros(4, 3), atol=1e-6)


def test_both_frames_of_a_pair_get_the_same_transform_and_pairs_differ() -> None:
    torch.manual_seed(0)
    frame = torch.rand(1, 3, 6, 6).expand(4, 3, 6, 6).contiguous()  # one frame, four pairs
    source, driving = jitter_appearance((frame, frame.clone()), 0.5)
    assert torch.equal(source, driving)
    assert not torch.allclose(source[0], source[1])  # each pair is recoloured differently
    assert source.min() >= 0 and source.max() <= 1


def test_greys_stay_grey_and_hue_moves_colours() -> None:
    """Hue and saturation act about the grey axis; contrast and brightness act on all channels
    alike, so a grey pixel stays grey while a saturated red changes its hue."""
    torch.manual_seed(1)
    grey = torch.full((8, 3, 1, 1), 0.4)
    out = jitter_appearance((grey,), 1.0)[0]
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-5)
    red = torch.zeros(8, 3, 1, 1)
    red[:, 0] = 0.8
    torch.manual_seed(1)
    moved = jitter_appearance((red,), 1.0)[0]
    assert (moved[:, 1:] > 0.05).any()  # some pairs turned red towards green or blue


def test_the_same_seed_draws_the_same_colours() -> None:
    """The trainer seeds torch per step, so a resumed run recolours exactly as before."""
    x = torch.rand(2, 3, 4, 4)
    torch.manual_seed(7)
    a = jitter_appearance((x,), 0.3)[0]
    torch.manual_seed(7)
    b = jitter_appearance((x,), 0.3)[0]
    assert torch.equal(a, b)


def test_strength_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        random_color_transform(1, 1.5)


def test_spread_over_signers_takes_each_signer_in_turn_in_corpus_order() -> None:
    signers = ["a", "a", "a", "a", "b", "c", "c"]
    assert spread_over_signers(signers, 3) == [0, 4, 5]
    assert spread_over_signers(signers, 5) == [0, 1, 4, 5, 6]
    assert spread_over_signers(signers, 100) == list(range(7))


def test_cross_identity_videos_end_in_another_bodys_motion_in_the_same_look(
    shared_data: Path,
) -> None:
    signer = SynthSigner(data_dir=shared_data)
    plain = RenderedSynthSigner("dev", 64, max_videos=1, signer=signer)
    cross = RenderedSynthSigner("dev", 64, max_videos=1, signer=signer, cross_identity=True)
    n = plain.num_frames(0)
    assert cross.num_frames(0) == cross.records[0].num_frames == 2 * n
    frames, poses = cross.load_frames(0), cross.load_poses(0)
    assert frames.shape[0] == len(poses) == 2 * n
    # The first half is the plain video; the second another body (other proportions) ...
    assert np.array_equal(frames[:n], plain.load_frames(0))
    assert np.array_equal(poses.data[:n], plain.load_poses(0).data)
    shoulders = [5, 6]  # COCO-WholeBody left/right shoulder
    width = np.abs(np.diff(poses.data[:, shoulders, 0], axis=1)).ravel()
    assert abs(width[:n].mean() - width[n:].mean()) > 1e-3
    # ... drawn in the same appearance: the background corner keeps its colour.
    assert np.abs(frames[n:, :3, :3].astype(int) - frames[:1, :3, :3].astype(int)).max() <= 8
    assert cross.cache_key() != plain.cache_key()


def test_cross_identity_needs_synthsigner() -> None:
    with pytest.raises(ValueError, match="SynthSigner"):
        build_dataset("/nonexistent", "train", 64, 2, cross_identity=True)


def test_cross_identity_fraction_crosses_that_share_of_the_videos(shared_data: Path) -> None:
    signer = SynthSigner(data_dir=shared_data)
    half = RenderedSynthSigner("train", 64, max_videos=200, signer=signer, cross_identity=0.5)
    share = float(np.mean(half.crossed))
    assert 0.38 < share < 0.62  # a hash of the sentence id: stable, roughly the fraction
    for i in (half.crossed.index(True), half.crossed.index(False)):
        plain = half.sentences[i].num_frames
        assert half.num_frames(i) == (2 if half.crossed[i] else 1) * plain
    again = RenderedSynthSigner("train", 64, max_videos=200, signer=signer, cross_identity=0.5)
    assert again.crossed == half.crossed and again.cache_key() == half.cache_key()
    with pytest.raises(ValueError, match="fraction"):
        RenderedSynthSigner("train", 64, max_videos=2, signer=signer, cross_identity=1.5)


def test_random_looks_redraw_the_same_body_in_another_look(shared_data: Path) -> None:
    """A random-look video keeps its identity's motion and labels (the keypoints a pose
    estimator learns), changes the pixels, is the same on every construction, and never takes
    the id of a corpus or held-out identity."""
    signer = SynthSigner(data_dir=shared_data)
    plain = RenderedSynthSigner("train", 64, max_videos=40, signer=signer)
    mixed = RenderedSynthSigner("train", 64, max_videos=40, signer=signer, random_looks=0.5)
    drawn = [i for i, look in enumerate(mixed.looks) if look is not None]
    assert 8 < len(drawn) < 32  # a hash of the sentence id: roughly the fraction
    i, j = drawn[0], mixed.looks.index(None)
    assert np.array_equal(mixed.load_poses(i).data, plain.load_poses(i).data)
    assert np.abs(mixed.load_frames(i)[:3].astype(float) - plain.load_frames(i)[:3]).mean() > 10
    assert np.array_equal(mixed.load_frames(j)[:3], plain.load_frames(j)[:3])
    again = RenderedSynthSigner("train", 64, max_videos=40, signer=signer, random_looks=0.5)
    assert np.array_equal(again.load_frames(i)[:2], mixed.load_frames(i)[:2])
    looks = [look for look in mixed.looks if look is not None]
    assert len({(look.skin, look.cloth, look.background) for look in looks}) == len(looks)
    assert all(look.id >= 1000 and not look.held_out for look in looks)
    body = signer.identity_for(mixed.sentences[i])
    assert (mixed.looks[i].shoulder_width, mixed.looks[i].cam_scale) == (  # type: ignore[union-attr]
        body.shoulder_width,
        body.cam_scale,
    )
    assert mixed.cache_key() != plain.cache_key()
    with pytest.raises(ValueError, match="fraction"):
        RenderedSynthSigner("train", 64, max_videos=2, signer=signer, random_looks=-0.1)
    with pytest.raises(ValueError, match="SynthSigner"):
        build_dataset("/nonexistent", "train", 64, 2, random_looks=0.5)
