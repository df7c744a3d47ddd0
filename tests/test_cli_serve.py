"""``slp synthesize`` and ``slp signers`` in-process, with tiny models and the text2pose double."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from t2p_double import MAX_FRAMES, FakeTextToPose
from tiny import TINY_PGMM

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.pose.layout import WB
from pgmm.pose.sequence import PoseSequence
from pgmm.video import probe, read_video
from slp_pipeline import stages
from slp_pipeline.cli import main
from slp_pipeline.signers import SignerRegistry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """configs/serve/cpu.yaml with its model paths pointed at tiny models in ``tmp_path``."""
    torch.manual_seed(0)
    PGMM(PGMMConfig(variant="pfm", image_size=64, **TINY_PGMM)).save_pretrained(tmp_path / "full")
    HRNetLite(HRNetLiteConfig(widths=(8, 16), stem_width=8)).save_pretrained(tmp_path / "pe")
    (tmp_path / "t2p" / "de").mkdir(parents=True)
    monkeypatch.setattr(stages, "load_text_to_pose", FakeTextToPose.from_pretrained)
    serve_config = yaml.safe_load((REPO / "configs/serve/cpu.yaml").read_text())
    args = serve_config["applications"][0]["args"]
    args.update(
        text2pose={"de": str(tmp_path / "t2p/de")},
        renderers={"full": str(tmp_path / "full"), "skeleton": "skeleton"},
        pose_estimator=str(tmp_path / "pe"),
        upload_poses="pe",  # the tiny P_e "finds" a body anywhere: CLI mechanics only
        signers_dir=str(tmp_path / "signers"),
    )
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(serve_config))
    return path


def test_synthesize_writes_a_playable_mp4(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "hallo.mp4"
    argv = ["synthesize", "am tag regnet es im norden", "--lang", "de", "--signer", "synth-11"]
    assert main([*argv, "-o", str(out), "--config", str(config), "--quiet"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (MAX_FRAMES, 64, 64, 3) and fps == 25
    skeleton = tmp_path / "skeleton.mp4"
    argv = ["synthesize", "hallo", "--renderer", "skeleton", "--fps", "12.5", "--quiet"]
    assert main([*argv, "-o", str(skeleton), "--config", str(config)]) == 0
    frames, fps = read_video(skeleton)
    assert frames.shape == (4, 256, 256, 3) and fps == 12.5  # 8 frames at 25 fps -> 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synthesize", "hallo", "--lang", "fr"], "unsupported language"),
        (["synthesize", "hallo", "--signer", "nobody"], "unknown signer"),
        (["synthesize", "", "--lang", "de"], "text is empty"),
        (["synthesize", "hallo", "--renderer", "vae"], "unknown renderer"),
        (["signers", "remove", "default"], "built in"),
        (["signers", "add", "missing.png", "--name", "x"], "missing.png"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    if argv[0] == "synthesize":
        argv = [*argv, "-o", str(tmp_path / "x.mp4"), "--quiet"]
    assert main([*argv, "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_model_folders_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # the shipped config's relative models/ paths resolve here
    cfg = str(REPO / "configs/serve/cpu.yaml")
    assert main(["synthesize", "hallo", "-o", "x.mp4", "--config", cfg, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model folder not found" in err and "models/text2pose/de" in err


def test_signers_list_add_remove(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = tmp_path / "me.jpg"
    Image.new("RGB", (120, 100), (180, 140, 120)).save(image)
    assert main(["signers", "add", str(image), "--name", "me", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["signers", "list", "--config", str(config)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["default", "me", "synth-11"]
    assert main(["signers", "remove", "me", "--config", str(config)]) == 0
    assert "me" not in SignerRegistry(tmp_path / "signers", seed_builtins=False).names()


def test_signers_add_a_real_photo_with_mediapipe(
    config: Path, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture
) -> None:
    """The shipped configs find an uploaded person with MediaPipe: a real photo is added
    with its whole body (hands and face too), an image of no one is refused in one line."""
    pytest.importorskip("mediapipe")
    data = yaml.safe_load(config.read_text())
    data["applications"][0]["args"]["upload_poses"] = "mediapipe"
    config.write_text(yaml.safe_dump(data))
    photo = shared_data / "video" / "asl-what-is-your-name" / "example-img.png"
    assert main(["signers", "add", str(photo), "--name", "real", "--config", str(config)]) == 0
    pose = SignerRegistry(tmp_path / "signers", seed_builtins=False).get("real").pose
    assert (pose[:11, 2] > 0).sum() >= 7 and (pose[23:91, 2] > 0).all()  # body and face
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    assert main(["signers", "add", str(blank), "--name", "wall", "--config", str(config)]) == 2
    assert "found no person" in capsys.readouterr().err


def test_slp_caption_with_the_in_process_renderer(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``slp caption --captions-only``: cues signed by the real stages, aligned to the cues."""
    import numpy as np

    from pgmm.video import write_video

    source = tmp_path / "talk.mp4"
    write_video(source, np.zeros((75, 48, 64, 3), np.uint8), fps=25)  # 3 s
    subs = tmp_path / "talk.srt"
    subs.write_text("1\n00:00:00,400 --> 00:00:01,600\nMorgen regnet es\n", encoding="utf-8")
    out, log = tmp_path / "track.mp4", tmp_path / "timing.json"
    argv = ["caption", str(source), "--captions", str(subs), "-o", str(out), "--captions-only"]
    argv += ["--models-dir", str(tmp_path / "models"), "--timing-log", str(log), "--quiet"]
    from slp_pipeline import synthesize

    real = synthesize.caption_renderer

    def tiny(signer: str, models_dir: Path) -> synthesize.CaptionRenderer:
        return real(signer, models_dir, config=config)

    monkeypatch.setattr(synthesize, "caption_renderer", tiny)
    assert main(argv) == 0
    frames, fps = read_video(out)
    assert fps == 25 and abs(len(frames) - 75) <= 1 and frames.shape[1:] == (64, 64, 3)
    (entry,) = json.loads(log.read_text())
    assert entry["start_frame"] == 10  # 0.4 s at 25 fps


