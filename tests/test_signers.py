"""The signer registry without Ray: names, listing, uploads' decoding, limits, deletion."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slp_pipeline.signers import (
    MAX_UPLOAD_BYTES,
    STALE_AFTER_S,
    InputError,
    SignerLimit,
    SignerNotFound,
    SignerRegistry,
    UploadError,
    UploadTooLarge,
    check_name,
    decode_upload,
)


def _pose(image: np.ndarray) -> np.ndarray:
    """A stand-in pose estimator: a fixed pose, whatever the image."""
    return np.full((133, 3), 0.5, np.float32)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


PHOTO = _png(Image.new("RGB", (96, 80), (180, 140, 120)))


@pytest.fixture
def registry(tmp_path: Path) -> SignerRegistry:
    return SignerRegistry(tmp_path / "signers")


@pytest.mark.parametrize(
    "name", ["default\n", "a\n", "ok\r", " ok", "Ok", "-a", "a" * 33, "", "a/b", "../x", "é"]
)
def test_names_must_match_in_full(name: str) -> None:
    """``$`` matched before a final newline, so ``default\\n`` was a second "default"."""
    with pytest.raises(InputError, match="invalid signer name"):
        check_name(name)


def test_long_names_are_not_echoed_in_full() -> None:
    with pytest.raises(InputError) as err:
        check_name("x" * 10_000)
    assert len(str(err.value)) < 200


def test_upload_with_a_trailing_newline_is_refused(registry: SignerRegistry) -> None:
    with pytest.raises(InputError, match="invalid signer name"):
        registry.add("default\n", PHOTO, _pose)
    assert registry.names() == ["default", "synth-11"]


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the registry's clock forward (the store's timestamps are taken from it)."""
    now = time.time() + seconds
    monkeypatch.setattr(time, "time", lambda: now)


def test_unpublished_files_are_never_listed_and_stale_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between writing a signer's files and publishing its manifest leaves files that
    no manifest names: never listed, removed once older than any write could be."""
    root = tmp_path / "signers"
    registry = SignerRegistry(root)
    registry.add("ann", PHOTO, _pose)
    crashed = root / "files" / f"bob@0123456789abcdef.{int(time.time())}.1234abcd"
    crashed.mkdir()
    (crashed / "image.png").write_bytes(PHOTO)
    assert registry.names() == ["ann", "default", "synth-11"]
    assert [s["name"] for s in registry.list()] == ["ann", "default", "synth-11"]
    with pytest.raises(SignerNotFound):
        registry.get("bob")

    SignerRegistry(root)  # a start: a fresh leftover may be a live write and stays
    assert crashed.exists()
    _later(monkeypatch, STALE_AFTER_S + 60)
    SignerRegistry(root)  # later it goes; published signers keep their files
    assert not crashed.exists()
    assert registry.get("ann").image.shape == (256, 256, 3)


def test_signers_of_the_old_folder_layout_are_imported(tmp_path: Path) -> None:
    """Before the store, each signer was a folder ROOT/NAME/ with meta.json: an upgrade keeps
    them (and drops the old layout's hidden temporary folders)."""
    root = tmp_path / "signers"
    old = root / "ann"
    old.mkdir(parents=True)
    Image.new("RGB", (256, 256), (10, 20, 30)).save(old / "image.png")
    np.savez(old / "pose.npz", pose=_pose(np.zeros(1)))
    (old / "meta.json").write_text('{"source": "upload", "builtin": false, "digest": "x"}')
    (root / ".bob.1234abcd.tmp").mkdir()
    registry = SignerRegistry(root)
    assert registry.names() == ["ann", "default", "synth-11"]
    person = registry.get("ann")
    assert tuple(person.image[0, 0]) == (10, 20, 30) and person.meta["digest"] != "x"
    assert not old.exists() and not (root / ".bob.1234abcd.tmp").exists()


def test_unknown_signer_does_not_list_the_others(registry: SignerRegistry) -> None:
    registry.add("secret-client", PHOTO, _pose)
    with pytest.raises(SignerNotFound) as err:
        registry.get("nobody")
    assert "unknown signer 'nobody'" in str(err.value)
    assert "secret-client" not in str(err.value) and "default" not in str(err.value)


def test_signer_count_is_bounded(tmp_path: Path) -> None:
    registry = SignerRegistry(tmp_path / "signers", max_signers=3)  # two built-ins + one
    registry.add("one", PHOTO, _pose)
    with pytest.raises(SignerLimit, match="3 signers"):
        registry.add("two", PHOTO, _pose)
    registry.delete("one")
    registry.add("two", PHOTO, _pose)


def test_a_deleted_signer_stays_renderable_by_its_key(registry: SignerRegistry) -> None:
    """A render in flight holds the signer's key (name@digest): a replica that loads it after a
    delete (or after a re-upload under the same name) still gets the content it started with."""
    person = registry.add("eve", PHOTO, _pose)
    registry.delete("eve")
    assert "eve" not in registry.names()
    with pytest.raises(SignerNotFound):
        registry.get("eve")
    again = registry.get_version(person.key)
    assert again.key == person.key and np.array_equal(again.image, person.image)

    other = _png(Image.new("RGB", (96, 80), (20, 40, 200)))
    new = registry.add("eve", other, _pose)  # the name is free again at once
    assert new.key != person.key
    assert registry.get_version(person.key).key == person.key
    assert registry.get_version(new.key).key == new.key


def test_unknown_versions_and_bad_keys_are_refused(registry: SignerRegistry) -> None:
    person = registry.get("default")
    with pytest.raises(SignerNotFound):
        registry.get_version("default@0123456789abcdef")
    for key in ("default@*", "default@../x", "../x@0123456789abcdef"):
        with pytest.raises(InputError):
            registry.get_version(key)
    assert registry.get_version(person.key).key == person.key


def test_deleted_signers_are_purged_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "signers"
    registry = SignerRegistry(root)
    person = registry.add("eve", PHOTO, _pose)
    registry.delete("eve")
    assert registry.get_version(person.key).key == person.key
    _later(monkeypatch, STALE_AFTER_S + 60)
    SignerRegistry(root)
    assert not any(p.name.startswith("eve@") for p in (root / "files").iterdir())
    assert not any((root / "retired").iterdir())
    with pytest.raises(SignerNotFound):
        registry.get_version(person.key)


# ------------------------------------------------------------------ decoding
def _encoded(array: np.ndarray) -> bytes:
    """PNG bytes; Pillow picks the mode from the dtype and channels (uint16 -> I;16, 2 -> LA)."""
    return _png(Image.fromarray(array))


def test_16_bit_greyscale_png_keeps_its_tones() -> None:
    """Pillow's convert("RGB") clips 16-bit values at 255: a photo came out almost all white."""
    grey = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (128, 1))
    rgb = decode_upload(_encoded(grey))
    row = rgb[128, :, 0].astype(int)
    assert row[0] < 10 and row[-1] > 245 and 100 < row[128] < 155
    assert (rgb[..., 0] == rgb[..., 1]).all()


