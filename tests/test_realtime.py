"""The real-time settings of the pipeline (issue 16): the chunk schedule that brings the first
frame sooner, the ``fast`` precision, their config keys, and the benchmark's bookkeeping.
No timing is asserted here -- ``bench/pipeline.py`` measures it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml
from t2p_double import FakeTextToPose
from tiny import TINY_PGMM

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.pose.sequence import PoseSequence
from slp_pipeline.config import PipelineConfig, pipeline_config
from slp_pipeline.stages import (
    PGMMRenderer,
    PGMMState,
    Text2PoseStage,
    chunk_schedule,
    load_renderer,
    resolve_precision,
)
from slp_pipeline.synthesize import Synthesizer

REPO = Path(__file__).resolve().parents[1]


def _poses(frames: int) -> PoseSequence:
    data = np.arange(frames * 133 * 3, dtype=np.float32).reshape(frames, 133, 3)
    return PoseSequence(data, 25.0, "wholebody133", 256, 256)


def _pieces(poses: PoseSequence, sizes: list[int]) -> Iterator[PoseSequence]:
    start = 0
    for size in sizes:
        yield poses[start : start + size]
        start += size


@pytest.mark.parametrize(
    ("pieces", "first", "frames", "expected"),
    [
        ([16, 16, 16, 7], 4, 16, [4, 16, 16, 16, 3]),
        ([4] * 14 + [3], 4, 16, [4, 16, 16, 16, 7]),  # small pieces gathered
        ([3, 5, 1, 40, 2], 2, 16, [2, 16, 16, 16, 1]),  # ragged pieces (per-gloss models)
        ([16, 16, 8], 16, 16, [16, 16, 8]),  # first == frames: unchanged
        ([16, 4], 4, 16, [4, 16]),  # ends exactly on a chunk: no empty chunk
        ([3], 4, 16, [3]),  # shorter than the first chunk
        ([40], 32, 8, [32, 8]),  # a first chunk larger than the rest is allowed
    ],
)
def test_chunk_schedule_recuts_without_changing_frames(
    pieces: list[int], first: int, frames: int, expected: list[int]
) -> None:
    poses = _poses(sum(pieces))
    chunks = list(chunk_schedule(_pieces(poses, pieces), first, frames))
    assert [len(c) for c in chunks] == expected
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), poses.data)
    assert all((c.fps, c.layout, c.width) == (25.0, "wholebody133", 256) for c in chunks)


class RecordingModel(FakeTextToPose):
    """The test double, remembering the piece size the stage asked for."""

    asked: list[int]

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        self.asked = [*getattr(self, "asked", []), chunk_frames]
        return super().generate_stream(text, chunk_frames)


def test_text2pose_stage_sends_a_small_first_chunk() -> None:
    model = RecordingModel("de")
    words = "am tag regnet es im norden"  # 6 words x 8 frames, capped at 40
    small = Text2PoseStage({"de": model}, chunk_frames=16, first_chunk_frames=4)
    assert [len(c) for c in small.stream(words, "de")] == [4, 16, 16, 4]
    # Pieces of the first chunk's size: an autoregressive model hands it over sooner.
    assert model.asked == [4]
    whole = Text2PoseStage({"de": model}, chunk_frames=16)  # no first_chunk_frames: as before
    assert [len(c) for c in whole.stream(words, "de")] == [16, 16, 8]
    assert model.asked == [4, 16]
    np.testing.assert_array_equal(
        np.concatenate([c.data for c in small.stream(words, "de")]),
        np.concatenate([c.data for c in whole.stream(words, "de")]),
    )


def test_synthesizer_uses_the_configured_first_chunk(tmp_path: Path) -> None:
    (tmp_path / "de").mkdir()
    config = PipelineConfig(
        text2pose={"de": str(tmp_path / "de")},
        renderers={"skeleton": "skeleton"},
        default_renderer="skeleton",
        signers_dir=str(tmp_path / "signers"),
        first_chunk_frames=2,
        text2pose_loader=lambda path: FakeTextToPose(path.name),
    )
    stage = Synthesizer(config).text2pose("de")
    assert (stage.first_chunk_frames, stage.chunk_frames) == (2, 16)
    assert PipelineConfig.first_chunk_frames == 4  # the default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"first_chunk_frames": 0}, "first_chunk_frames"),
        ({"precision": "fastest"}, "precision must be one of"),
        ({"compile": "on"}, "compile must be true or false"),
    ],
)
def test_config_rejects_bad_real_time_settings(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineConfig(text2pose={}, renderers={"s": "skeleton"}, default_renderer="s", **change)


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml", "cluster.yaml"])
def test_serve_configs_load_with_the_real_time_keys(name: str) -> None:
    config = pipeline_config(yaml.safe_load((REPO / "configs" / "serve" / name).read_text()))
    assert 1 <= config.first_chunk_frames <= config.chunk_frames
    resolve_precision(config.precision, torch.device("cpu"))  # a valid precision
    assert config.compile is False  # opt-in: compiling costs minutes per replica


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch.compile replaced by a recorder of the frame counts its function is called with
    (compiling takes minutes; the frames of a really compiled renderer are compared with eager
    ones by bench/pipeline.py --compile)."""
    calls: list[int] = []

    def fake_compile(fn, dynamic=None):  # type: ignore[no-untyped-def]
        assert dynamic is False  # dynamic shapes rendered slower than eager on a CPU

        def counted(state, maps):  # type: ignore[no-untyped-def]
            calls.append(len(maps))
            return fn(state, maps)

        return counted

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_load_renderer_compiles_before_it_returns(
    compile_calls: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM)).save_pretrained(
        tmp_path / "r"
    )
    stage = load_renderer("r", folder, "cpu", compile=True, compile_sizes=(3, 2))
    assert isinstance(stage, PGMMRenderer) and compile_calls == [2, 3]
    err = capsys.readouterr().err
    assert "compiling renderer 'r' for chunks of 2 and 3 frames" in err
    assert "compiled renderer 'r' in" in err


