"""PGMM: the Pose-Guided Motion Model, read top to bottom.

    source, driving --E_M (TPSMM: keypoints, background, dense motion)--> X_m, deformations
    source --E_I--> X_s (4 scales)          heatmaps H --P_d (PoseNet)--> X_p (4 scales)
    G(X_s, X_m, X_p): [CMM -> PFM -> 2 ResBlocks -> Up] x 4 -> sigmoid -> generated frame

Two entry points:

* :meth:`PGMM.reconstruct` -- the paper's setting: a driving *image* gives the motion.
* :meth:`PGMM.animate` -- ours: driving *heatmaps* (from text2pose poses) give the motion,
  through :class:`~pgmm.models.driving_head.DrivingKeypointHead`; the source (signer) side is
  computed once by :meth:`PGMM.encode_source` and reused for every frame.

Checkpoints are a folder with ``config.json`` and ``model.safetensors`` (no pickle), written and
read by :mod:`pgmm.checkpoint` like every other model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pgmm.checkpoint import (
    CONFIG_NAME,
    CheckpointError,
    load_weights,
    read_config,
    save_folder,
    target_device,
)
from pgmm.models.bg_motion import BackgroundMotion
from pgmm.models.config import PGMMConfig
from pgmm.models.dense_motion import DenseMotion, MotionOutput
from pgmm.models.driving_head import DrivingKeypointHead
from pgmm.models.encoder import ImageEncoder, pyramid_channels
from pgmm.models.generator import Generator, GeneratorOutput
from pgmm.models.keypoint_detector import KeypointDetector
from pgmm.models.posenet import PoseNet


@dataclass
class SourceState:
    """Everything about the source (signer) image that does not depend on the driving frame."""

    image: torch.Tensor  # (1 or B, 3, H, W)
    features: list[torch.Tensor]  # E_I pyramid, finest first
    kp_source: torch.Tensor  # (B, K, 2)
    heatmaps: torch.Tensor | None  # (B, 36, H/4, W/4) source pose heatmaps


@dataclass
class PGMMOutput:
    """One training forward (:meth:`PGMM.forward`): the prediction and what the losses read.

    Names follow the paper (Eq. 2, 9-11): ``prediction`` is \\hat{I}_d, ``kp_source`` and
    ``kp_driving`` are K_s and K_d, ``source_features``/``driving_features`` the E_I pyramids
    X_s/X_d, ``Y_s``/``Y_d`` the generator intermediates of L_align. A field that the call did
    not ask for is ``None``, so a loss that needs it says which argument is missing.
    """

    prediction: torch.Tensor  # \hat{I}_d (B, 3, H, W) in [0, 1]
    kp_source: torch.Tensor  # K_s (B, K, 2)
    kp_driving: torch.Tensor  # K_d (B, K, 2)
    bg_param: torch.Tensor  # (B, 3, 3) background transform, driving -> source coordinates
    motion: MotionOutput  # E_M's dense motion: X_m, the optical flow, TPSMM's occlusions
    Y_s: list[torch.Tensor]  # generator intermediates, coarsest first
    flows: list[torch.Tensor | None]  # the per-scale flows of the generator's warps
    occlusions: list[torch.Tensor | None]
    # X_s, returned so the warp loss reuses it instead of encoding the source again.
    source_features: list[torch.Tensor]
    # With ``with_align``: the no-CMM pass Y_d (no graph) and the X_d it was computed from.
    Y_d: list[torch.Tensor] | None = None
    driving_features: list[torch.Tensor] | None = None
    # With ``source_heatmaps`` and ``driving_heatmaps``: the pose-driven head's K_d and
    # background transform, distilled from ``kp_driving`` and ``bg_param``.
    kp_driving_from_pose: torch.Tensor | None = None
    bg_from_pose: torch.Tensor | None = None


class PGMM(nn.Module):
    def __init__(self, config: PGMMConfig) -> None:
        super().__init__()
        self.config = c = config
        # Motion branch E_M (TPSMM).
        self.kp_detector = KeypointDetector(c.num_tps, c.points_per_tps, c.backbone_width)
        self.bg_motion = BackgroundMotion(c.backbone_width)
        self.dense_motion = DenseMotion(
            num_tps=c.num_tps,
            points_per_tps=c.points_per_tps,
            block_expansion=c.dense_block_expansion,
            num_blocks=c.dense_num_blocks,
            max_features=c.dense_max_features,
            scale_factor=c.dense_scale_factor,
            kp_variance=c.kp_variance,
            # TPSMM's occlusion masks feed the baseline's warping; CMM predicts its own.
            occlusion_scales=tuple(1 / 2**i for i in range(c.num_down_blocks, -1, -1))
            if c.motion == "tpsmm"
            else (),
        )
        # Image encoder E_I, pose branch P_d, generator G.
        self.encoder = ImageEncoder(c.block_expansion, c.max_features, c.num_down_blocks)
        pose_channels = None
        if c.uses_pose:
            pose_channels = pyramid_channels(
                c.pose_block_expansion, c.max_features, c.num_down_blocks
            )
            self.posenet = PoseNet(c.num_keypoints, pose_channels, c.pose_upsample)
        self.generator = Generator(
            self.encoder.channels,
            pose_channels,
            c.motion,
            c.fusion,
            motion_channels=self.dense_motion.feature_channels,
            num_deformations=c.num_tps + 2,
            image_size=c.image_size,
            pfm_max_tokens=c.pfm_max_tokens,
        )
        # Pose-driven inference (every variant, so every renderer can be driven by text).
        self.driving_head = DrivingKeypointHead(
            c.num_keypoints, c.num_keypoints_tps, c.driving_head_channels
        )

    # ------------------------------------------------------------------ building blocks
    def _check_input(self, image: torch.Tensor, name: str) -> None:
        size = self.config.image_size
        if image.ndim != 4 or image.shape[1] != 3 or tuple(image.shape[-2:]) != (size, size):
            raise ValueError(f"{name} must be (B, 3, {size}, {size}), got {tuple(image.shape)}")

    def pose_features(self, heatmaps: torch.Tensor | None) -> list[torch.Tensor] | None:
        if not self.config.uses_pose:
            return None
        if heatmaps is None:
            raise ValueError(f"the {self.config.variant} variant needs driving heatmaps")
        coarse = self.config.image_size // 2**self.config.num_down_blocks
        return self.posenet(heatmaps, (coarse, coarse))

    def generate(
        self,
        features: list[torch.Tensor],
        motion: MotionOutput | None,
        driving_heatmaps: torch.Tensor | None,
    ) -> GeneratorOutput:
        return self.generator(features, motion, self.pose_features(driving_heatmaps))

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        driving_heatmaps: torch.Tensor | None = None,
        source_heatmaps: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        with_align: bool = False,
    ) -> PGMMOutput:
        """Reconstruct ``driving`` from ``source`` (the paper's training setting).

        Returns the prediction and every intermediate the losses need: keypoints, background
        transform, motion output, generator intermediates Y_s, and -- with ``with_align`` --
        the no-CMM pass Y_d on the driving image; with ``source_heatmaps`` also the
        pose-driven keypoint head's predictions (for its distillation loss).
        """
        self._check_input(source, "source")
        self._check_input(driving, "driving")
        kp_source, kp_driving = self.kp_detector(source), self.kp_detector(driving)
        bg_param = self.bg_motion(source, driving)
        motion = self.dense_motion(source, kp_driving, kp_source, bg_param, dropout_p)
        pose = self.pose_features(driving_heatmaps)
        source_features = self.encoder(source)
        out = self.generator(source_features, motion, pose)
        assert out.image is not None  # with_image defaults to True
        result = PGMMOutput(
            prediction=out.image,
            kp_source=kp_source,
            kp_driving=kp_driving,
            bg_param=bg_param,
            motion=motion,
            Y_s=out.intermediates,
            flows=out.flows,
            occlusions=out.occlusions,
            source_features=source_features,
        )
        if with_align:
            # L_align uses Y_d as a fixed target (pgmm.losses.pose.align_loss), so the no-CMM
            # pass needs no graph (about a third less training compute for `full`), and no
            # image: only its intermediates are compared.
            with torch.no_grad():
                result.driving_features = self.encoder(driving)
                no_cmm = self.generator(result.driving_features, None, pose, with_image=False)
            result.Y_d = no_cmm.intermediates
        if source_heatmaps is not None and driving_heatmaps is not None:
            # kp_source is an input of the head, not a prediction: detached, so the keypoint
            # detector (the distillation teacher) is not trained by the head's loss through it.
            result.kp_driving_from_pose, result.bg_from_pose = self.driving_head(
                driving_heatmaps, source_heatmaps, kp_source.detach()
            )
        return result

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def reconstruct(
        self,
        source: torch.Tensor,
        driving: torch.Tensor,
        driving_heatmaps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The paper's inference: animate ``source`` with the motion of a driving image."""
        return self.forward(source, driving, driving_heatmaps).prediction

    @torch.no_grad()
    def encode_source(
        self, source: torch.Tensor, source_heatmaps: torch.Tensor | None = None
    ) -> SourceState:
        """Per-signer work, done once and cached by the serving layer."""
        self._check_input(source, "source")
        return SourceState(source, self.encoder(source), self.kp_detector(source), source_heatmaps)

    @torch.no_grad()
    def animate(
        self, source: torch.Tensor | SourceState, driving_heatmaps: torch.Tensor
    ) -> torch.Tensor:
        """Frames ``(T, 3, H, W)`` of the source signer in the poses of ``driving_heatmaps``.

        ``source`` is an image ``(1, 3, H, W)`` or a cached :class:`SourceState` that carries
        the source heatmaps (needed as the reference pose).
        """
        state = source if isinstance(source, SourceState) else self.encode_source(source)
        if state.heatmaps is None:
            raise ValueError("animate() needs the source pose: pass a SourceState with heatmaps")
        t = driving_heatmaps.shape[0]

        def expand(x: torch.Tensor) -> torch.Tensor:
            return x.expand(t, *x.shape[1:]) if x.shape[0] == 1 else x

        kp_source = expand(state.kp_source)
        kp_driving, bg = self.driving_head(driving_heatmaps, expand(state.heatmaps), kp_source)
        image = expand(state.image)
        motion = self.dense_motion(image, kp_driving, kp_source, bg)
        feats = [expand(f) for f in state.features]
        frames = self.generate(feats, motion, driving_heatmaps).image
        assert frames is not None  # the generator returns no image only when asked not to
        return frames

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (each atomically)."""
        variant = {"variant": self.config.variant}  # in the weights' header too, as always
        return save_folder(directory, self, self.config.to_dict(), metadata=variant)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        variant: str | None = None,
        image_size: int | None = None,
        map_location: str | torch.device = "cpu",
    ) -> PGMM:
        """Load a checkpoint folder; ``variant``/``image_size`` assert what the caller expects.

        A device this host lacks raises :class:`~pgmm.checkpoint.DeviceError` before anything
        is read; only bytes safetensors cannot parse are reported as an unreadable file.
        Folders from before ``model_type`` was written (every shipped PGMM) load as they are.
        """
        device = target_device(map_location)
        meta = read_config(directory, "PGMM", "PGMM", untyped_ok=True)  # subclasses too
        try:
            config = PGMMConfig.from_dict(meta)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{directory}: unreadable PGMM {CONFIG_NAME} ({e})") from e
        if variant is not None and config.variant != variant:
            raise CheckpointError(
                f"{directory} holds a '{config.variant}' PGMM, but '{variant}' was requested"
            )
        if image_size is not None and config.image_size != image_size:
            raise CheckpointError(
                f"{directory} was trained at {config.image_size}x{config.image_size}, "
                f"but {image_size}x{image_size} was requested"
            )
        model = cls(config)
        load_weights(model, directory)  # read onto the CPU; moved below, with the model
        return model.to(device)