def test_8_bit_greyscale_and_palette_images() -> None:
    grey = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (128, 1))
    assert 100 < decode_upload(_encoded(grey))[128, 128, 0] < 155
    palette = Image.fromarray(np.full((100, 100, 3), (10, 200, 30), np.uint8)).quantize(4)
    rgb = decode_upload(_png(palette))
    assert np.abs(rgb[100, 100].astype(int) - (10, 200, 30)).max() <= 4


def test_transparent_pixels_become_white() -> None:
    """Alpha (RGBA, LA, palette transparency) is composited on white, not dropped: the colour
    under a transparent pixel is arbitrary (often black)."""
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[:, :50] = (200, 30, 30, 255)  # left half opaque red, right half transparent black
    rgb = decode_upload(_encoded(rgba))
    assert tuple(rgb[128, 10]) == (200, 30, 30) and tuple(rgb[128, 245]) == (255, 255, 255)
    la = np.zeros((100, 100, 2), np.uint8)
    la[..., 0] = 40
    la[:, :50, 1] = 255
    rgb = decode_upload(_encoded(la))
    assert tuple(rgb[128, 10]) == (40, 40, 40) and tuple(rgb[128, 245]) == (255, 255, 255)
    palette = Image.fromarray(rgba[..., :3]).quantize(4)
    palette.info["transparency"] = palette.getpixel((99, 50))
    rgb = decode_upload(_png(palette))
    assert tuple(rgb[128, 245]) == (255, 255, 255)


def test_upload_errors_carry_no_object_reprs() -> None:
    with pytest.raises(UploadError) as err:
        decode_upload(b"definitely not an image")
    assert " at 0x" not in str(err.value) and "<" not in str(err.value)
    with pytest.raises(UploadTooLarge):
        decode_upload(b"0" * (MAX_UPLOAD_BYTES + 1))
