"""``save_pretrained`` / ``from_pretrained`` folders of every model (diffusers-style), and the
readers of config files.

A folder holds ``config.json`` (``model_type`` + the model's config) and ``model.safetensors``
(no pickle, so loading an untrusted checkpoint cannot run code). Every error names the folder
and says what is wrong, because checkpoints travel between machines and a bare KeyError from
``load_state_dict`` does not tell a user which file to replace. PGMM folders written before
issue 18 have no ``model_type`` (``read_config(..., untyped_ok=True)`` accepts them).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INT8_SCALE_SUFFIX = ":int8_scale"
T = TypeVar("T")
C = TypeVar("C", bound="DictConfig")
M = TypeVar("M", bound=nn.Module)


class CheckpointError(ValueError):
    """A checkpoint folder whose files are unreadable or do not match what the caller asked for."""


class DeviceError(ValueError):
    """A device this host cannot provide: the checkpoint is fine, the request is not."""


def target_device(device: str | torch.device) -> torch.device:
    """``device`` checked before a checkpoint is read, so that a missing GPU is reported as
    such -- not as a corrupt file, which is what a failed load onto it looked like."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {str(device)!r} ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {dev} requested, but this host has no usable CUDA device "
                f"(PyTorch {torch.__version__}); use cpu, or auto to take a GPU where present"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {dev} requested, but this host has {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    return dev


def save_folder(
    directory: str | Path,
    module: nn.Module,
    config: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``config.json`` (with ``model_type``) and ``model.safetensors``, each atomically.

    ``metadata``: extra safetensors header entries (strings), beside ``format``.
    """
    directory = write_config(directory, type(module).__name__, config)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, save(state, {"format": "pt", **(metadata or {})}))
    return directory


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to a temporary sibling, then rename it over ``path``: a
    crash or Ctrl-C never leaves a half-written file where a loader would read it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    tmp.replace(path)


def write_config(directory: str | Path, model_type: str, config: dict[str, Any]) -> Path:
    """Create ``directory`` and write its ``config.json``: ``model_type`` + ``config``, which
    :func:`read_config` checks and returns. Models whose weights are not one ``nn.Module``
    (numpy arrays, several files) write their own weights beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model_type": model_type, **config}
    atomic_write(directory / CONFIG_NAME, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return directory


def read_config(
    directory: str | Path,
    model_type: str,
    what: str,
    untyped_ok: bool = False,
    files: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The config of a folder written by :func:`save_folder` for ``model_type`` (checked).

    ``untyped_ok``: also accept a config without ``model_type`` (PGMM checkpoints from before
    they were written here); a config that names another type is refused all the same.
    ``files``: more files the folder must hold (a vocabulary), checked with the weights.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {directory}")
    for name in (CONFIG_NAME, WEIGHTS_NAME, *files):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: missing {name}")
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{directory}: {CONFIG_NAME} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{directory}: {CONFIG_NAME} must hold a JSON object")
    found = meta.pop("model_type", None)
    if found != model_type and not (found is None and untyped_ok):
        raise CheckpointError(f"{directory}: model_type is {found!r}, expected {model_type}")
    return meta


def quantize_int8(
    state: dict[str, torch.Tensor], modules: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Symmetric int8 with one scale per row (per output channel of a convolution) for every
    float tensor of two or more dimensions; ``KEY:int8_scale`` holds the scales. ``modules``:
    only the tensors under these top-level modules (e.g. a renderer's motion estimation, whose
    rounding moves pixels less than the image path's; the rest is left as it is).

    A quarter of float32, half of float16: what lets more models fit the < 80 MiB of
    ``models/``. Per-row scales keep a small output channel from being rounded to nothing by a
    large one. Vectors (biases, norms) and integer buffers stay as they are.
    """
    if modules is not None:
        unknown = set(modules) - {key.split(".")[0] for key in state}
        if unknown:
            raise ValueError(f"no weights under module(s) {sorted(unknown)} to store as int8")
    out = {}
    for key, value in state.items():
        skipped = modules is not None and key.split(".")[0] not in modules
        if skipped or value.dim() < 2 or not value.is_floating_point():
            out[key] = value
            continue
        rows = value.float().flatten(1)
        scale = rows.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
        out[key] = (rows / scale).round().clamp(-127, 127).to(torch.int8).view_as(value)
        out[key + INT8_SCALE_SUFFIX] = scale.squeeze(1)
    return out


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors of a state :func:`quantize_int8` wrote (a float state passes unchanged)."""
    out = {}
    for key, value in state.items():
        if key.endswith(INT8_SCALE_SUFFIX):
            continue
        if value.dtype == torch.int8 and key + INT8_SCALE_SUFFIX in state:
            scale = state[key + INT8_SCALE_SUFFIX].float()
            value = (value.float().flatten(1) * scale.unsqueeze(1)).view_as(value)
        out[key] = value
    return out


def load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` (float, or int8 as :func:`quantize_int8` stores it) into
    ``module``; any mismatch is one clear ``ValueError``."""
    directory = Path(directory)
    try:
        state = dequantize_int8(load_file(str(directory / WEIGHTS_NAME)))
    except SafetensorError as e:  # bad bytes only: other errors keep their own message
        raise CheckpointError(f"{directory}: cannot read {WEIGHTS_NAME} ({e})") from e
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        raise CheckpointError(
            f"{directory}: {WEIGHTS_NAME} does not match {CONFIG_NAME} "
            f"({len(problems)} problems): {shown}"
        )
    module.load_state_dict(state)


def yaml_section(
    path: str | Path, section: str, what: str, whole_if_absent: bool = False
) -> dict[str, Any]:
    """The ``section:`` mapping of a config YAML file (``model:``, ``train:``), ``{}`` if absent.

    One reader for every config class, so each reports a missing file, bad YAML or a section
    that is not a mapping the same way: one line naming the file. ``whole_if_absent``: a file
    without ``section`` is that section itself (PGMM model files may be written flat).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    found = data.get(section, data if whole_if_absent else None) or {}
    if not isinstance(found, dict):
        raise ValueError(f"{path}: the {section} section must be a mapping of config keys")
    return found


def recipe_from_yaml(
    cls: type[T], model_cls: type[Any], path: str | Path, overrides: dict[str, Any] | None = None
) -> T:
    """A training recipe ``cls`` whose ``model`` field is a ``model_cls``: that from the file's
    ``model:`` section, every other field from its ``train:`` section, then ``overrides`` (the
    command line's). Unknown keys in either section are an error naming the file."""
    model = yaml_section(path, "model", "training")
    train = {**yaml_section(path, "train", "training"), **(overrides or {})}
    model_config = dataclass_from_dict(model_cls, model, f"{path} model")
    return dataclass_from_dict(cls, {**train, "model": model_config}, f"{path} train")


class DictConfig:
    """``to_dict`` / ``from_dict`` of a config dataclass (what ``config.json`` holds), written
    once for every config; ``from_dict`` refuses unknown keys (:func:`dataclass_from_dict`)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        return dataclass_from_dict(cls, data, cls.__name__)


def dataclass_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build config dataclass ``cls`` from ``data``; unknown keys are an error naming them.

    Silently dropping an unknown key would turn a typo in a YAML file or a checkpoint from a
    newer version into a model built with a default the user did not ask for.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    return cls(**data)


def load_folder(cls: type[M], config: type[DictConfig], directory: str | Path, what: str) -> M:
    """``cls(config)`` from a folder written by :func:`save_folder`, its weights loaded.

    A config the model refuses is a ``ValueError`` naming the folder, as every other problem
    with the folder is."""
    meta = read_config(directory, cls.__name__, what)
    try:
        model = cls(config.from_dict(meta))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{directory}: bad {CONFIG_NAME}: {e}") from e
    load_weights(model, directory)
    return model


def check_positive(what: str, counts: dict[str, int], detail: str = "") -> None:
    """Refuse config sizes and counts below 1, every offender named in one error."""
    bad = sorted(k for k, v in counts.items() if int(v) < 1)
    if bad:
        raise ValueError(f"{what} values must be positive: {bad}{detail}")
