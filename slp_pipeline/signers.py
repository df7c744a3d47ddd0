"""The signer registry: the people a video can be rendered with, persisted in one folder.

A signer is one source image plus its whole-body reference pose -- all PGMM needs to animate
someone, and all retargeting needs to fit text2pose's canonical poses to that person's body.
Each signer is a sub-folder ``<root>/<name>/`` holding ``image.png`` (square RGB), ``pose.npz``
(``(133, 3)`` normalised COCO-WholeBody points, confidence 0 where unknown) and ``meta.json``;
an *adapted* signer (``slp signers adapt``) also has ``model/``, a PGMM fine-tuned on a clip of
that person, which the renderer of the same variant uses instead of its own weights.
Folders are written under a temporary name (``.NAME.xxxxxxxx.tmp``) and renamed into place, so
a crash never leaves a half-written signer that a renderer replica could pick up; only folders
whose name is a valid signer name are listed, so leftovers never are. A deleted signer is renamed
to ``.NAME@DIGEST.xxxxxxxx.deleted`` rather than removed: a render in flight asks for the signer
by its content key (``name@digest``) and still finds it there, on any replica. Both kinds of
hidden folder are removed once older than :data:`STALE_AFTER_S`, whenever the registry is opened
by a process that starts (``slp serve``, ``slp signers``) or a signer is deleted.

Uploads are untrusted: they are size-capped before decoding, decoded with Pillow inside a
try/except (a corrupt or hostile file becomes an :class:`UploadError`, never a server error),
limited to PNG/JPEG, and centre-cropped to a square because PGMM renders square frames.

Two built-in signers are seeded from SynthSigner's held-out identities 10 and 11 -- identities
no renderer trains on -- so a fresh install can render out of the box and the defaults do not
flatter the model.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.motion import sentence_pose, sentence_rng
from pgmm.data.synth.render import render_frame
from pgmm.pose.layout import NUM_WHOLEBODY

#: Always used with ``fullmatch``: ``$`` with ``match`` also matched before a final newline.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{16}")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_MEDIA_TYPES = ("image/png", "image/jpeg")
MIN_IMAGE_SIDE = 64
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs long before they fill memory
STORED_SIZE = 256  # every signer is stored at this square size; renderers resize from it
ALLOWED_FORMATS = ("PNG", "JPEG")
#: Transparent pixels are composited on white: the colour stored under them is arbitrary.
ALPHA_BACKGROUND = (255, 255, 255)
TMP_SUFFIX = ".tmp"
DELETED_SUFFIX = ".deleted"
#: Age after which temporary and deleted signer folders are removed. Longer than any render (a
#: render in flight may still load a deleted signer) and than any write (a younger temporary
#: folder may belong to a write under way in another process).
STALE_AFTER_S = 30 * 60
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


class SignerLimit(InputError):
    status = 409


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


def shown(value: object, limit: int = 40) -> str:
    """A caller's string for an error message: quoted, and cut short (names can be megabytes)."""
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def check_name(name: str) -> str:
    """The one signer-name check, shared by the HTTP API, the CLI and the registry."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InputError(
            f"invalid signer name {shown(name)}: use 1-32 lowercase letters, digits, '-' or '_' "
            "starting with a letter or digit"
        )
    return name


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PNG/JPEG mode as 8-bit RGB. Pillow's ``convert("RGB")`` clips 16/32-bit greyscale at
    255 (a 16-bit photo turns white) and drops alpha, leaving whatever colour the transparent
    pixels happen to store."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("PA", "LA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


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
                raise UnsupportedMediaType(
                    f"image format {fmt or 'unknown'} is not supported; send PNG or JPEG"
                )
            if width * height > MAX_IMAGE_PIXELS:
                raise UploadError(f"image of {width}x{height} pixels is too large")
            probe.verify()  # checks the whole file without keeping pixels
        with Image.open(io.BytesIO(data)) as img:
            img = _to_rgb(ImageOps.exif_transpose(img))
    except InputError:
        raise
    except Exception as e:  # Pillow raises many types on hostile input; all mean "bad image"
        # Only the type: Pillow's messages can hold object reprs with memory addresses.
        raise UploadError(f"not a readable PNG/JPEG image ({type(e).__name__})") from e
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
    """Signers on disk: list, get, add, delete. Safe to share between processes.

    ``seed_builtins``: this process is starting (the service or a CLI command), so it also writes
    any missing built-in signer and removes stale temporary/deleted folders; replicas pass False.
    ``max_signers`` bounds how many signers (built-ins included) may exist; ``None``: no bound.
    """

    def __init__(
        self, root: str | Path, seed_builtins: bool = True, max_signers: int | None = None
    ) -> None:
        self.root = Path(root)
        self.max_signers = max_signers
        self._cache: dict[str, Signer] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        if seed_builtins:
            self.remove_stale()
            for name, identity in BUILTIN_SIGNERS.items():
                if not (self.root / name / "meta.json").is_file():
                    image, pose = synth_rest_signer(identity)
                    meta = {"source": f"SynthSigner identity {identity}", "builtin": True}
                    self._write(name, image, pose, meta)

    def names(self) -> list[str]:
        """Registered signers; hidden folders (writes under way, deleted signers) never count."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if NAME_PATTERN.fullmatch(p.name) and (p / "meta.json").is_file()
        )

    def list(self) -> list[dict[str, Any]]:
        return [{"name": n, **self._meta(n)} for n in self.names()]

    def _meta(self, name: str) -> dict[str, Any]:
        path = self.root / check_name(name) / "meta.json"
        if not path.is_file():
            # The other names are not listed: whoever may list them asks GET /v1/signers.
            raise SignerNotFound(f"unknown signer {name!r}")
        return json.loads(path.read_text())

    def get(self, name: str) -> Signer:
        """The signer as stored now. Files are read only when the signer's digest changed
        since the last call: the ingress asks once per request, from worker threads."""
        meta = self._meta(name)
        cached = self._cache.get(name)
        if cached is not None and cached.meta.get("digest") == meta.get("digest"):
            return cached
        person = self._load(self.root / name, name, meta)
        if len(self._cache) >= CACHE_SIGNERS:
            self._cache.pop(next(iter(self._cache)))
        self._cache[name] = person
        return person

    def get_version(self, key: str) -> Signer:
        """The signer with content key ``name@digest`` (:attr:`Signer.key`), also after it was
        deleted or replaced (for :data:`STALE_AFTER_S`): what a render in flight asks for."""
        name, _, digest = key.partition("@")
        check_name(name)
        if not DIGEST_PATTERN.fullmatch(digest):
            raise InputError(f"invalid signer key {shown(key)}")
        with suppress(SignerNotFound):
            person = self.get(name)
            if person.key == key:
                return person
        for folder in self.root.glob(f".{name}@{digest}.*{DELETED_SUFFIX}"):
            meta = json.loads((folder / "meta.json").read_text())
            return self._load(folder, name, meta)
        raise SignerNotFound(f"signer {name!r} was changed or deleted before this request")

    @staticmethod
    def _load(folder: Path, name: str, meta: dict[str, Any]) -> Signer:
        with Image.open(folder / "image.png") as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        # np.load parses the .npy header with ast.literal_eval; CPython 3.11.7 raised
        # "SystemError: AST constructor recursion depth mismatch" under 20 concurrent
        # requests (ast is not thread-safe there), so loads are serialised.
        with _LOAD_LOCK, np.load(folder / "pose.npz") as npz:
            pose = npz["pose"].astype(np.float32)
        model = folder / "model"
        return Signer(name, image, pose, meta, model if (model / "config.json").is_file() else None)

    def add(self, name: str, data: bytes, estimate_pose: PoseEstimate | None) -> Signer:
        """Validate an uploaded image, find the signer's pose in it and store it."""
        check_name(name)
        if (self.root / name / "meta.json").is_file():
            raise SignerExists(f"signer {name!r} already exists; delete it first")
        self._check_room()  # before the costly pose estimate; checked again under the lock
        image = decode_upload(data)
        if estimate_pose is None:
            raise InputError("no pose estimator is configured, so new signers cannot be added")
        pose = np.asarray(estimate_pose(image), dtype=np.float32)
        if pose.shape != (NUM_WHOLEBODY, 3):
            raise ValueError(f"pose estimator returned {pose.shape}, expected (133, 3)")
        meta = {"source": "upload", "builtin": False}
        with self._locked():
            self._check_room()
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
        meta = {**meta, "adapted": True, "builtin": False}
        with self._locked():
            if (self.root / name / "meta.json").is_file():
                old = self._meta(name)
                if old.get("builtin"):
                    raise SignerProtected(f"signer {name!r} is built in and cannot be replaced")
                if not old.get("adapted"):
                    raise SignerExists(f"signer {name!r} already exists; delete it first")
                self._retire(name, old)
            else:
                self._check_room()
            return self._write(name, image, np.asarray(pose, np.float32), meta, Path(model_dir))

    def delete(self, name: str) -> None:
        """Unlist the signer at once; its files stay for renders in flight (see the module)."""
        meta = self._meta(name)
        if meta.get("builtin"):
            raise SignerProtected(f"signer {name!r} is built in and cannot be deleted")
        self._retire(name, meta)
        self.remove_stale()

    def _retire(self, name: str, meta: dict[str, Any]) -> None:
        retired = self.root / f".{name}@{meta.get('digest', '')}.{uuid.uuid4().hex[:8]}"
        retired = retired.with_name(retired.name + DELETED_SUFFIX)
        try:
            (self.root / name).rename(retired)
        except FileNotFoundError:  # deleted by a concurrent request
            raise SignerNotFound(f"unknown signer {name!r}") from None
        os.utime(retired)  # a rename keeps the old mtime; the grace period starts now

    def remove_stale(self, max_age_s: float = STALE_AFTER_S) -> None:
        """Remove temporary and deleted signer folders older than ``max_age_s``."""
        cutoff = time.time() - max_age_s
        for folder in self.root.iterdir():
            name = folder.name
            if not (name.startswith(".") and name.endswith((TMP_SUFFIX, DELETED_SUFFIX))):
                continue
            with suppress(OSError):  # removed meanwhile by another process
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)

    def _check_room(self) -> None:
        if self.max_signers is not None and len(self.names()) >= self.max_signers:
            raise SignerLimit(
                f"the registry holds {self.max_signers} signers, its configured maximum "
                "(max_signers); delete one first"
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise count-then-write across processes (several ingress replicas, the CLI) with
        an advisory lock on the registry folder itself."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

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
        tmp = self.root / f".{name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
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
