"""Coordinate grids, affine maps and thin-plate splines (TPS) for backward warping.

Everything here speaks the coordinate convention of ``F.grid_sample(align_corners=False)``:
a point is ``(x, y)`` in ``[-1, 1]``, ``-1``/``+1`` being the outer *edges* of the image, so the
centre of pixel column ``j`` of a ``w``-wide image is at ``x = (2j + 1) / w - 1``. Keypoints,
grids and sampling coordinates all share it, which is what lets the same keypoints drive warps
at any resolution without half-pixel drift.

Warps are *backward*: a deformation is evaluated at every pixel of the driving frame and gives
the source-frame location to sample. Hence a TPS is fitted so that it maps driving keypoints to
source keypoints, ``f(kp_driving_i) = kp_source_i``.

A thin-plate spline is the smoothest (minimum bending energy) map through its control points:

    f(p) = sum_i w_i U(|p - c_i|) + A^T (x, y, 1),    U(r) = r^2 log r^2,  U(0) = 0,

with ``(P, 2)`` radial weights ``w`` and a ``(3, 2)`` affine part ``A``. Because the affine part
is unconstrained and the radial part only bends, a TPS reproduces any affine relation between
the point sets exactly; with ``P`` points it has ``P - 3`` non-rigid degrees of freedom per axis.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

__all__ = [
    "TPS",
    "apply_affine",
    "exact_coordinates",
    "make_coordinate_grid",
    "random_tps",
    "solve_unrolled",
]


def exact_coordinates(device: torch.device) -> AbstractContextManager[object]:
    """Autocast switched off on ``device``, for code that computes sampling coordinates.

    Coordinates are not activations: in bf16 (8-bit mantissa) a value near 1 is off by up to
    2^-8, half a pixel at 128x128 and a whole one at 256x256, which shows as wobbling frames.
    The few ops that make warp grids are a sliver of the model's compute, so they keep float32
    while the networks around them run in half precision. Devices without autocast (``meta``)
    get a no-op.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def solve_unrolled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.solve(a, b)`` as Gauss-Jordan elimination with partial pivoting, written
    with elementwise ops, ``argmax`` and ``gather`` only, unrolled over the (static) size.

    ONNX has no solve or inverse operator, so this is what ``TPS.fit`` runs while a model is
    exported or captured in a CUDA graph (the TPS systems are ``(P + 3) x (P + 3)``, 8 x 8 for
    TPSMM's 5 points). Pivoting is needed: the kernel block's diagonal is the tiny ridge, so
    elimination in the given row order would divide by ~1e-6.

    Args:
        a: ``(..., n, n)`` non-singular systems.
        b: ``(..., n, k)`` right-hand sides.
    """
    n = a.shape[-1]
    rows = torch.arange(n, device=a.device)
    augmented = torch.cat([a, b], dim=-1)  # (..., n, n + k)
    for col in range(n):
        # The largest remaining entry of this column becomes the pivot; swap its row into place.
        magnitude = augmented[..., :, col].abs().masked_fill(rows < col, -1.0)
        best = magnitude.argmax(dim=-1, keepdim=True)  # (..., 1)
        pivot_row = augmented.gather(
            -2, best[..., None].expand(*best.shape, augmented.shape[-1])
        )  # (..., 1, n + k)
        current = augmented[..., col : col + 1, :]
        is_best = (rows == best).to(a.dtype)[..., None]  # (..., n, 1)
        is_col = (rows == col).to(a.dtype)[:, None]  # (n, 1)
        augmented = augmented + is_col * (pivot_row - current) + is_best * (current - pivot_row)
        # Normalise the pivot row and clear the column everywhere else.
        pivot_row = pivot_row / pivot_row[..., col : col + 1]
        factors = augmented[..., :, col : col + 1] * (1 - is_col)  # (..., n, 1)
        augmented = augmented - factors * pivot_row
        augmented = augmented * (1 - is_col) + is_col * pivot_row
    return augmented[..., n:]


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.solve``, except where it cannot run: ONNX has no solve operator, and
    inside a CUDA-graph capture its singularity check would synchronise with the host."""
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    if torch.onnx.is_in_onnx_export() or capturing:
        return solve_unrolled(a, b)
    return torch.linalg.solve(a, b)


def make_coordinate_grid(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``(h, w, 2)`` pixel-centre coordinates ``(x, y)`` in ``[-1, 1]``.

    ``grid[i, j] = ((2j + 1) / w - 1, (2i + 1) / h - 1)``; ``F.grid_sample(image, grid[None],
    align_corners=False)`` with this grid returns ``image`` unchanged.
    """
    x = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    y = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)


def apply_affine(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply per-sample affine maps to points.

    Args:
        points: ``(B, ..., 2)`` as ``(x, y)``; a leading 1 broadcasts, e.g. a shared grid
            ``make_coordinate_grid(h, w)[None]``.
        matrix: ``(B, 3, 3)`` homogeneous (last row ignored) or ``(B, 2, 3)``.

    Returns:
        ``(B, ..., 2)``: ``matrix[:, :2, :2] @ p + matrix[:, :2, 2]`` for every point ``p``.
    """
    view = (matrix.shape[0],) + (1,) * (points.ndim - 2)
    linear = matrix[:, :2, :2].reshape(*view, 2, 2)
    shift = matrix[:, :2, 2].reshape(*view, 2)
    return (linear @ points.unsqueeze(-1)).squeeze(-1) + shift


def _radial_basis(squared_distance: torch.Tensor) -> torch.Tensor:
    """``U(r) = r^2 log r^2`` from ``r^2``, with ``U(0) = 0``.

    The clamp inside the log keeps both value and gradient finite at ``r = 0`` (a control
    point evaluated at itself), where ``xlogy`` would give a NaN gradient. The clamp is never
    below float32's smallest normal, even for the float64 TPS systems: ONNX export stores the
    scalar as float32, where float64's ``tiny`` (2e-308) is 0 and the log of 0 gives NaN.
    """
    tiny = max(torch.finfo(squared_distance.dtype).tiny, torch.finfo(torch.float32).tiny)
    return squared_distance * torch.log(squared_distance.clamp_min(tiny))


class TPS:
    """A batch of ``B x T`` thin-plate splines ``f: R^2 -> R^2``.

    Build one with :meth:`fit` (through given point pairs) or :func:`random_tps`; the
    constructor takes the parameters directly.

    Args:
        control_points: ``(B, T, P, 2)`` centres ``c_i`` of the radial terms.
        weights: ``(B, T, P, 2)`` radial weights ``w_i``.
        affine: ``(B, T, 3, 2)`` affine part: ``f_affine(x, y) = (x, y, 1) @ affine``.
    """

    def __init__(
        self, control_points: torch.Tensor, weights: torch.Tensor, affine: torch.Tensor
    ) -> None:
        self.control_points = control_points
        self.weights = weights
        self.affine = affine

    @classmethod
    def fit(cls, kp_driving: torch.Tensor, kp_source: torch.Tensor, ridge: float = 1e-6) -> TPS:
        """The splines with ``f(kp_driving[b, t, i]) = kp_source[b, t, i]``.

        Solves the ``(P + 3) x (P + 3)`` systems

            [[K + ridge I, Q], [Q^T, 0]] @ [w; A] = [kp_source; 0],

        ``K_ij = U(|c_i - c_j|)``, ``Q = [c, 1]``, batched with ``torch.linalg.solve``. The
        lower block rows force the radial part to carry no affine component, which makes the
        solution unique. The ridge turns exact interpolation into a (negligibly) smoothing
        spline, which keeps the system non-singular when two keypoints of a transform coincide
        (a detector can collapse points early in training); it does not affect the affine
        reproduction. The systems are solved in float64 -- they are tiny, and
        ``K`` mixes entries near 0 with entries near ``8 log 8`` -- and the parameters are
        returned in the keypoints' dtype, but never below float32: under autocast the
        keypoints may arrive in bf16/fp16, whose 8/11-bit mantissas would put the warp grids
        up to half a pixel off at 128x128. Differentiable with respect to both point sets.
        A much smaller ridge on the affine block (``-1e-3 ridge I``, lower-right) keeps the
        system solvable when all points of a transform are collinear or coincide, as a freshly
        initialised detector can produce; the affine part then falls back towards zero in the
        undetermined directions instead of the solve failing.

        Args:
            kp_driving: ``(B, T, P, 2)`` control points in the driving frame.
            kp_source: ``(B, T, P, 2)`` where they must land in the source frame.
        """
        if kp_driving.shape != kp_source.shape or kp_driving.ndim != 4 or kp_driving.shape[-1] != 2:
            raise ValueError(
                "kp_driving and kp_source must both be (B, T, P, 2), got "
                f"{tuple(kp_driving.shape)} and {tuple(kp_source.shape)}"
            )
        num_points = kp_driving.shape[-2]
        if num_points < 3:
            raise ValueError(f"a TPS needs at least 3 control points, got {num_points}")
        work = torch.promote_types(kp_driving.dtype, torch.float64)
        centres, targets = kp_driving.to(work), kp_source.to(work)
        squared = (centres[..., :, None, :] - centres[..., None, :, :]).square().sum(-1)
        eye = torch.eye(num_points, dtype=work, device=centres.device)
        kernel = _radial_basis(squared) + ridge * eye
        homogeneous = torch.cat([centres, torch.ones_like(centres[..., :1])], dim=-1)
        system = torch.cat(
            [
                torch.cat([kernel, homogeneous], dim=-1),
                F.pad(homogeneous.transpose(-1, -2), (0, 3))
                - F.pad(
                    1e-3 * ridge * torch.eye(3, dtype=work, device=centres.device), (num_points, 0)
                ),
            ],
            dim=-2,
        )
        solution = _solve(system, F.pad(targets, (0, 0, 0, 3)))
        solution = solution.to(torch.promote_types(kp_driving.dtype, torch.float32))
        return cls(
            kp_driving.to(solution.dtype),
            solution[..., :num_points, :],
            solution[..., num_points:, :],
        )

    def warp_points(self, points: torch.Tensor) -> torch.Tensor:
        """Evaluate every spline at ``points``.

        Args:
            points: ``(B, T, ..., 2)``; ``B`` and ``T`` may be 1 to share points across
                samples or transforms (e.g. ``kp[:, None]`` for a single-transform TPS, as in
                the equivariance loss).

        Returns:
            ``(B, T, ..., 2)``.
        """
        if points.ndim < 3 or points.shape[-1] != 2:
            raise ValueError(f"points must be (B, T, ..., 2), got {tuple(points.shape)}")
        spatial = points.shape[2:-1]
        with exact_coordinates(points.device):  # no bf16/fp16 matmuls for coordinates
            flat = points.reshape(*points.shape[:2], -1, 2).to(self.weights.dtype)  # (B, T, M, 2)
            offsets = flat[..., :, None, :] - self.control_points[..., None, :, :]
            radial = _radial_basis(offsets.square().sum(-1)) @ self.weights  # (B, T, M, 2)
            warped = radial + flat @ self.affine[..., :2, :] + self.affine[..., 2:, :]
        return warped.reshape(*warped.shape[:2], *spatial, 2)

    def warp_grid(self, h: int, w: int) -> torch.Tensor:
        """``(B, T, h, w, 2)`` sampling grids: every spline at every pixel centre."""
        grid = make_coordinate_grid(h, w, self.affine.device, self.affine.dtype)
        return self.warp_points(grid[None, None])

    def warp_image(self, image: torch.Tensor) -> torch.Tensor:
        """Backward-warp ``(B, C, H, W)`` images by every spline -> ``(B, T, C, H, W)``.

        Reflection padding, so the borders a random deformation pulls in look like image
        content rather than black bars that a keypoint detector could latch on to.
        """
        batch, channels, h, w = image.shape
        grid = self.warp_grid(h, w).expand(batch, -1, -1, -1, -1)
        num = grid.shape[1]
        stacked = image[:, None].expand(-1, num, -1, -1, -1).reshape(-1, channels, h, w)
        warped = F.grid_sample(
            stacked, grid.reshape(-1, h, w, 2), padding_mode="reflection", align_corners=False
        )
        return warped.view(batch, num, channels, h, w)


def random_tps(
    batch: int,
    sigma_affine: float,
    sigma_tps: float,
    points_tps: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> TPS:
    """A random smooth deformation per sample, for TPSMM's equivariance loss.

    The loss warps a frame by a known random deformation and asks the keypoint detector to
    move its points accordingly. The deformation is a single TPS (``T = 1``): an affine part
    ``identity + N(0, sigma_affine^2)`` (rotation, scale, shear, shift) and radial weights
    ``N(0, sigma_tps^2)`` on a ``points_tps x points_tps`` lattice of control points.
    The radial weights are sampled directly rather than fitted, as in TPSMM, so its values of
    ``sigma_affine`` (0.05) and ``sigma_tps`` (0.005) with ``points_tps`` 5 keep their meaning.

    Returns:
        A :class:`TPS` with parameters ``(batch, 1, ...)``.
    """
    lattice = make_coordinate_grid(points_tps, points_tps, device, dtype).reshape(1, 1, -1, 2)
    num_points = lattice.shape[2]
    identity = torch.eye(3, 2, device=device, dtype=dtype)
    affine = identity + sigma_affine * torch.randn(
        batch, 1, 3, 2, device=device, dtype=dtype, generator=generator
    )
    weights = sigma_tps * torch.randn(
        batch, 1, num_points, 2, device=device, dtype=dtype, generator=generator
    )
    return TPS(lattice.expand(batch, 1, -1, -1), weights, affine)
