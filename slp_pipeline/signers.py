"""The signer registry: the people a video can be rendered with, persisted in one folder.

A signer is one source image plus its whole-body reference pose -- all PGMM needs to animate
someone, and all retargeting needs to fit text2pose's canonical poses to that person's body.
Each signer is a sub-folder ``<root>/<name>/`` holding ``image.png`` (square RGB), ``pose.npz``
(``(133, 3)`` normalised COCO-WholeBody points, confidence 0 where unknown) and ``meta.json``;
an *adapted* signer (``slp signers adapt``) also has ``model/``, a PGMM fine-tuned on a clip of
that person, which the renderer of the same variant uses instead of its own weights.
Folders are written under a temporary name and renamed into place, so a crash never leaves a
half-written signer that a renderer replica could pick up.

Uploads are untrusted: they are size-capped before decoding, decoded with Pillow inside a
try/except (a corrupt or hostile file becomes an :class:`UploadError`, never a server error),
limited to PNG/JPEG, and centre-cropped to a square because PGMM renders square frames.

Two built-in signers are seeded from SynthSigner's held-out identities 10 and 11 -- identities
no renderer trains on -- so a fresh install can render out of the box and the defaults do not
flatter the model.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.motion import sentence_pose, sentence_rng
from pgmm.data.synth.render import render_frame
from pgmm.pose.layout import NUM_WHOLEBODY

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 64
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs long before they fill memory
STORED_SIZE = 256  # every signer is stored at this square size; renderers resize from it
ALLOWED_FORMATS = ("PNG", "JPEG")
#: Built-in signers: name -> SynthSigner identity (both held out from every training set).
BUILTIN_SIGNERS = {"default": 10, "synth-11": 11}

PoseEstimate = Callable[[np.ndarray], np.ndarray]
CACHE_SIGNERS = 64  # decoded signers kept per registry object (256² image + pose: ~200 KB each)
_LOAD_LOCK = threading.Lock()


class InputError(ValueError):
    """A request the caller can fix; ``status`` is the HTTP status the service answers with."""

    status = 422


class SignerNotFound(InputError):
    status = 404


class SignerExists(InputError):
    status = 409


class SignerProtected(InputError):
    status = 403


class UploadError(InputError):
    status = 400


class UploadTooLarge(UploadError):
    status = 413


class UnsupportedMediaType(UploadError):
    status = 415


@dataclass
class Signer:
    """One signer as the renderers see it."""

    name: str
    image: np.ndarray  # (S, S, 3) uint8
    pose: np.ndarray  # (133, 3) normalised xy + confidence
    meta: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None  # the signer's own PGMM weights (adapted signers only)

    @property
    def key(self) -> str:
        """Cache key that changes when the signer's content changes, so a replica never keeps
        serving a stale encoding after a signer is deleted and re-uploaded under its name."""
        return f"{self.name}@{self.meta.get('digest', '')}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(
            f"invalid signer name {name!r}: use 1-32 lowercase letters, digits, '-' or '_' "
            "starting with a letter or digit"
        )
    return name


def decode_upload(data: bytes) -> np.ndarray:
    """Untrusted image bytes -> square ``(STORED_SIZE, STORED_SIZE, 3)`` uint8 RGB."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(
            f"image is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB"
        )
    if not data:
        raise UploadError("empty upload: send the image bytes as the request body")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            width, height = probe.size
            if fmt not in ALLOWED_FORMATS:
                raise UnsupportedMediaType(f"image format {fmt} is not supported; send PNG or JPEG")
            if width * height > MAX_IMAGE_PIXELS:
                raise UploadError(f"image of {width}x{height} pixels is too large")
            probe.verify()  # checks the whole file without keeping pixels
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
    except InputError:
        raise
    except Exception as e:  # Pillow raises many types on hostile input; all mean "bad image"
        raise UploadError(f"not a readable PNG/JPEG image ({type(e).__name__}: {e})") from e
    if min(img.size) < MIN_IMAGE_SIDE:
        raise UploadError(
            f"image is {img.size[0]}x{img.size[1]}; both sides must be >= {MIN_IMAGE_SIDE} px"
        )
    square = ImageOps.fit(img, (STORED_SIZE, STORED_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def _digest(image: np.ndarray, pose: np.ndarray, *extra: bytes) -> str:
    """Content key of a signer; ``extra``: its own model files, so new weights are a new key."""
    h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    h.update(np.ascontiguousarray(pose, dtype=np.float32).tobytes())
    for part in extra:
        h.update(part)
    return h.hexdigest()[:16]


def synth_rest_signer(identity_id: int, size: int = STORED_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One rest-pose frame of a SynthSigner identity and its exact whole-body pose."""
    identity = make_identity(identity_id)
    pose = sentence_pose([], 1, identity, sentence_rng(0, f"signer/{identity_id}"))
    image = render_frame(pose.keypoints[0], pose.depth[0], identity, size, 4)
    points = np.concatenate([pose.keypoints[0], pose.confidence[0][:, None]], -1)
    return np.asarray(image, np.uint8), points.astype(np.float32)


class SignerRegistry:
    """Signers on disk: list, get, add, delete. Safe to share between processes that read it."""

    def __init__(self, root: str | Path, seed_builtins: bool = True) -> None:
        self.root = Path(root)
        self._cache: dict[str, Signer] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        if seed_builtins:
            for name, identity in BUILTIN_SIGNERS.items():
                if not (self.root / name / "meta.json").is_file():
                    image, pose = synth_rest_signer(identity)
                    meta = {"source": f"SynthSigner identity {identity}", "builtin": True}
                    self._write(name, image, pose, meta)

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/meta.json"))

    def list(self) -> list[dict[str, Any]]:
        return [{"name": n, **self._meta(n)} for n in self.names()]

    def _meta(self, name: str) -> dict[str, Any]:
        path = self.root / check_name(name) / "meta.json"
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise SignerNotFound(f"unknown signer {name!r} (known: {known})")
        return json.loads(path.read_text())

    def get(self, name: str) -> Signer:
        """The signer as stored now. Files are read only when the signer's digest changed
        since the last call: the ingress asks once per request, from worker threads."""
        meta = self._meta(name)
        cached = self._cache.get(name)
        if cached is not None and cached.meta.get("digest") == meta.get("digest"):
            return cached
        folder = self.root / name
        with Image.open(folder / "image.png") as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        # np.load parses the .npy header with ast.literal_eval; CPython 3.11.7 raised
        # "SystemError: AST constructor recursion depth mismatch" under 20 concurrent
        # requests (ast is not thread-safe there), so loads are serialised.
        with _LOAD_LOCK, np.load(folder / "pose.npz") as npz:
            pose = npz["pose"].astype(np.float32)
        model = folder / "model"
        person = Signer(
            name, image, pose, meta, model if (model / "config.json").is_file() else None
        )
        if len(self._cache) >= CACHE_SIGNERS:
            self._cache.pop(next(iter(self._cache)))
        self._cache[name] = person
        return person

    def add(self, name: str, data: bytes, estimate_pose: PoseEstimate | None) -> Signer:
        """Validate an uploaded image, find the signer's pose in it and store it."""
        check_name(name)
        if (self.root / name / "meta.json").is_file():
            raise SignerExists(f"signer {name!r} already exists; delete it first")
        image = decode_upload(data)
        if estimate_pose is None:
            raise InputError("no pose estimator is configured, so new signers cannot be added")
        pose = np.asarray(estimate_pose(image), dtype=np.float32)
        if pose.shape != (NUM_WHOLEBODY, 3):
            raise ValueError(f"pose estimator returned {pose.shape}, expected (133, 3)")
        meta = {"source": "upload", "builtin": False}
        return self._write(name, image, pose, meta)

    def add_adapted(
        self, name: str, image: np.ndarray, pose: np.ndarray, model_dir: Path, meta: dict
    ) -> Signer:
        """Register a signer with its own PGMM weights (``model_dir``: a PGMM folder), replacing
        an earlier adapted signer of that name -- re-running an adaptation updates it."""
        check_name(name)
        # Checked before anything is deleted: a bad call must not cost the existing signer.
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
            raise ValueError(f"signer image must be square RGB, got {image.shape}")
        if (self.root / name / "meta.json").is_file():
            old = self._meta(name)
            if old.get("builtin"):
                raise SignerProtected(f"signer {name!r} is built in and cannot be replaced")
            if not old.get("adapted"):
                raise SignerExists(f"signer {name!r} already exists; delete it first")
            self.delete(name)
        meta = {**meta, "adapted": True, "builtin": False}
        return self._write(name, image, np.asarray(pose, np.float32), meta, Path(model_dir))

    def delete(self, name: str) -> None:
        if self._meta(name).get("builtin"):
            raise SignerProtected(f"signer {name!r} is built in and cannot be deleted")
        shutil.rmtree(self.root / name)

    def _write(
        self,
        name: str,
        image: np.ndarray,
        pose: np.ndarray,
        meta: dict,
        model_dir: Path | None = None,
    ) -> Signer:
        files = sorted(p for p in model_dir.iterdir() if p.is_file()) if model_dir else []
        weights = [p.read_bytes() for p in files]
        meta = {**meta, "digest": _digest(image, pose, *weights), "size": int(image.shape[0])}
        tmp = self.root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        try:
            Image.fromarray(image).save(tmp / "image.png")
            np.savez(tmp / "pose.npz", pose=pose)
            if model_dir is not None:
                shutil.copytree(model_dir, tmp / "model")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            tmp.rename(self.root / name)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if (self.root / name).exists():  # a concurrent upload under the same name won
                raise SignerExists(f"signer {name!r} already exists; delete it first") from e
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        own = self.root / name / "model" if model_dir is not None else None
        return Signer(name, image, pose, meta, own)
