"""Pipeline settings, shared by the Ray Serve graph and ``slp synthesize``.

They live as the ``args`` of the application in a Ray Serve config file
(``configs/serve/*.yaml``), so one file drives ``serve run``, ``slp serve`` and
``slp synthesize --config``, and the two ways of producing a video cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgmm.checkpoint import dataclass_from_dict
from pgmm.training.config import TrainConfig
from slp_pipeline.auth import ApiKeys, keys_from
from slp_pipeline.stages import SKELETON, TextToPoseLoader

DEFAULT_CONFIG = Path("configs/serve/cpu.yaml")


UPLOAD_POSES = ("mediapipe", "pe")
ORIGIN = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"  # a browser origin: no path, no trailing slash


@dataclass
class PipelineConfig:
    """Model locations and per-request limits. Relative paths are taken from the directory
    the app is built in (run from the repository root)."""

    text2pose: dict[str, str]  # language -> TextToPose folder
    renderers: dict[str, str]  # name -> PGMM checkpoint folder, or "skeleton"
    default_renderer: str
    pose_estimator: str | None = None  # P_e folder; without it, uploads are refused
    # How an uploaded photo's pose is found: "mediapipe" (real people; needs the `real`
    # extra) or "pe" (our P_e, trained on SynthSigner: right for synthetic images only --
    # on real frames its hand PCK@0.05 is 0, see docs/results.md).
    upload_poses: str = "mediapipe"
    signers_dir: str = "data/signers"
    device: str = "auto"  # auto | cpu | cuda
    chunk_frames: int = 16
    max_text_chars: int = 500
    min_fps: float = 5.0
    max_fps: float = 60.0
    heatmap_sigma: float = TrainConfig.heatmap_sigma
    skeleton_size: int = 256
    torch_threads: int = 1  # per replica; CPU hosts run several replicas side by side
    max_batch_size: int = 4  # frame chunks per renderer forward pass
    batch_wait_timeout_s: float = 0.02
    # Serving security (see slp_pipeline.auth and README "Serving"). Keys are better kept out of
    # config files: $SLP_API_KEY adds to these.
    api_keys: list[str] = field(default_factory=list, repr=False)
    sign_requires_key: bool = False  # also ask a key for POST /v1/sign
    max_signers: int = 50  # built-ins included; uploads beyond it get 409
    # Browser origins allowed to call the API (CORS); none: only the service's own page.
    cors_origins: list[str] = field(default_factory=list)
    #: Programmatic only (not in YAML): builds text2pose models; ``None`` uses ``TextToPose``.
    text2pose_loader: TextToPoseLoader | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.default_renderer not in self.renderers:
            raise ValueError(
                f"default_renderer {self.default_renderer!r} is not one of the configured "
                f"renderers {sorted(self.renderers)}"
            )
        if self.upload_poses not in UPLOAD_POSES:
            raise ValueError(
                f"upload_poses must be one of {UPLOAD_POSES}, got {self.upload_poses!r}"
            )
        if min(self.chunk_frames, self.max_text_chars, self.max_batch_size, self.max_signers) < 1:
            raise ValueError(
                "chunk_frames, max_text_chars, max_batch_size and max_signers must be >= 1"
            )
        bad = [o for o in self.cors_origins if o != "*" and not re.fullmatch(ORIGIN, o)]
        if bad:
            raise ValueError(f"cors_origins must be '*' or scheme://host[:port]; got {bad}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        return dataclass_from_dict(cls, dict(data), "pipeline config")

    def resolved(self, root: str | Path = ".") -> PipelineConfig:
        """Paths made absolute against ``root``, so replicas find the models whatever their
        working directory."""
        root = Path(root).resolve()

        def fix(p: str) -> str:
            return p if p == SKELETON else str(root / p)

        return dataclasses.replace(
            self,
            text2pose={k: fix(v) for k, v in self.text2pose.items()},
            renderers={k: fix(v) for k, v in self.renderers.items()},
            pose_estimator=fix(self.pose_estimator) if self.pose_estimator else None,
            signers_dir=fix(self.signers_dir),
        )

    def key_policy(self) -> ApiKeys:
        """The API keys (the config's and ``$SLP_API_KEY``'s), as digests for the replicas."""
        return ApiKeys.from_keys(keys_from(self.api_keys), self.sign_requires_key)

    def check_models(self) -> None:
        """Fail before anything is deployed, naming every missing model folder at once."""
        folders = [(f"text2pose ({k})", v) for k, v in self.text2pose.items()]
        folders += [(f"renderer '{k}'", v) for k, v in self.renderers.items() if v != SKELETON]
        if self.pose_estimator:
            folders.append(("pose estimator", self.pose_estimator))
        missing = [f"{what}: {path}" for what, path in folders if not Path(path).is_dir()]
        if missing:
            raise FileNotFoundError(
                "model folders not found -- train or download them, or edit the serve config: "
                + "; ".join(missing)
            )


def load_serve_config(path: str | Path) -> dict[str, Any]:
    """A Ray Serve config file with exactly one application (ours)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"serve config not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    apps = data.get("applications") if isinstance(data, dict) else None
    if not isinstance(apps, list) or len(apps) != 1 or not isinstance(apps[0], dict):
        raise ValueError(f"{path}: expected a Ray Serve config with one entry in 'applications'")
    return data


def pipeline_config(serve_config: Mapping[str, Any]) -> PipelineConfig:
    """The application's ``args`` of a loaded serve config, as a :class:`PipelineConfig`."""
    return PipelineConfig.from_dict(serve_config["applications"][0].get("args") or {})