def test_compiled_renderer_pads_chunks_to_its_compiled_lengths(compile_calls: list[int]) -> None:
    # What is checked: the compiled function only ever sees the lengths it was compiled for,
    # padding and cutting give the eager frames, and adapted signers stay eager.
    calls = compile_calls
    model = PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM)).eval()
    stage = PGMMRenderer("r", model, compile=True, compile_sizes=(16, 4))
    assert stage.warm_up() > 0 and calls == [4, 16]
    eager = PGMMRenderer("r", model)
    rng = np.random.default_rng(0)
    grey = torch.full((1, 3, 64, 64), 0.5)
    source = model.encode_source(grey, stage.heatmaps(np.zeros((1, 36, 3), np.float32)))

    def poses(n: int) -> PoseSequence:
        return PoseSequence(
            (rng.random((n, 36, 3)) * 64).astype(np.float32), 25.0, "pgmm36", 64, 64
        )

    for n, expected in [(4, [4]), (1, [4]), (7, [16]), (20, [16, 4])]:
        calls.clear()
        chunk = poses(n)
        got = stage.render([PGMMState(model, source)], [chunk])
        want = eager.render([PGMMState(model, source)], [chunk])
        assert calls == expected and got[0].shape[0] == n
        np.testing.assert_allclose(got[0], want[0], atol=1)  # batch-size rounding only
    # Two signers in one batch (the service's batching): their stacked state is cut and
    # padded with the poses.
    calls.clear()
    other = model.encode_source(torch.full((1, 3, 64, 64), 0.2), source.heatmaps)
    chunks = [poses(9), poses(12)]
    states = [PGMMState(model, source), PGMMState(model, other)]
    got, want = stage.render(states, chunks), eager.render(states, chunks)
    assert calls == [16, 16]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1)
    # An adapted signer's own weights: eager.
    calls.clear()
    adapted = PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM)).eval()
    stage.render([PGMMState(adapted, adapted.encode_source(grey, source.heatmaps))], [poses(5)])
    assert calls == []


