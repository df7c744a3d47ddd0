"""The signer registry: the people a video can be rendered with, persisted in one folder.

A signer is one source image plus its whole-body reference pose -- all PGMM needs to animate
someone, and all retargeting needs to fit text2pose's canonical poses to that person's body.
An *adapted* signer (``slp signers adapt``) also has ``model/``, a PGMM fine-tuned on a clip of
that person, which the renderer of the same variant uses instead of its own weights.

The registry lives in a :class:`~slp_pipeline.store.Store` -- a local folder (the default,
``data/signers``) or any fsspec URL (``s3://bucket/signers``), which is what lets every replica
of a Ray cluster see a signer uploaded through any node. Its layout::

    files/NAME@DIGEST.CREATED.XXXXXXXX/   image.png (square RGB), pose.npz ((133, 3) normalised
                                          COCO-WholeBody points), model/ (adapted signers)
    published/NAME.json                   the manifest: meta + which files/ key holds the signer
    retired/NAME@DIGEST.XXXXXXXX.json     the manifest of a deleted or replaced version

A signer's files are written under a key of their own first and its manifest is published
last, in one whole-object write; only published manifests are listed, so no reader ever sees
half a signer, and a crash between the two writes leaves only unreferenced files. Deleting
writes the retired manifest and then removes the published one, before any file: a render in
flight asks for the signer by its content key (``name@digest``) and still finds it, on any
replica. Retired versions and unreferenced files are removed once older than
:data:`STALE_AFTER_S`, whenever the registry is opened by a process that starts (``slp serve``,
``slp signers``) or a signer is deleted. Replicas cache decoded signers (and copies of adapted
weights, see :func:`~slp_pipeline.store.cache_dir`) by digest, so a re-uploaded name is never
served stale.

Uploads are untrusted: they are size-capped before decoding, decoded with Pillow inside a
try/except (a corrupt or hostile file becomes an :class:`UploadError`, never a server error),
limited to PNG/JPEG, and centre-cropped to a square because PGMM renders square frames.

Two built-in signers are seeded from SynthSigner's held-out identities 10 and 11 -- identities
no renderer trains on -- so a fresh install can render out of the box and the defaults do not
flatter the model.
"""

from __future__ import annotations

import dataclasses
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
from pgmm.data.synth.lexicon import keyed_rng
from pgmm.data.synth.motion import sentence_pose
from pgmm.data.synth.render import render_frame
from pgmm.pose.layout import NUM_WHOLEBODY
from slp_pipeline.store import Store, cache_dir

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
#: The store's three prefixes (see the module docstring).
FILES, PUBLISHED, RETIRED = "files", "published", "retired"
#: Hidden folders of the layout before the store, removed when a registry is opened to start.
TMP_SUFFIX = ".tmp"
DELETED_SUFFIX = ".deleted"
#: Age after which retired versions and unreferenced files are removed. Longer than any render
#: (a render in flight may still load a deleted signer) and than any write (younger files may
#: belong to a write under way in another process).
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


@dataclass(frozen=True)
class Manifest:
    """A published (or retired) signer: its meta and the ``files/`` key holding its files."""

    meta: dict[str, Any]
    files: str
    retired_at: float = 0.0  # when it was deleted or replaced; 0 while published

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        return cls(dict(raw["meta"]), str(raw["files"]), float(raw.get("retired_at", 0.0)))


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
    pose = sentence_pose([], 1, identity, keyed_rng(0, f"signer/{identity_id}"))
    image = render_frame(pose.keypoints[0], pose.depth[0], identity, size, 4)
    points = np.concatenate([pose.keypoints[0], pose.confidence[0][:, None]], -1)
    return np.asarray(image, np.uint8), points.astype(np.float32)


