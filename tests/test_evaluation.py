"""Evaluation tasks: metric aggregation, reconstruction / cross-person runs, outputs and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_PGMM

from pgmm import evaluation as ev
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import METRIC_COLUMNS, MetricAccumulator, evaluate, markdown_table
from pgmm.metrics import I3D, LPIPS, tcd
from pgmm.metrics.image import l1
from pgmm.metrics.lpips import _alexnet_features
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.video import probe, read_video
from slp_pipeline import cli_eval
from slp_pipeline.cli import main

TINY = TINY_PGMM
ROW_KEYS = [
    "model",
    "variant",
    "task",
    "drive",
    "dataset",
    "split",
    "videos",
    "frames",
    "metrics",
    "definitions",
    "settings",
]
PIXEL_COLUMNS = ("l1", "ssim", "lpips", "tcd")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=128, **TINY))
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny_full")


@pytest.fixture(scope="module")
def data(shared_data: Path) -> RenderedSynthSigner:
    return RenderedSynthSigner("dev", 128, max_videos=1, signer=SynthSigner(data_dir=shared_data))


def tiny_estimator() -> HRNetLite:
    torch.manual_seed(0)
    return HRNetLite(HRNetLiteConfig(widths=(4, 8), stem_width=8)).eval()


# --------------------------------------------------------------------------- aggregation
def test_accumulator_oracle_is_perfect_and_ordered() -> None:
    g = torch.Generator().manual_seed(0)
    video = torch.rand(9, 3, 32, 32, generator=g)
    points = torch.rand(9, 36, 3, generator=g).clamp(min=0.1)  # all visible

    class Echo:
        def recognize(self, sample: torch.Tensor) -> list[str]:
            return ["HELLO", "WORLD"]

    acc = MetricAccumulator(recognizer=Echo(), i3d=I3D())  # I3D without weights: no FVD
    for batch in video.split(4):  # batches of 4, 4, 1: sums must not depend on batching
        acc.add_frames(batch, batch)
    acc.add_tcd(video, video, batch_size=3)
    acc.add_keypoints(points, points)
    acc.recognize(video, ["HELLO", "WORLD"])
    out = acc.result()
    assert list(out) == list(METRIC_COLUMNS)
    assert out["l1"] == 0.0 and out["ssim"] == pytest.approx(1.0) and out["tcd"] == 0.0
    assert out["ke_hands"] == 0.0 and out["ke_body"] == 0.0 and out["pck_hands"] == 1.0
    assert out["wer"] == 0.0
    assert out["lpips"] == "n/a (weights not found at <none given>)"
    assert isinstance(out["fvd"], str) and out["fvd"].startswith("n/a (weights not found at")


def random_lpips(tmp_path: Path) -> LPIPS:
    """LPIPS with random (but complete) local weights: exercises loading and the column."""
    torch.manual_seed(0)
    features, _, channels = _alexnet_features()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "a.pth")
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(channels)}
    torch.save(heads, tmp_path / "lin.pth")
    return LPIPS("alex", tmp_path / "a.pth", tmp_path / "lin.pth")


def test_accumulator_lpips_column(tmp_path: Path) -> None:
    lpips = random_lpips(tmp_path)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 64, 64, generator=g)
    same, other = MetricAccumulator(lpips=lpips), MetricAccumulator(lpips=lpips)
    same.add_frames(x, x)
    other.add_frames(x, x.flip(-1))
    assert same.result()["lpips"] == 0.0
    assert other.result()["lpips"] == pytest.approx(float(lpips(x, x.flip(-1)).mean()))
    assert other.result()["lpips"] > 0


def test_accumulator_matches_whole_video_metrics() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(11, 3, 16, 16, generator=g)
    pred = (target + 0.6 * torch.rand(11, 3, 16, 16, generator=g)).clamp(0, 1)
    pred[4:7] = 1 - target[4:7]  # a burst of flicker so that TCD is not 0
    acc = MetricAccumulator()
    for p, t in zip(pred.split(3), target.split(3), strict=True):
        acc.add_frames(p, t)
    acc.add_tcd(pred, target, batch_size=4)  # windows must reproduce the whole-video value
    out = acc.result()
    assert out["l1"] == pytest.approx(l1(pred, target))
    assert out["tcd"] == pytest.approx(tcd(pred, target)) and out["tcd"] > 0
    for key in ("wer", "ke_hands", "ke_body", "pck_hands"):
        assert out[key].startswith("n/a ("), key


def test_accumulator_reports_unavailable_and_invisible() -> None:
    acc = MetricAccumulator(unavailable={"l1": "no truth"})
    points = torch.zeros(2, 36, 3)  # confidence 0: nothing visible
    acc.add_keypoints(points, points)
    out = acc.result()
    assert out["l1"] == "n/a (no truth)"
    assert out["ke_hands"] == "n/a (no visible keypoints)"
    with pytest.raises(ValueError, match="unknown metric column"):
        MetricAccumulator(unavailable={"psnr": "x"})


# --------------------------------------------------------------------------- tasks
def test_reconstruction_writes_json_table_and_comparison(
    checkpoint: Path, data: RenderedSynthSigner, tmp_path: Path
) -> None:
    model = PGMM.from_pretrained(checkpoint)
    row = evaluate(model, data, "reconstruction", max_frames=6, out_dir=tmp_path, progress=False)
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["columns"] == list(METRIC_COLUMNS)
    (saved,) = payload["results"]
    assert list(saved) == ROW_KEYS and list(saved["metrics"]) == list(METRIC_COLUMNS)
    assert saved == json.loads(json.dumps(row))
    m = row["metrics"]
    assert (row["videos"], row["frames"], row["task"], row["drive"]) == (
        1,
        6,
        "reconstruction",
        "image",
    )
    assert math.isfinite(m["l1"]) and 0 < m["l1"] <= 1
    assert math.isfinite(m["ssim"]) and -1 <= m["ssim"] <= 1
    assert math.isfinite(m["tcd"]) and 0 <= m["tcd"] <= 1
    for key in ("lpips", "fvd"):
        assert m[key].startswith("n/a (weights not found at"), key
    assert m["wer"] == "n/a (no gloss recognizer given)"
    assert m["ke_hands"] == "n/a (no pose estimator P_e given)"
    assert row["settings"]["heatmaps"] == ["ground-truth poses"]

    table = (tmp_path / "metrics.md").read_text()
    assert "| L1 ↓ | SSIM ↑ | LPIPS ↓ | FVD ↓ | TCD ↓ | WER ↓ |" in table
    assert table.count("| tiny_full |") == 0 and table.count("| full | full |") == 1

    info = probe(tmp_path / "comparison.mp4")
    assert (info.width, info.height) == (3 * 128, 128)
    frames, _ = read_video(tmp_path / "comparison.mp4")
    assert len(frames) == 6
    # The left tile is the source (frame 0) in every frame, the middle one the driving video.
    truth = data.load_frames(0)[:6].astype(np.float64)
    assert np.abs(frames[5, :, :128] - truth[0]).mean() < 6
    assert np.abs(frames[5, :, 128:256] - truth[5]).mean() < 6
    assert not list(tmp_path.glob(".*.tmp"))


def test_oracle_model_scores_perfectly(checkpoint: Path, data: RenderedSynthSigner) -> None:
    class Oracle(PGMM):
        """Returns the driving frame itself: the best any model could do."""

        @torch.no_grad()
        def reconstruct(self, source, driving, driving_heatmaps=None):  # type: ignore[override]
            return driving

    oracle = Oracle.from_pretrained(checkpoint)
    m = evaluate(oracle, data, "reconstruction", max_frames=5, progress=False)["metrics"]
    assert m["l1"] == 0.0 and m["ssim"] == pytest.approx(1.0) and m["tcd"] == 0.0


def test_cross_person_reports_only_metrics_without_ground_truth(
    checkpoint: Path, data: RenderedSynthSigner, tmp_path: Path
) -> None:
    model = PGMM.from_pretrained(checkpoint)
    row = evaluate(
        model,
        data,
        "cross-person",
        estimator=tiny_estimator(),
        max_frames=4,
        drive="pose",
        out_dir=tmp_path,
        progress=False,
    )
    m = row["metrics"]
    for key in PIXEL_COLUMNS:
        assert m[key] == "n/a (cross-person: no ground-truth video)", key
    assert m["fvd"].startswith("n/a (weights not found at")
    assert 0 <= m["ke_hands"] < 2 and 0 <= m["ke_body"] < 2 and 0 <= m["pck_hands"] <= 1
    assert row["settings"]["sources"] == ["identity 10"]
    assert row["settings"]["keypoint_reference"] == ["ground-truth poses"]
    assert "no ground-truth video of the source person" in row["definitions"]["l1"]
    # The source tile shows the held-out identity, not the driving signer's first frame.
    frames, _ = read_video(tmp_path / "comparison.mp4")
    assert len(frames) == 4
    driving0 = data.load_frames(0)[0].astype(np.float64)
    assert np.abs(frames[0, :, :128] - driving0).mean() > 10


def test_unlabelled_dataset_uses_the_pose_estimator(data: RenderedSynthSigner) -> None:
    class Unlabelled(RenderedSynthSigner):
        def load_poses(self, i: int, size: int | None = None) -> None:  # type: ignore[override]
            return None

    bare = Unlabelled("dev", 64, max_videos=1, signer=data.signer)
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=64, **TINY))
    with pytest.raises(ValueError, match="has no poses: pass a pose estimator"):
        evaluate(model, bare, max_frames=2, progress=False)
    row = evaluate(model, bare, estimator=tiny_estimator(), max_frames=2, progress=False)
    assert row["settings"]["heatmaps"] == ["P_e"]
    assert row["settings"]["keypoint_reference"] == ["P_e(driving)"]
    assert all(isinstance(row["metrics"][k], float) for k in ("l1", "ssim", "ke_body"))


def test_evaluate_rejects_bad_arguments(checkpoint: Path, data: RenderedSynthSigner) -> None:
    model = PGMM.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="task must be"):
        evaluate(model, data, "retrieval")
    with pytest.raises(ValueError, match="drive must be"):
        evaluate(model, data, drive="text")
    with pytest.raises(ValueError, match="max_frames"):
        evaluate(model, data, max_frames=0)
    small = RenderedSynthSigner("dev", 64, max_videos=1, signer=data.signer)
    with pytest.raises(ValueError, match="64px but the model is 128px"):
        evaluate(model, small)


def test_markdown_table_merges_rows() -> None:
    rows = [
        {"model": "a", "variant": "tpsmm", "task": "reconstruction", "drive": "image",
         "metrics": {"l1": 0.0123456, "lpips": "n/a (weights not found at x|y)"}},
        {"model": "b", "variant": "full", "task": "cross-person", "drive": "pose",
         "metrics": {k: 0.5 for k in METRIC_COLUMNS}},
    ]  # fmt: skip
    lines = markdown_table(rows).strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| Model | Variant | Task | Drive | L1 ↓")
    assert "| 0.012346 |" in lines[2] and "x\\|y" in lines[2]
    assert "n/a (not evaluated)" in lines[2] and "n/a" not in lines[3]
    assert lines[0].count("|") == lines[2].count("|") - 1  # one escaped pipe in the cell


# --------------------------------------------------------------------------- CLI
def test_cli_constants_mirror_the_module() -> None:
    assert cli_eval.TASKS == ev.TASKS and cli_eval.DRIVES == ev.DRIVES
    assert (cli_eval.BATCH_SIZE, cli_eval.COMPARISON_VIDEOS) == (
        ev.BATCH_SIZE,
        ev.COMPARISON_VIDEOS,
    )


def test_cli_end_to_end_and_missing_checkpoint(
    shared_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SLP_SHARED_DATA", str(shared_data))
    torch.manual_seed(0)  # 64 px: the CLI plumbing, not the model, is under test here
    small = PGMM(PGMMConfig(variant="full", image_size=64, **TINY))
    checkpoint = small.save_pretrained(tmp_path / "tiny_full")
    out = tmp_path / "eval"
    common = ["--data", "synth", "--split", "dev", "--max-videos", "1", "--max-frames", "2"]
    args = ["eval", "--task", "reconstruction", "--checkpoint", str(checkpoint)]
    rc = main([*args, "--checkpoint", str(checkpoint), *common, "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| tiny_full | full | reconstruction | image |" in printed
    assert "| tiny_full_2 | full |" in printed
    payload = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in payload["results"]] == ["tiny_full", "tiny_full_2"]
    assert (out / "tiny_full" / "comparison.mp4").is_file()
    assert (out / "tiny_full_2" / "metrics.md").is_file()

    missing = tmp_path / "nope"
    rc = main(["eval", "--task", "cross-person", "--checkpoint", str(missing), "--out", str(out)])
    assert rc == 2
    assert f"checkpoint folder not found: {missing}" in capsys.readouterr().err
    rc = main([*args, *common, "--max-frames", "0", "--out", str(out)])
    assert rc == 2 and "--max-frames must be >= 1" in capsys.readouterr().err