@pytest.mark.parametrize(("has_bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_fast_precision_uses_bf16_only_on_cpus_that_compute_it(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, dtype: torch.dtype
) -> None:
    caps = {"avx512_bf16": has_bf16, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert resolve_precision("fast", torch.device("cpu")) == dtype
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32  # unchanged


@pytest.mark.parametrize(
    ("capability", "dtype"), [((9, 0), torch.bfloat16), ((7, 5), torch.float16)]
)
def test_fast_precision_on_cuda_is_auto(capability: tuple[int, int], dtype: torch.dtype) -> None:
    cuda = torch.device("cuda")
    assert resolve_precision("fast", cuda, capability) == dtype
    assert resolve_precision("auto", cuda, capability) == dtype


# ----------------------------------------------------------------------------- benchmark
@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "bench/pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_baseline_is_the_pipeline_before_the_real_time_work(bench: ModuleType) -> None:
    baseline = bench.SETTINGS[0]
    assert (baseline.first_chunk_frames, baseline.threads, baseline.precision) == (16, 1, "fp32")
    assert len(set(bench.SETTINGS)) == len(bench.SETTINGS)
    fastest = bench.fastest(bench.SETTINGS)
    assert fastest.threads == 2 and fastest.precision == "bf16"


def test_bench_skips_bf16_where_the_cpu_emulates_it(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU without bf16 instructions the bf16 rows time a setting no user gets (``fast``
    renders float32 there): they are dropped, and the fastest setting left is float32."""
    monkeypatch.setattr(bench, "cpu_computes_bf16", lambda: False)
    kept = bench.settings_for("cpu")
    assert kept[0] == bench.SETTINGS[0] and all(s.precision == "fp32" for s in kept)
    assert len(kept) == len([s for s in bench.SETTINGS if s.precision == "fp32"])
    assert bench.fastest(kept).threads == 2
    monkeypatch.setattr(bench, "cpu_computes_bf16", lambda: True)
    assert bench.settings_for("cpu") == bench.SETTINGS


def test_bench_frame_distance(bench: ModuleType) -> None:
    frames = np.random.default_rng(0).integers(0, 250, (3, 8, 8, 3), dtype=np.uint8)
    assert bench.frame_distance(frames, frames) == (None, 0, 0.0)
    shifted = frames.copy()
    shifted[0, 0, 0, 0] += 5
    psnr, biggest, mean = bench.frame_distance(shifted, frames)
    assert biggest == 5 and mean == pytest.approx(5 / frames.size, abs=1e-4)
    assert psnr == pytest.approx(10 * np.log10(255**2 / (25 / frames.size)), abs=0.01)


def test_bench_tree_at_takes_the_changed_files_from_the_revision(
    bench: ModuleType, tmp_path: Path
) -> None:
    # The old arm of bench/render_cpu.py and bench/train_step.py: this tree, with the listed
    # files as of a revision -- and a file that did not exist then removed, so the old arm
    # cannot import new code by accident.
    import subprocess

    first = subprocess.run(
        ["git", "-C", str(REPO), "rev-list", "--max-parents=0", "HEAD"],
        capture_output=True,
        text=True,
    )
    if first.returncode != 0 or not first.stdout.strip():
        pytest.skip("no git history in this checkout")
    revision = first.stdout.split()[0]
    common = sys.modules["common"]  # loaded by bench/pipeline.py from its own folder
    tree = common.tree_at(revision, ("pgmm/__init__.py", "pgmm/allocator.py"), tmp_path)
    old_init = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:pgmm/__init__.py"],
        capture_output=True,
        check=True,
    ).stdout
    assert (tree / "pgmm" / "__init__.py").read_bytes() == old_init
    assert not (tree / "pgmm" / "allocator.py").exists()  # added long after the first commit
    assert (tree / "pgmm" / "models" / "pgmm.py").read_bytes() == (
        REPO / "pgmm" / "models" / "pgmm.py"
    ).read_bytes()  # not listed: this tree's
    assert (tree / "configs").is_dir()
