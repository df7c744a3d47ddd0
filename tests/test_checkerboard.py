"""P_d's up-sampling: the transposed conv's checkerboard, the bilinear fix, old checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import TINY_PGMM
from torch import nn

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.posenet import (
    PoseNet,
    ResizeConv2d,
    bilinear_state_from_transposed,
    resize_conv_from_transposed,
)


def period2_share(x: torch.Tensor) -> float:
    """Share of the (mean-removed) spectral power on the 2-pixel-period row and column."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()
    h, w = x.shape[-2:]
    return float(((power[..., h // 2, :].sum(-1) + power[..., :, w // 2].sum(-1)).sum())
                 / power.sum().clamp_min(1e-20))  # fmt: skip


@pytest.mark.parametrize("upsample", ["transposed", "bilinear"])
def test_constant_pose_gives_a_checkerboard_only_with_the_transposed_conv(upsample: str) -> None:
    torch.manual_seed(0)
    net = PoseNet(36, [8, 16, 32, 64], upsample).eval()
    with torch.no_grad():
        features = net(torch.full((1, 36, 32, 32), 0.3), (16, 16))
    # Away from the borders, where the convolutions' zero padding makes the maps vary smoothly.
    interior = features[0][..., 8:-8, 8:-8]
    if upsample == "transposed":
        # Odd and even pixels get different taps at each of the 3 levels: periods 2, 4 and 8.
        assert period2_share(interior) > 0.1
    else:
        assert period2_share(interior) < 0.01  # measured 4e-4


def test_converted_kernel_is_the_transposed_conv_as_a_conv() -> None:
    torch.manual_seed(0)
    transposed = nn.ConvTranspose2d(5, 7, 3, stride=1, padding=1)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(resize_conv_from_transposed(transposed.weight))
        conv.bias.copy_(transposed.bias)
    x = torch.randn(2, 5, 9, 9)
    torch.testing.assert_close(conv(x), transposed(x))


def test_old_checkpoints_keep_the_transposed_conv_and_warm_start_a_bilinear_model(
    tmp_path: Path,
) -> None:
    old = PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM))
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["pose_upsample"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = PGMM.from_pretrained(tmp_path / "old")
    assert loaded.config.pose_upsample == "transposed"
    assert isinstance(loaded.posenet.up[0][0], nn.ConvTranspose2d)
    new = PGMM(PGMMConfig(variant="full", image_size=64, pose_upsample="bilinear", **TINY_PGMM))
    assert isinstance(new.posenet.up[0][0], ResizeConv2d)
    state = bilinear_state_from_transposed(old.state_dict())
    new.load_state_dict(state)  # same names, converted shapes
    changed = {k for k in state if not torch.equal(state[k], old.state_dict()[k])}
    assert changed == {f"posenet.up.{i}.0.weight" for i in range(len(old.posenet.up))}
    with pytest.raises(ValueError, match="pose_upsample"):
        PGMMConfig(pose_upsample="nearest")
