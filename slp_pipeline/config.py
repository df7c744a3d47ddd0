"""Pipeline settings, shared by the Ray Serve graph and ``slp synthesize``.

They live as the ``args`` of the application in a Ray Serve config file
(``configs/serve/*.yaml``), so one file drives ``serve run``, ``slp serve`` and
``slp synthesize --config``, and the two ways of producing a video cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from pgmm.checkpoint import dataclass_from_dict
from slp_pipeline.auth import ApiKeys, keys_from
from slp_pipeline.stages import TextToPoseLoader, is_skeleton, resolve_precision
from slp_pipeline.store import MANIFEST, Store, cache_dir, is_url

DEFAULT_CONFIG = Path("configs/serve/cpu.yaml")


UPLOAD_POSES = ("mediapipe", "pe")
ORIGIN = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"  # a browser origin: no path, no trailing slash
DEVICE = r"auto|cpu|cuda(:[0-9]+)?"
#: Settings that count something: each must be >= 1.
COUNTS = ("chunk_frames", "first_chunk_frames", "max_text_chars", "max_batch_size", "max_signers")
#: Deployments whose replicas run PyTorch on their CPUs (``torch_threads`` threads each).
TORCH_DEPLOYMENTS = ("Text2Pose", "Renderer")


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
    signers_dir: str = "data/signers"  # a local folder or any fsspec URL (docs/cluster.md)
    # Where relative model paths are read from: a folder or fsspec URL laid out like the
    # repository (scripts/publish_models.py), copied to each node on first use (localized).
    models_uri: str | None = None
    device: str = "auto"  # auto (CUDA where present) | cpu | cuda | cuda:N
    # Renderer autocast: auto | fast | fp32 | fp16 | bf16 (stages.resolve_precision). "fast"
    # also renders in bf16 on CPUs with bf16 instructions: faster, frames within a few grey
    # levels of fp32 (docs/performance.md, "Pipeline").
    precision: str = "auto"
    # torch.compile the PGMM renderers when they load (inductor; docs/performance.md, "The
    # float32 CPU path"): 1.24x faster sentences on a CPU, after ~5 min of compiling per process.
    # For long-lived services; a one-shot `slp synthesize` would spend more time compiling.
    compile: bool = False
    chunk_frames: int = 16
    # A smaller first chunk shows the first frame sooner (stages.chunk_schedule). In-process
    # only (slp synthesize, slp caption): why the Serve graph keeps chunk_frames is in
    # serve_app.Text2Pose.
    first_chunk_frames: int = 4
    max_text_chars: int = 500
    min_fps: float = 5.0
    max_fps: float = 60.0
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
        if min(getattr(self, name) for name in COUNTS) < 1:
            raise ValueError(f"{', '.join(COUNTS[:-1])} and {COUNTS[-1]} must be >= 1")
        if not re.fullmatch(DEVICE, self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        resolve_precision(self.precision, torch.device("cpu"))  # an unknown name raises
        if not isinstance(self.compile, bool):  # YAML "compile: yes" is a bool; "on" a str
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
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
            return p if is_skeleton(p) or is_url(p) else str(root / p)

        def fix_model(p: str) -> str:  # relative paths under models_uri stay keys there
            return p if self._shared(p) else fix(p)

        return self._with_models(
            fix_model,
            signers_dir=fix(self.signers_dir),
            models_uri=fix(self.models_uri) if self.models_uri else None,
        )

    def _with_models(self, change: Callable[[str], str], **other: Any) -> PipelineConfig:
        """A copy with ``change`` applied to every model path (skeleton renderers excepted)."""

        def apply(p: str) -> str:
            return p if is_skeleton(p) else change(p)

        return dataclasses.replace(
            self,
            text2pose={k: apply(v) for k, v in self.text2pose.items()},
            renderers={k: apply(v) for k, v in self.renderers.items()},
            pose_estimator=apply(self.pose_estimator) if self.pose_estimator else None,
            **other,
        )

    def _shared(self, path: str) -> bool:
        """Whether ``path`` is read from :attr:`models_uri` (a relative path while it is set)."""
        return bool(self.models_uri) and not Path(path).is_absolute()

    def localized(self, cache: Path | None = None) -> PipelineConfig:
        """Model paths on this node's disk: models under :attr:`models_uri` are copied into
        ``cache`` (default ``$SLP_CACHE_DIR/models``) once per node and content, each file
        checked against its published digest. What every replica does before it loads a model;
        without ``models_uri``, the config itself."""
        if not self.models_uri:
            return self
        store = Store(self.models_uri)
        models = (cache or cache_dir()) / "models"

        def fetch(p: str) -> str:
            return str(store.fetch_folder(p, models)) if self._shared(p) else p

        return self._with_models(fetch, models_uri=None)

    def key_policy(self) -> ApiKeys:
        """The API keys (the config's and ``$SLP_API_KEY``'s), as digests for the replicas."""
        return ApiKeys.from_keys(keys_from(self.api_keys), self.sign_requires_key)

    def check_models(self) -> None:
        """Fail before anything is deployed, naming every missing model folder at once."""
        folders = [(f"text2pose ({k})", v) for k, v in self.text2pose.items()]
        folders += [(f"renderer '{k}'", v) for k, v in self.renderers.items() if not is_skeleton(v)]
        if self.pose_estimator:
            folders.append(("pose estimator", self.pose_estimator))
        store = Store(self.models_uri) if self.models_uri else None

        def found(path: str) -> bool:
            if store is not None and self._shared(path):
                return store.exists(f"{path}/{MANIFEST}")
            return Path(path).is_dir()

        where = f" (models_uri {self.models_uri})" if store else ""
        missing = [f"{what}: {path}{where}" for what, path in folders if not found(path)]
        if missing:
            raise FileNotFoundError(
                "model folders not found -- train or download them, or edit the serve config: "
                + "; ".join(missing)
            )


def load_serve_config(path: str | Path, gpus: int | None = None) -> dict[str, Any]:
    """A Ray Serve config file with exactly one application (ours), its deployments fitted to
    a host with ``gpus`` GPUs (default: this host's) by :func:`fit_to_host`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"serve config not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    apps = data.get("applications") if isinstance(data, dict) else None
    if not isinstance(apps, list) or len(apps) != 1 or not isinstance(apps[0], dict):
        raise ValueError(f"{path}: expected a Ray Serve config with one entry in 'applications'")
    try:
        return fit_to_host(data, visible_gpus() if gpus is None else gpus)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def visible_gpus() -> int:
    """CUDA devices this process may use (``CUDA_VISIBLE_DEVICES`` applies)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def fit_to_host(serve_config: Mapping[str, Any], gpus: int) -> dict[str, Any]:
    """A copy of a serve config whose Renderer deployment matches its ``device`` and a host with
    ``gpus`` GPUs; refuses settings that cannot work there.

    Ray shows an actor only the GPUs its ``ray_actor_options.num_gpus`` reserves, so the
    Renderer's device and its ``num_gpus`` must agree:

    * ``device: cuda`` needs ``num_gpus`` > 0 (without it Ray hides every GPU from the replica)
      and a GPU on the host; ``device: cpu`` with ``num_gpus`` would idle the reserved GPU.
    * ``device: auto`` follows the host: without a GPU the Renderer reserves none (a replica
      that asks for one would never be placed); with GPUs and ``ray_actor_options`` that do
      not mention ``num_gpus``, the replicas share them (``num_gpus`` = GPUs / max replicas,
      at most 1). An explicit ``num_gpus: 0`` keeps the Renderer on the CPU.
    * Autoscaling never asks for more Renderer replicas than the GPUs hold: ``max_replicas``
      becomes min(its value, GPUs / ``num_gpus``) -- one GPU with ``num_gpus: 0.5`` takes 2.
    * ``torch_threads`` may not exceed the CPUs a Text2Pose or Renderer replica reserves
      (rounded up): more threads than cores slows PyTorch down several times, not a little.

    Idempotent, so a config fitted once can be fitted again.
    """
    data = copy.deepcopy(dict(serve_config))
    app = data["applications"][0]
    config = pipeline_config(data)
    deployments = {d.get("name"): d for d in app.get("deployments") or []}
    threads = config.torch_threads
    for name in TORCH_DEPLOYMENTS:
        cpus = (deployments.get(name, {}).get("ray_actor_options") or {}).get("num_cpus")
        if cpus is not None and threads > max(1, math.ceil(cpus)):
            raise ValueError(
                f"torch_threads {threads} is more than the {cpus} CPUs a {name} replica "
                "reserves (ray_actor_options.num_cpus): lower torch_threads or raise num_cpus"
            )
    renderer = deployments.get("Renderer") or {}
    actor = renderer.get("ray_actor_options")  # None: the deployment's defaults (no GPU)
    reserved = None if actor is None else actor.get("num_gpus")
    scaling = renderer.get("autoscaling_config") or {}
    replicas = int(scaling.get("max_replicas", renderer.get("num_replicas", 1)))
    if config.device.startswith("cuda"):
        if not reserved:
            raise ValueError(
                "the Renderer runs on device cuda but reserves no GPU: Ray hides every GPU from "
                "a replica without ray_actor_options.num_gpus (set it, e.g. 0.5, or use device "
                "auto)"
            )
        if gpus == 0:
            raise ValueError(
                "device cuda, but this host has no CUDA GPU: use device auto (the CPU here) "
                "or configs/serve/cpu.yaml"
            )
    elif config.device == "cpu" and reserved:
        raise ValueError(
            f"device cpu, but the Renderer reserves num_gpus {reserved}: the GPU would sit idle"
        )
    elif actor is not None and config.device == "auto":
        if gpus == 0:
            actor["num_gpus"] = 0
        elif reserved is None:
            actor["num_gpus"] = min(1.0, gpus / replicas)
    share = float((actor or {}).get("num_gpus") or 0)
    if share == 0:
        return data
    if share > gpus:
        raise ValueError(f"a Renderer replica reserves {share:g} GPUs; this host has {gpus}")
    capacity = math.floor(gpus / share + 1e-9)
    if scaling:
        scaling["max_replicas"] = min(replicas, capacity)
        scaling["min_replicas"] = min(int(scaling.get("min_replicas", 1)), capacity)
    elif replicas > capacity:
        raise ValueError(
            f"{replicas} Renderer replicas with num_gpus {share:g} each need "
            f"{replicas * share:g} GPUs; this host has {gpus}"
        )
    return data


def check_serve_config(
    serve_config: Mapping[str, Any], root: str | Path = ".", gpus: int | None = None
) -> PipelineConfig:
    """Everything that can be checked before Ray starts: the pipeline settings, the resources
    on a host with ``gpus`` GPUs (:func:`fit_to_host`) and every model folder (against
    ``root``, the repository root). Returns the resolved pipeline config."""
    fit_to_host(serve_config, visible_gpus() if gpus is None else gpus)
    config = pipeline_config(serve_config).resolved(root)
    config.check_models()
    return config


def pipeline_config(serve_config: Mapping[str, Any]) -> PipelineConfig:
    """The application's ``args`` of a loaded serve config, as a :class:`PipelineConfig`."""
    return PipelineConfig.from_dict(serve_config["applications"][0].get("args") or {})
