"""Shared storage for the service: a folder or a bucket, read and written through ``fsspec``.

A Ray cluster's replicas run on several machines, so whatever one replica writes (a signer
uploaded through it) and whatever all of them read (signers, models) must live where every node
sees it: a local folder on one host, a shared filesystem, or an object store such as
``s3://bucket/prefix`` (with ``s3fs``; credentials and a non-AWS endpoint come from the usual
``AWS_*`` environment variables). :class:`Store` is the small set of operations the service
needs, chosen so that they are atomic on every backend: a single object written whole (object
stores never show half a PUT; a local file is written aside and renamed), never a rename of a
folder (object stores have none).

Folders of files -- model weights -- travel with a manifest (:data:`MANIFEST`) of each file's
SHA-256, written after the files: a reader that finds the manifest finds every file, and a node
that copies the folder checks each file against it. Copies land in a per-node cache
(:func:`cache_dir`) under the manifest's own digest, so a folder replaced in the store is a new
cache entry, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "manifest.json"
#: Per-node cache of folders copied from a store; ``SLP_CACHE_DIR`` moves it.
DEFAULT_CACHE = Path.home() / ".cache" / "slp"


class DigestMismatch(RuntimeError):
    """A file copied from a store does not match its manifest: a corrupt or half-replaced
    copy, which must not be loaded."""


def cache_dir() -> Path:
    """This node's cache of copied folders (``$SLP_CACHE_DIR``, else ``~/.cache/slp``)."""
    return Path(os.environ.get("SLP_CACHE_DIR") or DEFAULT_CACHE)


def is_url(location: str) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: a location that is not a plain local path."""
    return "://" in location


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FolderManifest:
    """What :meth:`Store.put_folder` published: each file's SHA-256 by relative path."""

    files: dict[str, str]

    @property
    def digest(self) -> str:
        """Content key of the whole folder: changes when any file does."""
        return sha256(self.to_bytes())[:16]

    def to_bytes(self) -> bytes:
        return json.dumps({"files": self.files}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> FolderManifest:
        try:
            files = json.loads(data)["files"]
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DigestMismatch(f"{where}: unreadable {MANIFEST}") from e
        return cls(files)


class Store:
    """Keys (``/``-separated relative paths) under one fsspec location."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def url(self, key: str) -> str:
        """For messages: where ``key`` is, as the user wrote the location."""
        return f"{self.location.rstrip('/')}/{key}"

    def local_path(self, key: str) -> Path | None:
        """The key's file on this machine's disk, where the store is a local folder."""
        return Path(self.path(key)) if self.local else None

    def read(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""
        return self.fs.cat_file(self.path(key))

    def write(self, key: str, data: bytes) -> None:
        """Write one object whole: readers see the old bytes or the new, never a part."""
        path = self.path(key)
        if not self.local:  # an object PUT is atomic
            self.fs.pipe_file(path, data)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        part = f"{path}.{uuid.uuid4().hex[:8]}.part"
        try:
            Path(part).write_bytes(data)
            os.replace(part, path)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache(self.path(key).rsplit("/", 1)[0])
        return self.fs.exists(self.path(key))

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (files and sub-prefixes), as they are now: listing
        caches are dropped first, because other nodes write here too."""
        path = self.path(prefix)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

    def unlink(self, key: str) -> None:
        """Remove one object; ``FileNotFoundError`` where the backend reports it missing (a
        filesystem does, S3 does not)."""
        self.fs.rm_file(self.path(key))
        self.fs.invalidate_cache(self.path(key).rsplit("/", 1)[0])

    def remove(self, key: str) -> None:
        """Remove an object or everything under a prefix; a missing key is not an error."""
        path = self.path(key)
        try:
            if self.fs.isdir(path):
                self.fs.rm(path, recursive=True)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    # ------------------------------------------------------------------ folders
    def put_folder(self, folder: Path, key: str) -> FolderManifest:
        """Copy a local folder under ``key``, its :data:`MANIFEST` last."""
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST)
        digests = {}
        for p in files:
            data = p.read_bytes()
            rel = p.relative_to(folder).as_posix()
            self.write(f"{key}/{rel}", data)
            digests[rel] = sha256(data)
        manifest = FolderManifest(digests)
        self.write(f"{key}/{MANIFEST}", manifest.to_bytes())
        return manifest

    def manifest(self, key: str) -> FolderManifest:
        """The folder's manifest; ``FileNotFoundError`` when it was never (fully) published."""
        return FolderManifest.from_bytes(self.read(f"{key}/{MANIFEST}"), self.url(key))

    def fetch_folder(self, key: str, cache: Path) -> Path:
        """A local copy of the folder published under ``key``, every file checked against the
        manifest. A local store is read in place (after the same check); other stores are copied
        once into ``cache/<digest>-<name>/<name>`` (loaders may read the folder's name), written
        aside and renamed, so replicas of one node that fetch at once share one complete copy."""
        manifest = self.manifest(key)
        if self.local:
            for rel in manifest.files:
                self._checked(key, rel, manifest)
            return Path(self.path(key))
        name = key.rstrip("/").rsplit("/", 1)[-1]
        target = cache / f"{manifest.digest}-{name}"  # two folders may hold the same files
        if not target.is_dir():
            staging = cache / f".{target.name}.{uuid.uuid4().hex}"
            try:
                (staging / name).mkdir(parents=True)
                for rel in manifest.files:
                    dest = staging / name / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(self._checked(key, rel, manifest))
                (staging / name / MANIFEST).write_bytes(manifest.to_bytes())
                try:
                    staging.rename(target)
                except OSError:  # another replica of this node finished first
                    if not target.is_dir():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target / name

    def _checked(self, key: str, rel: str, manifest: FolderManifest) -> bytes:
        data = self.read(f"{key}/{rel}")
        if sha256(data) != manifest.files[rel]:
            raise DigestMismatch(
                f"{self.url(f'{key}/{rel}')}: SHA-256 {sha256(data)[:12]}... does not match its "
                f"{MANIFEST} ({manifest.files[rel][:12]}...); the shared copy is corrupt or was "
                "replaced while being read -- publish it again"
            )
        return data
