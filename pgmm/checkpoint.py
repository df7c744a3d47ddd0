"""``save_pretrained`` / ``from_pretrained`` folders shared by the small models (diffusers-style).

A folder holds ``config.json`` (``model_type`` + the model's config) and ``model.safetensors``
(no pickle, so loading an untrusted checkpoint cannot run code). Every error names the folder
and says what is wrong, because checkpoints travel between machines and a bare KeyError from
``load_state_dict`` does not tell a user which file to replace.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
T = TypeVar("T")


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


def save_folder(directory: str | Path, module: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``config.json`` (with ``model_type``) and ``model.safetensors``, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model_type": type(module).__name__, **config}
    tmp = directory / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(directory / CONFIG_NAME)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / WEIGHTS_NAME)
    return directory


def read_config(directory: str | Path, model_type: str, what: str) -> dict[str, Any]:
    """The config of a folder written by :func:`save_folder` for ``model_type`` (checked)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {directory}")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: missing {name}")
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory}: {CONFIG_NAME} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{directory}: {CONFIG_NAME} must hold a JSON object")
    found = meta.pop("model_type", None)
    if found != model_type:
        raise ValueError(f"{directory}: model_type is {found!r}, expected {model_type}")
    return meta


def load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` into ``module``; any mismatch is one clear ``ValueError``."""
    directory = Path(directory)
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
    except SafetensorError as e:  # bad bytes only: other errors keep their own message
        raise ValueError(f"{directory}: cannot read {WEIGHTS_NAME} ({e})") from e
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
        raise ValueError(
            f"{directory}: {WEIGHTS_NAME} does not match {CONFIG_NAME} "
            f"({len(problems)} problems): {shown}"
        )
    module.load_state_dict(state)


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