def test_animate_retargets_a_driving_clip_onto_the_signer(
    config: Path, tmp_path: Path, shared_data: Path
) -> None:
    """``slp animate`` with a real person's labelled clip (a .pose file: no MediaPipe run):
    every driving frame becomes one frame, at the clip's frame rate or the one asked for, and
    the drawn skeleton moves with the driving hands."""
    driving = shared_data / "video" / "asl-what-is-your-name" / "what-is-your-name.pose"
    poses = PoseSequence.load(driving)
    out = tmp_path / "skeleton.mp4"
    argv = ["animate", str(driving), "--renderer", "skeleton", "--quiet", "--config", str(config)]
    assert main([*argv, "-o", str(out)]) == 0
    frames, fps = read_video(out)
    assert len(frames) == len(poses) and fps == poses.fps
    assert np.abs(frames[1:].astype(int) - frames[:-1]).mean(axis=(1, 2, 3)).max() > 0.5
    out = tmp_path / "full.mp4"
    argv = ["animate", str(driving), "--signer", "synth-11", "--fps", "12.5", "--quiet"]
    assert main([*argv, "--config", str(config), "-o", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape[1:] == (64, 64, 3) and fps == 12.5
    assert abs(len(frames) - len(poses) * 12.5 / poses.fps) <= 1


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p / "missing.mp4", [], "not found"),
        (lambda p: _write(p / "notes.mp4", b"not a video"), [], "notes.mp4"),
        (lambda p: _still_pose(p / "long.npz", frames=100), ["--max-seconds", "1"], "longer than"),
        (lambda p: _still_pose(p / "nobody.npz", frames=5, scale=0.0), [], "no usable shoulders"),
        (lambda p: _still_pose(p / "ok.npz", frames=5), ["--fps", "1000"], "fps must be in"),
    ],
)
def test_animate_refuses_bad_driving_input_in_one_line(
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    make: Any,
    extra: list[str],
    message: str,
) -> None:
    driving = make(tmp_path)
    argv = ["animate", str(driving), "--renderer", "skeleton", "--quiet", *extra]
    assert main([*argv, "--config", str(config), "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_animate_labels_a_real_video_with_mediapipe(
    config: Path, tmp_path: Path, shared_data: Path
) -> None:
    """The paper's setting end to end: a real signer's mp4 drives the signer."""
    pytest.importorskip("mediapipe")
    video = shared_data / "video" / "asl-what-is-your-name" / "what-is-your-name.mp4"
    out = tmp_path / "out.mp4"
    argv = ["animate", str(video), "--renderer", "skeleton", "--quiet", "--config", str(config)]
    assert main([*argv, "-o", str(out)]) == 0
    frames, _ = read_video(out)
    assert len(frames) == probe(video).num_frames


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _still_pose(path: Path, frames: int, scale: float = 1.0) -> Path:
    """A body of two shoulders held for ``frames`` frames at 25 fps (``scale`` 0: both at the
    origin, a pose with no body to measure)."""
    data = np.zeros((frames, 133, 3), np.float32)
    data[:, WB["left_shoulder"]] = (0.6 * scale, 0.5 * scale, 1.0)
    data[:, WB["right_shoulder"]] = (0.4 * scale, 0.5 * scale, 1.0)
    PoseSequence(data, 25.0, "wholebody133", 256, 256).save(path)
    return path
