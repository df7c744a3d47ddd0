"""The shared store against a real S3 API (moto's server on 127.0.0.1, through s3fs): the
signer registry's upload, list, render-side load, delete and adapted weights, a crash between
an upload's two writes, and folders copied to a node's cache checked by digest."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from s3_server import moto_s3
from standins import TINY_PGMM, tiny_pipeline

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from slp_pipeline.signers import STALE_AFTER_S, SignerExists, SignerNotFound, SignerRegistry
from slp_pipeline.store import MANIFEST, DigestMismatch, Store

REPO = Path(__file__).resolve().parents[1]


def _pose(image: np.ndarray) -> np.ndarray:
    return np.full((133, 3), 0.5, np.float32)


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def url(bucket: str) -> str:
    """A fresh prefix per test: tests never see each other's signers."""
    return f"{bucket}/{uuid.uuid4().hex[:8]}"


def test_store_objects_and_listing(url: str) -> None:
    store = Store(url)
    assert store.children("a") == [] and not store.exists("a/b.txt")
    store.write("a/b.txt", b"one")
    store.write("a/b.txt", b"two")  # replaced whole
    store.write("a/c/d.txt", b"x")
    assert store.children("a") == ["b.txt", "c"] and store.read("a/b.txt") == b"two"
    store.remove("a/c")
    store.remove("a/missing")  # not an error
    assert store.children("a") == ["b.txt"]
    with pytest.raises(FileNotFoundError):
        store.read("a/c/d.txt")


def test_upload_list_render_side_load_and_delete(url: str, tmp_path: Path) -> None:
    """An upload through one registry (the ingress of one node) is seen by another that shares
    nothing with it but the bucket (a Renderer replica on another node)."""
    ingress = SignerRegistry(url, cache=tmp_path / "a")
    renderer = SignerRegistry(url, seed_builtins=False, cache=tmp_path / "b")
    assert renderer.names() == ["default", "synth-11"]
    person = ingress.add("ann", _png((200, 30, 30)), _pose)
    assert renderer.names() == ["ann", "default", "synth-11"]
    seen = renderer.get_version(person.key)
    assert np.array_equal(seen.image, person.image) and np.array_equal(seen.pose, person.pose)
    assert [r["name"] for r in renderer.list()][0] == "ann"
    with pytest.raises(SignerExists):
        renderer.add("ann", _png((1, 2, 3)), _pose)

    ingress.delete("ann")
    assert "ann" not in renderer.names()
    with pytest.raises(SignerNotFound):
        renderer.get("ann")
    assert renderer.get_version(person.key).key == person.key  # a render in flight finishes
    again = ingress.add("ann", _png((20, 30, 200)), _pose)  # the name is free at once
    assert renderer.get("ann").key == again.key != person.key


def test_adapted_weights_go_through_the_store(url: str, tmp_path: Path) -> None:
    """The signer's own PGMM is copied into the render side's cache, checked by digest, loads,
    and a re-adaptation is a new cache entry."""
    model = tmp_path / "model"
    PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM)).save_pretrained(model)
    ingress = SignerRegistry(url, cache=tmp_path / "a")
    renderer = SignerRegistry(url, seed_builtins=False, cache=tmp_path / "b")
    base = ingress.get("default")
    person = ingress.add_adapted("real", base.image, base.pose, model, {})
    own = renderer.get_version(person.key).model_dir
    assert own is not None and own.is_relative_to(tmp_path / "b")
    for f in ("config.json", "model.safetensors"):
        assert (own / f).read_bytes() == (model / f).read_bytes()
    PGMM.from_pretrained(own)

    PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM)).save_pretrained(model)
    newer = ingress.add_adapted("real", base.image, base.pose, model, {})
    assert newer.key != person.key
    assert renderer.get("real").model_dir != own
    assert renderer.get_version(person.key).model_dir == own  # the old version, still cached


