"""The PGMM paper's evaluation metrics (Shi et al. 2024, arXiv 2409.16709).

Reconstruction quality: :func:`l1`, :func:`ssim`, :class:`LPIPS`; video realism: :func:`fvd`
with a local :class:`I3D`; temporal consistency: :func:`tcd` (the paper's own metric); pose
fidelity: :func:`keypoint_error`, :func:`pck`; intelligibility: :func:`word_error_rate` behind a
pluggable :class:`GlossRecognizer`.

Metrics that need pretrained networks (LPIPS, FVD) load them only from local files. A missing
file raises :class:`MetricWeightsMissing` and the caller shows it with :func:`report` as
"n/a (weights not found at PATH)": a metric is never silently replaced by a number computed some
other way (e.g. random weights), because such a number would look valid in a results table.
"""

from __future__ import annotations

from pathlib import Path

import torch


class MetricWeightsMissing(FileNotFoundError):
    """A metric's pretrained weights are not at the local path it was given.

    ``path`` is the missing file; the message also says which weights it should hold, so the
    person running an evaluation knows what to download and where to put it.
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        super().__init__(f"{what} not found at {self.path}")


def read_state_dict(path: str | Path | None, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict from a local ``.pth``/``.pt`` or ``.safetensors`` file.

    ``what`` names the weights for the :class:`MetricWeightsMissing` message. Pickle files are
    read with ``weights_only=True`` so a downloaded checkpoint cannot run code.
    """
    if path is None or not Path(path).is_file():
        raise MetricWeightsMissing(path if path is not None else "<no path given>", what)
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{what} at {path} is not a state dict (got {type(state).__name__})")
    return state


def report(value_or_exception: float | torch.Tensor | BaseException, fmt: str = ".5g") -> str:
    """Render a metric value for a results table.

    A :class:`MetricWeightsMissing` renders as ``"n/a (weights not found at PATH)"``. Any other
    exception is re-raised: only missing weights are an expected, reportable gap; every other
    failure is a bug that must not turn into a quiet "n/a".
    """
    if isinstance(value_or_exception, MetricWeightsMissing):
        return f"n/a (weights not found at {value_or_exception.path})"
    if isinstance(value_or_exception, BaseException):
        raise value_or_exception
    return format(float(value_or_exception), fmt)


# The submodules import MetricWeightsMissing/read_state_dict from this package, so they are
# imported after those are defined.
from pgmm.metrics.fvd import I3D, frechet_distance, fvd  # noqa: E402
from pgmm.metrics.image import l1, ssim  # noqa: E402
from pgmm.metrics.keypoints import PGMM36_GROUPS, keypoint_error, pck  # noqa: E402
from pgmm.metrics.lpips import LPIPS  # noqa: E402
from pgmm.metrics.tcd import tcd  # noqa: E402
from pgmm.metrics.wer import (  # noqa: E402
    EditCounts,
    GlossRecognizer,
    edit_counts,
    wer_for_videos,
    word_error_rate,
)

__all__ = [
    "I3D",
    "LPIPS",
    "PGMM36_GROUPS",
    "EditCounts",
    "GlossRecognizer",
    "MetricWeightsMissing",
    "edit_counts",
    "frechet_distance",
    "fvd",
    "keypoint_error",
    "l1",
    "pck",
    "read_state_dict",
    "report",
    "ssim",
    "tcd",
    "wer_for_videos",
    "word_error_rate",
]
