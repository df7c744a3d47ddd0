"""pgmm.metrics: every metric against an independent reference or hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from pgmm.metrics import (
    I3D,
    LPIPS,
    PGMM36_GROUPS,
    EditCounts,
    GlossRecognizer,
    MetricWeightsMissing,
    edit_counts,
    frechet_distance,
    fvd,
    keypoint_error,
    l1,
    pck,
    report,
    ssim,
    tcd,
    wer_for_videos,
    word_error_rate,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- L1 and SSIM


def test_l1_by_hand() -> None:
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0, :, :2] = 0.5  # half of frame 0 off by 0.5 -> mean 0.5 * 1/4
    assert l1(pred, target) == pytest.approx(0.125)
    assert l1(target, target) == 0.0


def _skimage_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """Reference: skimage per frame (HWC), averaged over all frames."""
    frames_p = pred.reshape(-1, *pred.shape[-3:]).permute(0, 2, 3, 1).double().numpy()
    frames_t = target.reshape(-1, *target.shape[-3:]).permute(0, 2, 3, 1).double().numpy()
    return float(
        np.mean(
            [
                structural_similarity(
                    p,
                    t,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    channel_axis=-1,
                    data_range=data_range,
                )
                for p, t in zip(frames_p, frames_t, strict=True)
            ]
        )
    )


@pytest.mark.parametrize("shape", [(3, 3, 24, 31), (2, 2, 3, 17, 20)])
def test_ssim_matches_skimage(shape: tuple[int, ...]) -> None:
    target = _rand(*shape)
    pred = (target + 0.15 * torch.randn(shape, generator=torch.Generator().manual_seed(1))).clamp(
        0, 1
    )
    assert abs(ssim(pred, target) - _skimage_ssim(pred, target, 1.0)) < 1e-4
    assert ssim(target, target) == pytest.approx(1.0)


def test_ssim_data_range_matches_skimage() -> None:
    target = _rand(2, 3, 16, 16) * 255
    pred = target + 20 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    ours = ssim(pred, target, data_range=255.0)
    assert abs(ours - _skimage_ssim(pred, target, 255.0)) < 1e-4


def test_ssim_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        ssim(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 15))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(2, 3, 8, 16), torch.zeros(2, 3, 8, 16))


# ------------------------------------------------------------------------------------- LPIPS

# torchvision conv shapes, written out independently of pgmm.metrics.lpips.
_ALEX_CONVS = {
    0: (64, 3, 11),
    3: (192, 64, 5),
    6: (384, 192, 3),
    8: (256, 384, 3),
    10: (256, 256, 3),
}
_VGG_CONVS = dict(
    zip(
        [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
        [
            (64, 3),
            (64, 64),
            (128, 64),
            (128, 128),
            (256, 128),
            (256, 256),
            (256, 256),
            (512, 256),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
        ],  # fmt: skip
        strict=True,
    )
)


def _backbone_state(convs: dict[int, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, (cout, cin, *k) in convs.items():
        k = k[0] if k else 3
        std = math.sqrt(2.0 / (cin * k * k))
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
        state[f"features.{i}.bias"] = torch.full((cout,), 0.01)
    state["classifier.6.bias"] = torch.zeros(1000)  # real torchvision files carry a classifier
    return state


def _linear_state(channels: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.randn(1, c, 1, 1, generator=g).abs()
        for k, c in enumerate(channels)
    }


@pytest.fixture(scope="module")
def alex_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("lpips_alex")
    backbone, linear = _backbone_state(_ALEX_CONVS, 0), _linear_state((64, 192, 384, 256, 256), 1)
    torch.save(backbone, root / "alexnet.pth")
    torch.save(linear, root / "alex.pth")
    return root / "alexnet.pth", root / "alex.pth", backbone, linear


@pytest.fixture(scope="module")
def alex(alex_files: tuple[Path, Path, dict, dict]) -> LPIPS:
    return LPIPS(net="alex", backbone_weights=alex_files[0], linear_weights=alex_files[1])


def test_lpips_loads_torchvision_and_release_names(alex_files, alex: LPIPS) -> None:
    _, _, backbone, linear = alex_files
    for i in _ALEX_CONVS:
        torch.testing.assert_close(alex.net.features[i].weight, backbone[f"features.{i}.weight"])
        torch.testing.assert_close(alex.net.features[i].bias, backbone[f"features.{i}.bias"])
    for k, lin in enumerate(alex.lins):
        torch.testing.assert_close(lin.model[1].weight, linear[f"lin{k}.model.1.weight"])


def _reference_lpips_alex(x0: torch.Tensor, x1: torch.Tensor, backbone: dict, linear: dict):
    """LPIPS written straight from its definition with functional ops (images (N,3,H,W))."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        x = ((2 * x - 1) - shift) / scale

        def conv(x: torch.Tensor, i: int, stride: int = 1, pad: int = 1) -> torch.Tensor:
            w, b = backbone[f"features.{i}.weight"], backbone[f"features.{i}.bias"]
            return F.relu(F.conv2d(x, w, b, stride=stride, padding=pad))

        r1 = conv(x, 0, stride=4, pad=2)
        r2 = conv(F.max_pool2d(r1, 3, 2), 3, pad=2)
        r3 = conv(F.max_pool2d(r2, 3, 2), 6)
        r4 = conv(r3, 8)
        return [r1, r2, r3, r4, conv(r4, 10)]

    total = 0
    for k, (a, b) in enumerate(zip(feats(x0), feats(x1), strict=True)):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, linear[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


def test_lpips_matches_functional_reference(alex_files, alex: LPIPS) -> None:
    x, y = _rand(4, 3, 64, 64, seed=3), _rand(4, 3, 64, 64, seed=4)
    expected = _reference_lpips_alex(x, y, alex_files[2], alex_files[3])
    torch.testing.assert_close(alex(x, y), expected, rtol=1e-4, atol=1e-6)


def test_lpips_shape_identity_symmetry(alex: LPIPS) -> None:
    video_a, video_b = _rand(2, 3, 3, 64, 64, seed=5), _rand(2, 3, 3, 64, 64, seed=6)
    d = alex(video_a, video_b)
    assert d.shape == (2, 3)
    assert alex(video_a[0], video_b[0]).shape == (3,)
    assert (d > 0).all()
    torch.testing.assert_close(alex(video_b, video_a), d)
    torch.testing.assert_close(alex(video_a, video_a), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        alex(video_a * 255, video_b)


def test_lpips_vgg_backbone(tmp_path: Path) -> None:
    torch.save(_backbone_state(_VGG_CONVS, 7), tmp_path / "vgg16.pth")
    torch.save(_linear_state((64, 128, 256, 512, 512), 8), tmp_path / "vgg.pth")
    model = LPIPS("vgg", tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    x, y = _rand(2, 3, 32, 32, seed=9), _rand(2, 3, 32, 32, seed=10)
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(model(x, x), torch.zeros(2))


def test_lpips_missing_weights_say_which_file(alex_files, tmp_path: Path) -> None:
    backbone, linear = alex_files[0], alex_files[1]
    missing = tmp_path / "nope" / "alexnet.pth"
    with pytest.raises(MetricWeightsMissing, match="backbone") as err:
        LPIPS("alex", backbone_weights=missing, linear_weights=linear)
    assert err.value.path == missing and str(missing) in str(err.value)
    assert report(err.value) == f"n/a (weights not found at {missing})"
    with pytest.raises(MetricWeightsMissing, match="linear-head") as err:
        LPIPS("alex", backbone_weights=backbone, linear_weights=tmp_path / "alex.pth")
    assert err.value.path == tmp_path / "alex.pth"
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(MetricWeightsMissing, match="no path given"):
        LPIPS("alex")


# -------------------------------------------------------------------------------------- FVD


def _sqrtm_reference(mu1, s1, mu2, s2) -> float:
    """The textbook computation: scipy's sqrtm of S1 S2, real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(covmean)))


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _sqrtm_reference(mu1, s1, mu2, s2), rel=1e-8
    )
    # Rank-deficient covariances of few samples, as FVD on a small test set produces.
    x, y = rng.normal(size=(4, 8)), rng.normal(size=(5, 8)) + 0.5
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance(*args) == pytest.approx(_sqrtm_reference(*args), rel=1e-5)


def test_frechet_distance_known_cases() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    s, mu = a @ a.T, rng.normal(size=5)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 4 + 4 + 1 - 2 * 2 = 5
    one_d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]]))
    assert one_d == pytest.approx(5.0)
    # Diagonal covariances: independent dimensions add up.
    v1, v2 = np.array([1.0, 9.0]), np.array([4.0, 1.0])
    expected = 1.0 + sum(p + q - 2 * math.sqrt(p * q) for p, q in zip(v1, v2, strict=True))
    got = frechet_distance(np.zeros(2), np.diag(v1), np.array([1.0, 0.0]), np.diag(v2))
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = I3D()
    for module in net.modules():  # non-trivial BN statistics, so loading them is checked too
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("i3d") / "i3d.pt"
    torch.save(net.state_dict(), path)
    return path


def test_i3d_load_round_trip_and_shapes(i3d_file: Path) -> None:
    saved = torch.load(i3d_file, weights_only=True)
    net = I3D().load_weights(i3d_file)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert "Mixed_5c.b1b.conv3d.weight" in saved and saved["logits.conv3d.weight"].shape == (
        400,
        1024,
        1,
        1,
        1,
    )
    clip = _rand(2, 3, 9, 32, 32) * 2 - 1
    assert net(clip).shape == (2, 400)
    assert net(clip, output="pool").shape == (2, 1024)
    # Loads without num_batches_tracked (older exports); rejects any other gap.
    partial = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    torch.save(partial, i3d_file.with_name("old.pt"))
    I3D().load_weights(i3d_file.with_name("old.pt"))
    del partial["Mixed_4b.b0.conv3d.weight"]
    torch.save(partial, i3d_file.with_name("broken.pt"))
    with pytest.raises(ValueError, match="Mixed_4b.b0.conv3d.weight"):
        I3D().load_weights(i3d_file.with_name("broken.pt"))


def test_i3d_and_fvd_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(MetricWeightsMissing, match="I3D weights") as err:
        I3D().load_weights(tmp_path / "i3d.pt")
    assert err.value.path == tmp_path / "i3d.pt"
    videos = _rand(2, 9, 3, 16, 16)
    with pytest.raises(MetricWeightsMissing):
        fvd(videos, videos, I3D())


def test_fvd_small(i3d_file: Path) -> None:
    net = I3D().load_weights(i3d_file)
    real = _rand(3, 9, 3, 32, 32, seed=11)
    fake = (real + 0.3 * _rand(3, 9, 3, 32, 32, seed=12)).clamp(0, 1).flip(-1)
    assert fvd(real, real, net, resolution=32) == pytest.approx(0.0, abs=1e-6)
    assert fvd(real, fake, net, resolution=32) > 0
    with pytest.raises(ValueError, match="T>=9"):
        fvd(real[:, :8], fake[:, :8], net, resolution=32)


# -------------------------------------------------------------------------------------- TCD


def _video(values: list[float], h: int = 1, w: int = 1) -> torch.Tensor:
    """A (T,3,h,w) video whose frame t is the constant values[t] (8-bit levels), in [0, 1]."""
    frames = torch.tensor(values, dtype=torch.float64) / 255
    return frames.view(-1, 1, 1, 1).expand(-1, 3, h, w).clone()


def test_tcd_eq12_13_by_hand_on_three_frames() -> None:
    # Two pixels, three frames; values in 8-bit levels. Only frame 1 is interior.
    #   pixel 0: real neighbours I_0 = 10, I_2 = 12 in every channel -> their mean is 11;
    #            generated Î_1 = (R 11, G 12, B 10) -> D = (0, 1, 1), channel mean 2/3 > 0.5: counts
    #   pixel 1: real neighbours 100 and 100 -> mean 100; Î_1 = (100, 100, 101)
    #            -> D = (0, 0, 1), channel mean 1/3 <= 0.5: does not count
    # TCD = 1 counted pixel / (H*W = 2) / (N-2 = 1 interior frame) = 0.5.
    target = torch.zeros(3, 3, 1, 2, dtype=torch.float64)
    target[0, :, 0, 0], target[2, :, 0, 0] = 10, 12
    target[:, :, 0, 1] = 100
    target[1] = 50  # the real middle frame does not enter Eq. 12 at all
    pred = target.clone()
    pred[1, :, 0, 0] = torch.tensor([11.0, 12.0, 10.0])
    pred[1, :, 0, 1] = torch.tensor([100.0, 100.0, 101.0])
    assert tcd(pred / 255, target / 255) == 0.5
    # The threshold is in grey levels: with T = 0.7 pixel 0 (2/3) no longer counts, T = 0.3
    # also counts pixel 1 (1/3).
    assert tcd(pred / 255, target / 255, threshold=0.7) == 0.0
    assert tcd(pred / 255, target / 255, threshold=0.3) == 1.0


def test_tcd_counts_the_real_videos_own_jumps_but_not_steady_motion() -> None:
    # A pixel brightening at constant speed equals the mean of its neighbours: D = 0 everywhere.
    ramp = _video([0.0, 40.0, 80.0, 120.0])
    assert tcd(ramp, ramp) == 0.0
    # A real flash is counted even for a perfect reconstruction: |255 - 0| and |0 - 255| > 0.5.
    flashing = _video([0.0, 255.0, 0.0, 255.0])
    assert tcd(flashing, flashing) == 1.0
    # A generator that smooths the flash away matches the neighbours' mean exactly.
    assert tcd(_video([0.0, 0.0, 0.0, 255.0]), flashing) == 0.5  # frame 2: |0 - 255| counts


def test_tcd_separates_flicker_from_a_smooth_imperfect_copy() -> None:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 5, 5, generator=g)
    texture = F.interpolate(coarse, size=(40, 40), mode="bicubic", align_corners=True).clamp(0, 1)
    target = torch.cat([texture.roll(t, dims=-1) for t in range(8)])  # pans 1 px per frame
    smooth = F.avg_pool2d(F.pad(target, (1, 1, 1, 1), mode="replicate"), 3, 1)  # blurred copy
    sign = torch.tensor([1.0, -1.0] * 4).view(-1, 1, 1, 1)
    flicker = (smooth + sign * 2 / 255).clamp(0, 1)  # the same copy, ±2 grey levels per frame
    assert tcd(flicker, target) > tcd(smooth, target) + 0.3
    assert 0 < tcd(smooth, target) < 0.8


def test_tcd_only_interior_frames_and_batches() -> None:
    target = _video([10.0, 10.0, 10.0, 10.0])
    pred = _video([200.0, 30.0, 10.0, 200.0])  # first/last frames ignored; frame 1 off, 2 exact
    assert tcd(pred, target) == pytest.approx(0.5)
    batch_pred, batch_target = torch.stack([pred, target]), torch.stack([target, target])
    assert tcd(batch_pred, batch_target) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 3 frames"):
        tcd(pred[:2], target[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tcd(pred * 255, target)


# -------------------------------------------------------------------------------- keypoints


def test_pgmm36_hand_group_is_channels_8_to_35() -> None:
    assert PGMM36_GROUPS["hands"] == tuple(range(8, 36))
    assert PGMM36_GROUPS["whole_body"] == tuple(range(36))


def test_keypoint_error_and_pck_by_hand() -> None:
    gt = np.full((2, 36, 3), 0.5)  # (frames, K, xy + confidence)
    pred = gt.copy()
    pred[:, 8:, 0] += 0.03  # hands 0.03 off
    pred[:, :8, 1] += 0.1  # body 0.1 off
    visible = np.ones((2, 36), dtype=bool)
    err = keypoint_error(pred, gt, visible)
    assert err["hands"] == pytest.approx(0.03)
    assert err["whole_body"] == pytest.approx((28 * 0.03 + 8 * 0.1) / 36)
    assert pck(pred, gt, visible) == {"hands": 1.0, "whole_body": pytest.approx(28 / 36)}
    visible[:, :8] = False  # invisible ground truth is not scored
    assert keypoint_error(pred, gt, visible)["whole_body"] == pytest.approx(0.03)
    visible[:, 8:] = False
    assert math.isnan(keypoint_error(pred, gt, visible)["hands"])


def test_keypoint_error_image_size_and_groups() -> None:
    gt = np.zeros((1, 2))
    pred = np.array([[0.12, 0.16]])
    # Square frame: plain normalised distance, a 3-4-5 triangle.
    assert keypoint_error(pred, gt, [True], {"all": [0]})["all"] == pytest.approx(0.2)
    # 200x100 frame: 24 px and 16 px -> sqrt(24^2 + 16^2) / 200.
    got = keypoint_error(pred, gt, [True], {"all": [0]}, image_size=(200, 100))
    assert got["all"] == pytest.approx(math.hypot(24, 16) / 200)
    assert pck(pred, gt, [True], threshold=0.15, groups={"all": [0]}, image_size=(200, 100)) == {
        "all": 1.0
    }
    with pytest.raises(ValueError, match="outside"):
        keypoint_error(pred, gt, [True], {"bad": [3]})


# -------------------------------------------------------------------------------------- WER


def test_edit_counts_by_hand() -> None:
    assert edit_counts(["A", "B", "C", "D"], ["A", "X", "C"]) == EditCounts(1, 1, 0, 4)
    assert edit_counts(["A", "B"], ["A", "B", "C"]) == EditCounts(0, 0, 1, 2)
    assert edit_counts(["A"], []) == EditCounts(0, 1, 0, 1)
    assert edit_counts(["A"], ["B", "C", "D"]) == EditCounts(1, 0, 2, 1)


def test_word_error_rate_by_hand() -> None:
    ref, hyp = ["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "sit", "on", "mat"]
    assert word_error_rate([ref], [hyp]) == pytest.approx(2 / 6)
    # Corpus-level: (1 deletion + 1 insertion) / 5 reference words.
    refs = [["A", "B", "C"], ["D", "E"]]
    hyps = [["A", "C"], ["D", "E", "F"]]
    assert word_error_rate(refs, hyps) == pytest.approx(0.4)
    assert word_error_rate([["A"]], [["B", "C", "D"]]) == 3.0  # WER can exceed 1
    assert word_error_rate(refs, refs) == 0.0
    with pytest.raises(ValueError, match="references but"):
        word_error_rate(refs, hyps[:1])
    with pytest.raises(ValueError, match="undefined"):
        word_error_rate([[]], [["A"]])


def test_wer_for_videos_with_a_pluggable_recognizer() -> None:
    class ByFirstPixel:
        def recognize(self, sample: torch.Tensor | np.ndarray) -> list[str]:
            return ["HELLO"] if float(sample.flatten()[0]) > 0.5 else ["HELLO", "WORLD"]

    recognizer = ByFirstPixel()
    assert isinstance(recognizer, GlossRecognizer)
    videos = [torch.ones(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)]
    assert wer_for_videos(recognizer, videos, [["HELLO"], ["HELLO"]]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- report


def test_report() -> None:
    assert report(0.0114412) == "0.011441"
    assert report(torch.tensor(154.726)) == "154.73"
    missing = MetricWeightsMissing("/models/i3d.pt", "I3D weights")
    assert isinstance(missing, FileNotFoundError)
    assert str(missing) == "I3D weights not found at /models/i3d.pt"
    assert report(missing) == "n/a (weights not found at /models/i3d.pt)"
    with pytest.raises(RuntimeError, match="boom"):
        report(RuntimeError("boom"))