def test_a_crash_between_the_two_writes_leaves_nothing_visible(url: str, tmp_path: Path) -> None:
    """A process killed after writing a signer's files and before publishing its manifest (a
    real exit, so no clean-up runs): nobody sees the signer, its name stays free, and the
    files go once stale."""
    ingress = SignerRegistry(url, cache=tmp_path)
    crash = textwrap.dedent(f"""
        import os
        import numpy
        from slp_pipeline import store
        from slp_pipeline.signers import SignerRegistry
        write = store.Store.write
        def dying_write(self, key, data):
            if key.startswith("published/"):
                os._exit(3)
            write(self, key, data)
        store.Store.write = dying_write
        registry = SignerRegistry({url!r}, seed_builtins=False)
        registry.add("bob", {_png((9, 9, 9))!r}, lambda image: numpy.full((133, 3), 0.5, "f4"))
    """)
    done = subprocess.run([sys.executable, "-c", crash], cwd=REPO, capture_output=True, timeout=120)
    assert done.returncode == 3, done.stderr.decode()[-2000:]
    store = Store(url)
    assert [k for k in store.children("files") if k.startswith("bob@")]  # its files were written
    assert ingress.names() == ["default", "synth-11"]
    with pytest.raises(SignerNotFound):
        ingress.get("bob")
    ingress.add("bob", _png((10, 10, 10)), _pose)

    later = time.time() + STALE_AFTER_S + 60
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", lambda: later)
        ingress.remove_stale()
    [kept] = [k for k in store.children("files") if k.startswith("bob@")]
    assert ingress._manifest("bob").files == f"files/{kept}"
    assert ingress.get("bob").image[0, 0, 0] == 10


def test_folders_are_cached_per_node_and_checked_by_digest(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"\0" * 1000)
    store = Store(url)
    manifest = store.put_folder(folder, "models/m")
    copy = store.fetch_folder("models/m", tmp_path / "cache")
    assert copy == tmp_path / "cache" / f"{manifest.digest}-m" / "m"  # loaders read the name
    assert (copy / "sub" / "w.bin").read_bytes() == b"\0" * 1000 and (copy / MANIFEST).is_file()
    assert store.fetch_folder("models/m", tmp_path / "cache") == copy  # cached: no new copy

    store.write("models/m/sub/w.bin", b"\1" * 1000)  # replaced behind the manifest's back
    with pytest.raises(DigestMismatch, match=r"sub/w.bin: SHA-256 .* does not match"):
        store.fetch_folder("models/m", tmp_path / "other-node")
    assert not any((tmp_path / "other-node").iterdir())  # nothing half-copied stays
    with pytest.raises(FileNotFoundError):
        store.fetch_folder("models/never-published", tmp_path / "cache")


def test_models_from_models_uri(url: str, tmp_path: Path) -> None:
    """models_uri: relative model paths are keys there, checked before deploying, copied into
    each node's cache by localized() and verified; a corrupt copy is one clear error."""
    serve_config = yaml.safe_load((REPO / "configs/serve/cpu.yaml").read_text())
    local = tiny_pipeline(tmp_path / "src", serve_config)
    store = Store(url)
    rel = {}
    for what, path in [("pgmm/full", local.renderers["full"]), ("pe", local.pose_estimator)]:
        store.put_folder(Path(path), f"models/{what}")
        rel[what] = f"models/{what}"
    config = dataclasses.replace(
        local,
        models_uri=url,
        renderers={"full": rel["pgmm/full"], "skeleton": "skeleton"},
        pose_estimator=rel["pe"],
    ).resolved(tmp_path)
    assert config.renderers["full"] == "models/pgmm/full"  # a key under models_uri, kept
    config.check_models()
    node = config.localized(tmp_path / "node")
    assert node.models_uri is None and node.renderers["skeleton"] == "skeleton"
    assert Path(node.renderers["full"]).is_relative_to(tmp_path / "node")
    PGMM.from_pretrained(node.renderers["full"])
    assert Path(node.pose_estimator).name == "pe"

    missing = dataclasses.replace(config, pose_estimator="models/nothing-here")
    with pytest.raises(
        FileNotFoundError, match=r"pose estimator: models/nothing-here \(models_uri"
    ):
        missing.check_models()
    store.write("models/pe/config.json", b"{}")  # the shared copy changed behind its manifest
    with pytest.raises(DigestMismatch, match="models/pe/config.json: SHA-256"):
        config.localized(tmp_path / "other-node")
