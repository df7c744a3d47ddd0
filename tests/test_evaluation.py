"""Evaluation tasks: metric aggregation, reconstruction / cross-person runs, the evaluator /
estimator split, outputs and CLI.

The values of real runs are checked against an independent computation (the model's own API
and the metric functions on the same frames, or a constant evaluator whose keypoint error
follows from the dataset's poses alone), so a plumbing mistake -- wrong frames, wrong
reference, the wrong network reading the frames -- makes them fail.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_PGMM

from pgmm import evaluation as ev
from pgmm.data.loaders import SignVideoDataset
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import (
    METRIC_COLUMNS,
    MetricAccumulator,
    evaluate,
    keypoint_ceiling,
    markdown_table,
    network_digest,
    write_doc_block,
)
from pgmm.metrics import I3D, LPIPS, tcd
from pgmm.metrics.image import l1, ssim
from pgmm.metrics.keypoints import keypoint_error, pck
from pgmm.metrics.lpips import _alexnet_features
from pgmm.metrics.recognizer import PoseCTCRecognizer, RecognizerConfig, VideoGlossRecognizer
from pgmm.metrics.wer import word_error_rate
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig, PoseEstimator
from pgmm.pose.heatmaps import pose_heatmaps, render_heatmaps
from pgmm.pose.sequence import PoseSequence
from pgmm.video import probe, read_video
from slp_pipeline import evaluate_text
from slp_pipeline.cli import eval as cli_eval
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


def tiny_estimator(seed: int = 0) -> HRNetLite:
    torch.manual_seed(seed)
    return HRNetLite(HRNetLiteConfig(widths=(4, 8), stem_width=8)).eval()


class ConstantEvaluator(PoseEstimator):
    """Reads the same keypoints from every image: its scores follow from the truth alone."""

    def __init__(self, points: torch.Tensor) -> None:
        super().__init__()
        self.points = torch.nn.Parameter(points.clone(), requires_grad=False)  # (36, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        side = images.shape[-1] // self.heatmap_stride  # square images only
        maps = render_heatmaps(self.points[None], side, sigma=1.0)
        return maps.expand(images.shape[0], -1, -1, -1)

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        return self.points[None].expand(images.shape[0], -1, -1).clone()


def constant_evaluator() -> ConstantEvaluator:
    g = torch.Generator().manual_seed(3)
    points = torch.rand(36, 3, generator=g)
    points[:, 2] = 1.0
    return ConstantEvaluator(points)


def truth36(data: RenderedSynthSigner, i: int, frames: int) -> torch.Tensor:
    return torch.from_numpy(data.load_poses(i).to_layout("pgmm36").data[:frames].copy())


def video(data: RenderedSynthSigner, i: int, frames: int) -> torch.Tensor:
    return torch.from_numpy(data.load_frames(i)[:frames].copy()).permute(0, 3, 1, 2).float() / 255


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
    assert out["l1"] == 0.0 and out["ssim"] == pytest.approx(1.0)
    assert out["tcd"] == pytest.approx(tcd(video, video))  # Eq. 12: not 0 for a moving video
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
    # The same frames generated through the model's own API, scored by the metric functions.
    target, points = video(data, 0, 6), truth36(data, 0, 6)
    cfg = model.config
    maps = pose_heatmaps(points, 128, cfg.heatmap_stride, cfg.heatmap_sigma)
    with torch.no_grad():
        pred = model.reconstruct(target[:1].expand(6, -1, -1, -1), target, maps).clamp(0, 1)
    assert m["l1"] == pytest.approx(l1(pred, target), rel=1e-5)
    assert m["ssim"] == pytest.approx(ssim(pred, target), rel=1e-5)
    assert m["tcd"] == pytest.approx(tcd(pred, target), abs=1e-6)
    for key in ("lpips", "fvd"):
        assert m[key].startswith("n/a (weights not found at"), key
    assert m["wer"] == "n/a (no gloss recognizer given)"
    assert m["ke_hands"] == "n/a (no evaluator given)"
    assert row["settings"]["evaluator"] is None
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
    real = video(data, 0, 5)
    assert m["l1"] == 0.0 and m["ssim"] == pytest.approx(1.0)
    assert m["tcd"] == pytest.approx(tcd(real, real))


class GreyModel(PGMM):
    """Draws every frame mid-grey: its pixel scores follow from the target alone."""

    @torch.no_grad()
    def animate(self, state, driving_heatmaps):  # type: ignore[override]
        return torch.full((driving_heatmaps.shape[0], 3, 128, 128), 0.5)


def test_cross_person_on_synthsigner_scores_pixels_against_the_exact_target(
    checkpoint: Path, data: RenderedSynthSigner, tmp_path: Path
) -> None:
    """SynthSigner can draw what cross-person should produce -- the driving poses in the
    held-out source's look -- so the pixel columns compare with that drawing, while the
    keypoint columns still read the generated frames against the driving poses."""
    model = GreyModel.from_pretrained(checkpoint)
    evaluator = constant_evaluator()
    row = evaluate(
        model,
        data,
        "cross-person",
        evaluator=evaluator,
        max_frames=4,
        drive="pose",
        out_dir=tmp_path,
        progress=False,
    )
    m = row["metrics"]
    target = torch.from_numpy(data.load_frames(0, look_of=10)[:4].copy())
    target = target.permute(0, 3, 1, 2).float() / 255
    grey = torch.full_like(target, 0.5)
    assert m["l1"] == pytest.approx(l1(grey, target), abs=1e-6)
    assert m["ssim"] == pytest.approx(ssim(grey, target), abs=1e-6)
    assert m["l1"] != pytest.approx(l1(grey, video(data, 0, 4)), abs=1e-3)  # not the driving video
    assert m["lpips"].startswith("n/a (weights not found at")
    assert m["fvd"].startswith("n/a (weights not found at")
    assert "source person's look (exact)" in row["definitions"]["l1"]
    # The evaluator's reading of every generated frame against the *driving* signer's poses.
    truth = truth36(data, 0, 4).double().numpy()
    found = evaluator.points[None, :, :2].expand(4, -1, -1).double().numpy()
    visible = truth[..., 2] > 0
    errors = keypoint_error(found, truth, visible)
    assert m["ke_hands"] == pytest.approx(errors["hands"])
    assert m["ke_body"] == pytest.approx(errors["whole_body"])
    assert m["pck_hands"] == pytest.approx(pck(found, truth, visible, threshold=0.05)["hands"])
    assert row["settings"]["sources"] == ["identity 10"]
    assert row["settings"]["keypoint_reference"] == ["ground-truth poses"]
    assert row["settings"]["evaluator"] == network_digest(evaluator)
    # The source tile shows the held-out identity, not the driving signer's first frame.
    frames, _ = read_video(tmp_path / "comparison.mp4")
    assert len(frames) == 4
    driving0 = data.load_frames(0)[0].astype(np.float64)
    assert np.abs(frames[0, :, :128] - driving0).mean() > 10


class Recorded(SignVideoDataset):
    """SynthSigner videos seen as a recorded corpus: frames and poses, nothing to redraw."""

    name = "recorded"

    def __init__(self, inner: RenderedSynthSigner) -> None:  # no folder to scan
        self.inner, self.records = inner, inner.records
        self.root, self.split, self.size = inner.root, inner.split, inner.size

    def load_frames(self, i: int, size: int | None = None) -> np.ndarray:
        return self.inner.load_frames(i, size)

    def load_poses(self, i: int, size: int | None = None) -> PoseSequence | None:
        return self.inner.load_poses(i, size)


def test_cross_person_without_an_exact_target_has_no_pixel_columns(
    checkpoint: Path, data: RenderedSynthSigner
) -> None:
    recorded = Recorded(RenderedSynthSigner("dev", 128, max_videos=4, signer=data.signer))
    row = evaluate(
        GreyModel.from_pretrained(checkpoint), recorded, "cross-person",
        evaluator=constant_evaluator(), max_videos=1, max_frames=3, drive="pose", progress=False,
    )  # fmt: skip
    for key in PIXEL_COLUMNS:
        assert row["metrics"][key] == "n/a (cross-person: no ground-truth video)", key
    assert "no ground-truth video of the source person" in row["definitions"]["l1"]
    assert row["settings"]["sources"] == [f"signer {recorded.records[3].signer}"]
    assert isinstance(row["metrics"]["pck_hands"], float)


class RecordingEvaluator(ConstantEvaluator):
    """A constant reader that keeps every image it was shown."""

    def __init__(self, points: torch.Tensor) -> None:
        super().__init__(points)
        self.seen: list[torch.Tensor] = []

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.clone())
        return super().keypoints(images)


@pytest.mark.parametrize("task", ["reconstruction", "cross-person"])
def test_keypoint_ceiling_reads_synthsigners_drawing_of_the_driving_poses(
    data: RenderedSynthSigner, task: str
) -> None:
    """The ceiling shows the evaluator the real video (reconstruction) or the same motion drawn
    in the held-out source's look (cross-person, identity 10 for video 0) and scores it against
    the driving poses exactly as evaluate() scores a generated video."""
    reader = RecordingEvaluator(constant_evaluator().points)
    m = keypoint_ceiling(data, task, reader, max_frames=5, batch_size=2)
    seen = torch.cat(reader.seen)
    real = video(data, 0, 5)
    if task == "reconstruction":
        assert torch.equal(seen, real)
    else:
        look = data.signer.identity_for(data.sentences[0], 10)
        pose = data.signer.pose(data.sentences[0])
        drawn = np.stack(list(islice(data.signer.render(pose, look, 128), 5)))
        assert torch.equal(seen, torch.from_numpy(drawn).permute(0, 3, 1, 2).float() / 255)
        assert (seen - real).abs().mean() > 0.04  # another look, not the driving video
    truth = truth36(data, 0, 5).double().numpy()
    found = reader.points[None, :, :2].expand(5, -1, -1).double().numpy()
    visible = truth[..., 2] > 0
    assert m["ke_hands"] == pytest.approx(keypoint_error(found, truth, visible)["hands"])
    assert m["pck_hands"] == pytest.approx(pck(found, truth, visible, threshold=0.05)["hands"])
    with pytest.raises(ValueError, match="task must be one of"):
        keypoint_ceiling(data, "photo", reader)


def test_unlabelled_dataset_uses_the_pose_estimator(data: RenderedSynthSigner) -> None:
    class Unlabelled(RenderedSynthSigner):
        def load_poses(self, i: int, size: int | None = None) -> None:  # type: ignore[override]
            return None

    bare = Unlabelled("dev", 64, max_videos=1, signer=data.signer)
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=64, **TINY))
    with pytest.raises(ValueError, match="has no poses: pass a pose estimator"):
        evaluate(model, bare, max_frames=2, progress=False)
    evaluator = constant_evaluator()
    rows = [
        evaluate(model, bare, estimator=tiny_estimator(seed), evaluator=evaluator, max_frames=2,
                 progress=False)
        for seed in (0, 1)
    ]  # fmt: skip
    for row in rows:
        assert row["settings"]["heatmaps"] == ["P_e"]
        # No poses: the evaluator reads the real frames too, so the constant one agrees with
        # itself exactly -- the estimator that made the heatmaps plays no part in the score.
        assert row["settings"]["keypoint_reference"] == ["evaluator(driving)"]
        assert row["metrics"]["ke_body"] == 0.0 and row["metrics"]["pck_hands"] == 1.0
    # ... while the heatmaps (and so the frames) do come from the estimator.
    assert rows[0]["metrics"]["l1"] != rows[1]["metrics"]["l1"]


def tiny_recognizer() -> PoseCTCRecognizer:
    torch.manual_seed(0)
    config = RecognizerConfig("de", ("A", "B", "C"), hidden=8, rnn_hidden=8, rnn_layers=1)
    return PoseCTCRecognizer(config).eval()


def test_wer_reads_the_evaluators_keypoints(checkpoint: Path, data: RenderedSynthSigner) -> None:
    model, recognizer = PGMM.from_pretrained(checkpoint), tiny_recognizer()
    evaluator = constant_evaluator()
    m = evaluate(
        model, data, recognizer=recognizer, evaluator=evaluator, max_frames=8, progress=False
    )["metrics"]
    read = recognizer.recognize(evaluator.points[None].expand(8, -1, -1))
    assert m["wer"] == pytest.approx(word_error_rate([data.records[0].gloss.split()], [read]))
    with pytest.raises(ValueError, match="pass an evaluator"):
        evaluate(model, data, recognizer=recognizer, max_frames=8, progress=False)
    other = VideoGlossRecognizer(recognizer, tiny_estimator())
    with pytest.raises(ValueError, match="another network than the evaluator"):
        evaluate(model, data, recognizer=other, evaluator=evaluator, max_frames=8, progress=False)


def test_evaluator_must_not_be_the_training_pose_estimator(
    checkpoint: Path, data: RenderedSynthSigner
) -> None:
    model = PGMM.from_pretrained(checkpoint)
    assert network_digest(tiny_estimator(0)) == network_digest(tiny_estimator(0))
    assert network_digest(tiny_estimator(0)) != network_digest(tiny_estimator(1))
    with pytest.raises(ValueError, match="weights of the P_e given for heatmaps"):
        evaluate(model, data, estimator=tiny_estimator(0), evaluator=tiny_estimator(0))


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


def test_write_doc_block_replaces_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    write_doc_block(doc, "<!-- x:begin -->", "<!-- x:end -->", "first")  # no file yet
    assert doc.read_text() == "<!-- x:begin -->\nfirst\n<!-- x:end -->\n"
    doc.write_text("# Title\n\n<!-- x:begin -->\nold\n<!-- x:end -->\n\nhand-written\n")
    write_doc_block(doc, "<!-- x:begin -->", "<!-- x:end -->", "new\n")
    write_doc_block(doc, "<!-- y:begin -->", "<!-- y:end -->", "other")  # appended
    assert doc.read_text() == (
        "# Title\n\n<!-- x:begin -->\nnew\n<!-- x:end -->\n\nhand-written\n\n"
        "<!-- y:begin -->\nother\n<!-- y:end -->\n"
    )


# --------------------------------------------------------------------------- CLI
def test_cli_constants_mirror_the_module() -> None:
    assert cli_eval.TASKS == ev.TASKS and cli_eval.DRIVES == ev.DRIVES
    assert (cli_eval.BATCH_SIZE, cli_eval.COMPARISON_VIDEOS) == (
        ev.BATCH_SIZE,
        ev.COMPARISON_VIDEOS,
    )
    et = evaluate_text
    assert (cli_eval.DEFAULT_SENTENCES, cli_eval.DEFAULT_RENDERERS) == (
        et.DEFAULT_SENTENCES,
        et.DEFAULT_RENDERERS,
    )
    assert cli_eval.DEFAULT_EVALUATOR == et.DEFAULT_EVALUATOR == Path("models/evaluator")


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
    # The default evaluator (models/evaluator) is looked up relative to the working directory.
    monkeypatch.chdir(tmp_path)
    rc = main([*args, *common, "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "evaluator model not found: models/evaluator" in err
    assert "slp train pose-estimator --preset evaluator --seed 1" in err
    common += ["--evaluator", "none"]
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
    rc = main([*args, *common, "--language", "de", "--out", str(out)])
    assert rc == 2 and "--language only apply to --task text" in capsys.readouterr().err
    rc = main([*args, *common, "--recognizer", str(tmp_path), "--out", str(out)])
    assert rc == 2 and "reads the evaluator's keypoints" in capsys.readouterr().err
    rc = main(["eval", "--task", "reconstruction", *common, "--out", str(out)])
    assert rc == 2 and "needs at least one --checkpoint" in capsys.readouterr().err


def test_cli_scores_with_the_evaluator(
    shared_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SLP_SHARED_DATA", str(shared_data))
    torch.manual_seed(0)
    small = PGMM(PGMMConfig(variant="full", image_size=64, **TINY))
    checkpoint = small.save_pretrained(tmp_path / "tiny_full")
    evaluator = tiny_estimator(1).save_pretrained(tmp_path / "evaluator")
    out = tmp_path / "eval"
    common = ["--data", "synth", "--split", "dev", "--max-videos", "1", "--max-frames", "2"]
    args = ["eval", "--task", "cross-person", "--drive", "pose", "--checkpoint", str(checkpoint)]
    assert main([*args, *common, "--evaluator", str(evaluator), "--out", str(out)]) == 0
    (row,) = json.loads((out / "metrics.json").read_text())["results"]
    assert row["settings"]["evaluator"] == network_digest(HRNetLite.from_pretrained(evaluator))
    assert all(isinstance(row["metrics"][k], float) for k in ("ke_hands", "ke_body", "pck_hands"))
    same = ["--pose-estimator", str(evaluator), "--evaluator", str(evaluator)]
    assert main([*args, *common, *same, "--out", str(out)]) == 2
    assert "weights of the P_e given for heatmaps" in capsys.readouterr().err
