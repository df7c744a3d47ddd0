"""The serving pipeline's Ray-free stages and the signer registry, each on its own."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from t2p_double import REJECTED, FakeTextToPose
from tiny import TINY_PGMM

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.pose.heatmaps import argmax_decode
from pgmm.pose.layout import WB, wholebody_to_pgmm36
from pgmm.video import read_video
from slp_pipeline import signers as S
from slp_pipeline.config import PipelineConfig
from slp_pipeline.stages import (
    EncodeStage,
    FrameRateConverter,
    PGMMRenderer,
    PoseEstimatorStage,
    SkeletonRenderer,
    Text2PoseStage,
    check_request,
    load_renderer,
    retarget_to,
)
from text2pose.canonical import shoulders

SIZE = 64  # tiny renderers run at 64 px: every code path, a fraction of the time


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> S.SignerRegistry:
    return S.SignerRegistry(tmp_path_factory.mktemp("signers"))


@pytest.fixture(scope="module")
def t2p() -> Text2PoseStage:
    return Text2PoseStage({"de": FakeTextToPose("de")}, chunk_frames=16)


def _png(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def _pgmm(variant: str) -> PGMM:
    torch.manual_seed(0)
    return PGMM(PGMMConfig(variant=variant, image_size=SIZE, **TINY_PGMM))


# --------------------------------------------------------------------------- text2pose
def test_text2pose_streams_chunks(t2p: Text2PoseStage) -> None:
    chunks = list(t2p.stream("  am tag regnet es im norden  ", "de"))
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert all(c.layout == "wholebody133" and c.fps == 25 for c in chunks)


@pytest.mark.parametrize(
    ("text", "language", "renderer", "fps", "message"),
    [
        ("", "de", None, None, "empty"),
        ("   ", "de", None, None, "empty"),
        ("x" * 101, "de", None, None, "limit is 100"),
        ("hallo", "fr", None, None, "unsupported language"),
        ("hallo", "de", "vae", None, "unknown renderer 'vae'"),
        ("hallo", "de", None, 100.0, "fps must be in"),
    ],
)
def test_check_request_rejects_bad_requests(
    text: str, language: str, renderer: str | None, fps: float | None, message: str
) -> None:
    config = PipelineConfig({"de": "t2p"}, {"sk": "skeleton"}, "sk", max_text_chars=100)
    with pytest.raises(S.InputError, match=message):
        check_request(config, text, language, renderer, fps)
    job = check_request(config, "  hallo ", "de", None, 12.5)
    assert (job.text, job.renderer, job.fps) == ("hallo", "sk", 12.5)


@pytest.mark.parametrize(
    ("text", "language", "message"),
    [
        ("hallo", "fr", "unsupported language"),
        (f"hallo {REJECTED}", "de", "unsupported text"),  # raised by the model itself
    ],
)
def test_text2pose_rejects_what_its_model_cannot_sign(
    t2p: Text2PoseStage, text: str, language: str, message: str
) -> None:
    with pytest.raises(S.InputError, match=message):
        list(t2p.stream(text, language))


def test_text2pose_stream_resamples_like_one_converter(t2p: Text2PoseStage) -> None:
    text = "am tag regnet es im norden"
    whole = FrameRateConverter(25, 10).push(FakeTextToPose("de").generate(text))
    chunks = list(t2p.stream(text, "de", fps=10))
    assert whole is not None and all(c.fps == 10 for c in chunks)
    np.testing.assert_allclose(np.concatenate([c.data for c in chunks]), whole.data, atol=1e-6)


def test_text2pose_load_names_missing_folder_and_wrong_language(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="text2pose \\(de\\) model folder not found"):
        Text2PoseStage.load({"de": tmp_path / "missing"}, FakeTextToPose.from_pretrained)
    (tmp_path / "zh").mkdir()
    with pytest.raises(ValueError, match="holds a 'zh' model"):
        Text2PoseStage.load({"de": tmp_path / "zh"}, FakeTextToPose.from_pretrained)


def test_frame_rate_converter_is_chunking_independent() -> None:
    seq = FakeTextToPose("de").generate("eins zwei drei vier fuenf")
    whole = FrameRateConverter(25, 10).push(seq)
    conv = FrameRateConverter(25, 10)
    parts = [conv.push(seq[i : i + 7]) for i in range(0, len(seq), 7)]
    chunked = np.concatenate([p.data for p in parts if p is not None])
    assert whole is not None and whole.fps == 10
    assert len(whole) == int((len(seq) - 1) * 10 / 25) + 1
    np.testing.assert_allclose(chunked, whole.data, atol=1e-6)
    # Output frame 1 at 10 fps is input time 2.5: halfway between input frames 2 and 3.
    np.testing.assert_allclose(whole.xy[1], (seq.xy[2] + seq.xy[3]) / 2, atol=1e-6)


# --------------------------------------------------------------------------- retargeting
def test_retarget_puts_canonical_poses_on_the_signers_body(
    t2p: Text2PoseStage, registry: S.SignerRegistry
) -> None:
    person = registry.get("default")
    chunk = next(iter(t2p.stream("hallo welt", "de")))
    pose = retarget_to(chunk, person)
    mid, width = shoulders(pose.xy)
    ref_mid, ref_width = shoulders(person.pose[:, :2])
    np.testing.assert_allclose(mid, ref_mid, atol=0.02)
    assert width == pytest.approx(ref_width, rel=0.05)
    assert (pose.width, pose.height) == person.image.shape[:2]


# --------------------------------------------------------------------------- renderers
def test_pgmm_heatmaps_decode_back_to_the_retargeted_points(
    t2p: Text2PoseStage, registry: S.SignerRegistry
) -> None:
    person = registry.get("synth-11")
    model = PGMM(PGMMConfig(variant="full", image_size=128, heatmap_sigma=1.0, **TINY_PGMM))
    stage = PGMMRenderer("r", model)
    pose = retarget_to(next(iter(t2p.stream("hallo welt", "de"))), person)
    maps = stage.heatmaps(pose.data)
    assert maps.shape == (16, 36, 32, 32)
    points = wholebody_to_pgmm36(pose.data)
    inside = (points[..., 2] > 0) & np.all((points[..., :2] > 0.02) & (points[..., :2] < 0.98), -1)
    decoded = argmax_decode(maps).numpy()
    error = np.abs(decoded[inside][:, :2] - points[inside][:, :2])
    # Exact for isolated points; finger joints a pixel apart blend, so allow one map pixel.
    assert np.median(error) < 1e-3 and error.max() < 1 / 32
    # The sigma is the checkpoint's: a wider blob has more mass.
    model.config.heatmap_sigma = 2.0
    assert stage.heatmaps(pose.data).sum() > maps.sum()


@pytest.mark.parametrize("variant", ["full", "tpsmm"])
def test_pgmm_renderer_batches_signers_like_single_renders(
    variant: str, t2p: Text2PoseStage, registry: S.SignerRegistry
) -> None:
    stage = PGMMRenderer("r", _pgmm(variant))
    a, b = chunks = list(t2p.stream("am tag regnet es im norden", "de"))[1:]
    people = [registry.get("default"), registry.get("synth-11")]
    states = [stage.prepare(p) for p in people]
    assert states[0].source.heatmaps.shape == (1, 36, SIZE // 4, SIZE // 4)
    poses = [retarget_to(c, p) for c, p in zip(chunks, people, strict=True)]
    batched = stage.render(states, poses)
    single = [stage.render([s], [p])[0] for s, p in zip(states, poses, strict=True)]
    assert [f.shape for f in batched] == [(len(a), SIZE, SIZE, 3), (len(b), SIZE, SIZE, 3)]
    assert all(f.dtype == np.uint8 for f in batched)
    for x, y in zip(batched, single, strict=True):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # float reassociation only


def test_skeleton_renderer_draws_over_the_faded_signer(
    t2p: Text2PoseStage, registry: S.SignerRegistry
) -> None:
    stage = SkeletonRenderer("skeleton", size=128)
    person = registry.get("default")
    state = stage.prepare(person)
    assert state.background.shape == (128, 128, 3)
    assert state.background.mean() < person.image.mean()
    chunk = next(iter(t2p.stream("hallo", "de")))
    (frames,) = stage.render([state], [retarget_to(chunk, person)])
    assert frames.shape == (len(chunk), 128, 128, 3)
    assert not np.array_equal(frames[0], state.background)


def test_load_renderer_names_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="renderer 'full' model folder not found"):
        load_renderer("full", tmp_path / "nope", "cpu")
    assert isinstance(load_renderer("sk", "skeleton"), SkeletonRenderer)
    _pgmm("tpsmm").save_pretrained(tmp_path / "tpsmm")
    loaded = load_renderer("t", tmp_path / "tpsmm", "cpu", precision="bf16")
    assert isinstance(loaded, PGMMRenderer) and loaded.dtype == torch.bfloat16


# --------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("fragmented", [False, True])
def test_mp4_encoder_output_decodes(tmp_path: Path, fragmented: bool) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (37, 48, 62, 3), dtype=np.uint8)
    encoder = EncodeStage().mp4(12.5, fragmented)
    parts = [encoder.write(frames[i : i + 16]) for i in range(0, len(frames), 16)]
    parts.append(encoder.close())
    if fragmented:  # a browser can start on the first chunk: header + first fragment
        assert parts[0][4:8] == b"ftyp" and b"moov" in parts[0] and b"moof" in parts[1]
    else:
        assert parts[:-1] == [b"", b"", b""]
    path = tmp_path / "v.mp4"
    path.write_bytes(b"".join(parts))
    decoded, fps = read_video(path)
    assert decoded.shape == (37, 48, 62, 3) and fps == 12.5


def test_mp4_encoder_without_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="no frames"):
        EncodeStage().mp4(25).close()


def test_frames_zip_and_pose_json(t2p: Text2PoseStage) -> None:
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    with zipfile.ZipFile(io.BytesIO(EncodeStage.frames_zip(iter([frames, frames[:2]])))) as zf:
        assert zf.namelist() == [f"frame_{i:05d}.png" for i in range(7)]
        assert np.asarray(Image.open(zf.open("frame_00006.png"))).shape == (8, 8, 3)
    chunks = list(t2p.stream("hallo welt", "de"))
    doc = json.loads(EncodeStage.pose_json(iter(chunks), "default"))
    assert doc["layout"] == "wholebody133" and doc["signer"] == "default" and doc["fps"] == 25
    assert np.asarray(doc["frames"]).shape == (sum(len(c) for c in chunks), 133, 3)


# --------------------------------------------------------------------------- signers
def test_builtin_signers_are_seeded_from_held_out_identities(
    registry: S.SignerRegistry,
) -> None:
    assert registry.names() == ["default", "synth-11"]
    person = registry.get("default")
    assert person.image.shape == (S.STORED_SIZE, S.STORED_SIZE, 3)
    assert person.pose.shape == (133, 3) and person.pose[WB["left_shoulder"], 2] == 1
    assert [r["source"] for r in registry.list()] == [
        "SynthSigner identity 10",
        "SynthSigner identity 11",
    ]
    with pytest.raises(S.SignerProtected):
        registry.delete("default")


def _fixed_pose(image: np.ndarray) -> np.ndarray:
    return S.synth_rest_signer(10, 32)[1]


def test_add_get_delete_an_uploaded_signer(tmp_path: Path) -> None:
    registry = S.SignerRegistry(tmp_path, seed_builtins=False)
    wide = np.zeros((100, 160, 3), np.uint8)
    wide[:, 30:130] = 200  # the centre square survives the crop
    person = registry.add("alice_2", _png(wide, "JPEG"), _fixed_pose)
    again = registry.get("alice_2")
    assert again.image.shape == (S.STORED_SIZE, S.STORED_SIZE, 3) and again.image.mean() > 150
    assert again.key == person.key and again.meta["builtin"] is False
    with pytest.raises(S.SignerExists):
        registry.add("alice_2", _png(wide), _fixed_pose)
    assert registry.get("alice_2") is again  # unchanged on disk: served from the cache
    registry.delete("alice_2")
    assert registry.names() == []
    with pytest.raises(S.SignerNotFound):
        registry.get("alice_2")
    # No temporary folders left behind (the hidden ``.deleted`` folder is kept on purpose so
    # renders in flight finish with the signer they started with).
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    # Re-added under the same name with other content: the cache must not serve the old one.
    dark = registry.add("alice_2", _png(np.full((100, 100, 3), 20, np.uint8)), _fixed_pose)
    assert registry.get("alice_2").image.mean() < 50 and registry.get("alice_2").key == dark.key


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("Bad Name", b"", S.InputError),
        ("../etc", b"", S.InputError),
        ("ok", b"", S.UploadError),
        ("ok", b"not an image at all", S.UploadError),
        ("ok", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, S.UploadError),  # truncated PNG
        ("ok", b"0" * (S.MAX_UPLOAD_BYTES + 1), S.UploadTooLarge),
        ("ok", _gif(), S.UnsupportedMediaType),
        ("ok", _png(np.zeros((40, 200, 3), np.uint8)), S.UploadError),  # too small
    ],
)
def test_bad_uploads_are_input_errors(
    tmp_path: Path, name: str, data: bytes, error: type[Exception]
) -> None:
    registry = S.SignerRegistry(tmp_path, seed_builtins=False)
    with pytest.raises(error) as info:
        registry.add(name, data, _fixed_pose)
    assert 400 <= info.value.status < 500
    assert registry.names() == []


def test_pose_estimator_stage_gives_a_wholebody_pose(registry: S.SignerRegistry) -> None:
    torch.manual_seed(0)
    stage = PoseEstimatorStage(HRNetLite(HRNetLiteConfig(widths=(8, 16), stem_width=8)), 64)
    pose = stage(registry.get("default").image)
    assert pose.shape == (133, 3)
    assert (pose[:, 2] > 0).sum() <= 36  # only P_e's points are known