class SignerRegistry:
    """Signers in a :class:`~slp_pipeline.store.Store`: list, get, add, delete. Safe to share
    between processes and, with a shared location, between the nodes of a cluster.

    ``root``: a local folder or any fsspec URL (``s3://bucket/signers``).
    ``seed_builtins``: this process is starting (the service or a CLI command), so it also writes
    any missing built-in signer, imports signers of the old one-folder-per-signer layout and
    removes stale files; replicas pass False.
    ``max_signers`` bounds how many signers (built-ins included) may exist; ``None``: no bound.
    ``cache``: where this node keeps copies of adapted signers' weights from a remote store.
    """

    def __init__(
        self,
        root: str | Path,
        seed_builtins: bool = True,
        max_signers: int | None = None,
        cache: Path | None = None,
    ) -> None:
        self.store = Store(root)
        self.max_signers = max_signers
        self.model_cache = (cache or cache_dir()) / "signers"
        self._cache: dict[str, Signer] = {}
        self._thread_lock = threading.Lock()
        if seed_builtins:
            self._import_folders()
            self.remove_stale()
            for name, identity in BUILTIN_SIGNERS.items():
                if not self.store.exists(f"{PUBLISHED}/{name}.json"):
                    image, pose = synth_rest_signer(identity)
                    meta = {"source": f"SynthSigner identity {identity}", "builtin": True}
                    self._write(name, image, pose, meta)

    def names(self) -> list[str]:
        """Registered signers: published manifests only, never files of a write under way."""
        return sorted(
            key.removesuffix(".json")
            for key in self.store.children(PUBLISHED)
            if key.endswith(".json") and NAME_PATTERN.fullmatch(key.removesuffix(".json"))
        )

    def list(self) -> list[dict[str, Any]]:
        return [{"name": n, **self._manifest(n).meta} for n in self.names()]

    def _manifest(self, name: str) -> Manifest:
        try:
            data = self.store.read(f"{PUBLISHED}/{check_name(name)}.json")
        except FileNotFoundError:
            # The other names are not listed: whoever may list them asks GET /v1/signers.
            raise SignerNotFound(f"unknown signer {name!r}") from None
        return Manifest.from_json(data)

    def get(self, name: str) -> Signer:
        """The signer as published now. Its files are read only when its digest changed since
        the last call: the ingress asks once per request, from worker threads."""
        manifest = self._manifest(name)
        cached = self._cache.get(name)
        if cached is not None and cached.meta.get("digest") == manifest.meta.get("digest"):
            return cached
        person = self._load(name, manifest)
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
        for retired in self.store.children(RETIRED):
            if retired.startswith(f"{key}."):
                with suppress(FileNotFoundError):  # purged meanwhile
                    return self._load(
                        name, Manifest.from_json(self.store.read(f"{RETIRED}/{retired}"))
                    )
        raise SignerNotFound(f"signer {name!r} was changed or deleted before this request")

    def _load(self, name: str, manifest: Manifest) -> Signer:
        try:
            image_png = self.store.read(f"{manifest.files}/image.png")
            pose_npz = self.store.read(f"{manifest.files}/pose.npz")
        except FileNotFoundError:  # purged after its grace period
            raise SignerNotFound(f"signer {name!r} was deleted before this request") from None
        with Image.open(io.BytesIO(image_png)) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        # np.load parses the .npy header with ast.literal_eval; CPython 3.11.7 raised
        # "SystemError: AST constructor recursion depth mismatch" under 20 concurrent
        # requests (ast is not thread-safe there), so loads are serialised.
        with _LOAD_LOCK, np.load(io.BytesIO(pose_npz)) as npz:
            pose = npz["pose"].astype(np.float32)
        model = None
        if manifest.meta.get("adapted"):
            model = self.store.fetch_folder(f"{manifest.files}/model", self.model_cache)
        return Signer(name, image, pose, manifest.meta, model)

    def add(self, name: str, data: bytes, estimate_pose: PoseEstimate | None) -> Signer:
        """Validate an uploaded image, find the signer's pose in it and store it."""
        self._check_new(check_name(name))  # before the costly pose estimate; again under the lock
        image = decode_upload(data)
        if estimate_pose is None:
            raise InputError("no pose estimator is configured, so new signers cannot be added")
        pose = np.asarray(estimate_pose(image), dtype=np.float32)
        if pose.shape != (NUM_WHOLEBODY, 3):
            raise ValueError(f"pose estimator returned {pose.shape}, expected (133, 3)")
        meta = {"source": "upload", "builtin": False}
        with self._locked():
            self._check_new(name)
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
            try:
                old = self._manifest(name)
            except SignerNotFound:
                self._check_new(name)
            else:
                if old.meta.get("builtin"):
                    raise SignerProtected(f"signer {name!r} is built in and cannot be replaced")
                if not old.meta.get("adapted"):
                    raise SignerExists(f"signer {name!r} already exists; delete it first")
                self._retire(name, old)
            return self._write(name, image, np.asarray(pose, np.float32), meta, Path(model_dir))

    def delete(self, name: str) -> None:
        """Unlist the signer at once; its files stay for renders in flight (see the module)."""
        manifest = self._manifest(name)
        if manifest.meta.get("builtin"):
            raise SignerProtected(f"signer {name!r} is built in and cannot be deleted")
        self._retire(name, manifest)
        self.remove_stale()

    def _retire(self, name: str, manifest: Manifest) -> None:
        """Keep the version findable by its key, then unpublish it: the manifest goes before
        any of its files."""
        digest = manifest.meta.get("digest", "")
        retired = dataclasses.replace(manifest, retired_at=time.time())
        key = f"{RETIRED}/{name}@{digest}.{uuid.uuid4().hex[:8]}.json"
        self.store.write(key, retired.to_json())
        try:
            self.store.unlink(f"{PUBLISHED}/{name}.json")
        except FileNotFoundError:  # deleted by a concurrent request
            self.store.remove(key)
            raise SignerNotFound(f"unknown signer {name!r}") from None

    def remove_stale(self, max_age_s: float = STALE_AFTER_S) -> None:
        """Forget deleted versions older than ``max_age_s`` and remove files no manifest refers
        to once they are that old (a younger one may belong to a write under way)."""
        cutoff = time.time() - max_age_s
        referenced = set()
        try:
            # Published before retired: a delete writes the retired manifest before it unlinks
            # the published one, so a signer deleted meanwhile is seen in one of the two.
            for name in self.names():
                referenced.add(self._manifest(name).files)
            for key in self.store.children(RETIRED):
                manifest = Manifest.from_json(self.store.read(f"{RETIRED}/{key}"))
                if manifest.retired_at < cutoff:
                    self.store.remove(f"{RETIRED}/{key}")
                else:
                    referenced.add(manifest.files)
        except (FileNotFoundError, SignerNotFound):  # changed under us: sweep another time
            return
        for key in self.store.children(FILES):
            created = key.rsplit(".", 2)[-2] if key.count(".") >= 2 else ""
            stale = created.isdigit() and int(created) < cutoff
            if f"{FILES}/{key}" not in referenced and stale:
                self.store.remove(f"{FILES}/{key}")

    def _check_new(self, name: str) -> None:
        """A signer may be added as ``name``: the name is free and the registry has room."""
        if self.store.exists(f"{PUBLISHED}/{name}.json"):
            raise SignerExists(f"signer {name!r} already exists; delete it first")
        if self.max_signers is not None and len(self.names()) >= self.max_signers:
            raise SignerLimit(
                f"the registry holds {self.max_signers} signers, its configured maximum "
                "(max_signers); delete one first"
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise check-then-write: across processes with an advisory lock on a local
        registry folder (several ingress replicas, the CLI); object stores have no lock, so
        there it holds within this process only (docs/cluster.md)."""
        folder = self.store.local_path("")
        with self._thread_lock:
            if folder is None:
                yield
                return
            fd = os.open(folder, os.O_RDONLY)
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
        """Write the signer's files under a key of their own, then publish its manifest: until
        that last write nobody sees the signer, and a crash leaves files that
        :meth:`remove_stale` removes later."""
        files = sorted(p for p in model_dir.iterdir() if p.is_file()) if model_dir else []
        weights = [p.read_bytes() for p in files]
        meta = {**meta, "digest": _digest(image, pose, *weights), "size": int(image.shape[0])}
        prefix = f"{FILES}/{name}@{meta['digest']}.{int(time.time())}.{uuid.uuid4().hex[:8]}"
        png, npz = io.BytesIO(), io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        np.savez(npz, pose=pose)
        try:
            self.store.write(f"{prefix}/image.png", png.getvalue())
            self.store.write(f"{prefix}/pose.npz", npz.getvalue())
            if model_dir is not None:
                self.store.put_folder(model_dir, f"{prefix}/model")
            manifest = Manifest(meta, prefix)
            self.store.write(f"{PUBLISHED}/{name}.json", manifest.to_json())
        except BaseException:
            with suppress(Exception):
                self.store.remove(prefix)
            raise
        own = self.store.fetch_folder(f"{prefix}/model", self.model_cache) if model_dir else None
        return Signer(name, image, pose, meta, own)

    def _import_folders(self) -> None:
        """Signers of the layout before the store (``ROOT/NAME/meta.json``, a local folder
        each) are published in the store's layout, so an upgrade keeps uploaded signers."""
        folder = self.store.local_path("")
        if folder is None:
            return
        for old in sorted(folder.iterdir()):
            hidden = old.name.startswith(".") and old.name.endswith((TMP_SUFFIX, DELETED_SUFFIX))
            signer = NAME_PATTERN.fullmatch(old.name) and (old / "meta.json").is_file()
            if not old.is_dir() or not (hidden or signer):
                continue
            if signer:
                meta = json.loads((old / "meta.json").read_text())
                with Image.open(old / "image.png") as img:
                    image = np.asarray(img.convert("RGB"), dtype=np.uint8)
                with np.load(old / "pose.npz") as npz:
                    pose = npz["pose"].astype(np.float32)
                model = old / "model"
                if not self.store.exists(f"{PUBLISHED}/{old.name}.json"):
                    self._write(old.name, image, pose, meta, model if model.is_dir() else None)
            shutil.rmtree(old)  # also the old layout's hidden temporary and deleted folders
