"""Benchmark: the text -> sign-video pipeline in process (the stages behind ``slp synthesize``).

1. **A ~4-second sentence, one row per setting**: time to first frame, end-to-end real-time
   factor (wall time / video duration; <= 1 is real time), CPU seconds, where the time goes --
   text2pose, heatmaps + retargeting, rendering, H.264 encoding -- and how far each setting's
   frames are from the baseline's on the same poses (PSNR, largest difference in grey levels).
   The settings are the levers for real time on two cores: the size of the first chunk,
   PyTorch threads (1 or 2) and the renderer's autocast (float32 or bfloat16). They run
   interleaved (every setting once, then again), so load from other jobs hits them alike; read
   the ratios first. The stages are the service's (``Synthesizer`` loads them; the loop below
   is its chunk loop with a clock around each stage). The real models under ``models/`` are
   used where they exist (``models/text2pose/de``, ``models/pgmm/full-small``); otherwise a
   text2pose stand-in (SynthSigner poses, ~free) and a randomly initialised ``full-small`` PGMM
   (same cost as a trained one). The report says which.
2. **Streaming memory vs output length** (10 s, 60 s, 300 s of video): each length runs in a
   fresh subprocess that streams poses -> skeleton renderer -> fragmented mp4 (bytes dropped, as
   a streaming response hands them to the client), sampling RSS after every chunk; then one
   shorter run through the PGMM renderer in the fastest setting. Memory must not grow with the
   length: the report gives each run's RSS growth over its first second, and the peak of its
   second half minus that of its first (a leak makes it positive, a swing does not).

``--compile`` adds the fastest setting once more with the renderer compiled
(``PipelineConfig.compile``); its compilation, paid once per process, is timed apart
(``compile_s``, ~5 min on the 2-core CPU) and not counted in the row.

Run: ``python bench/pipeline.py [--lengths 10 60 300] [--pgmm-seconds 20] [--repeats 2]
[--device cpu|cuda] [--compile]`` (~3 min on the idle 2-core machine without ``--compile``,
estimated from CPU time). Writes ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.lexicon import build_lexicon, keyed_rng
from pgmm.data.synth.motion import sentence_pose
from pgmm.data.synth.signer import to_pose_sequence
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.pose.sequence import PoseSequence
from slp_pipeline.config import PipelineConfig
from slp_pipeline.signers import Signer
from slp_pipeline.stages import (
    SKELETON,
    EncodeStage,
    PGMMRenderer,
    Renderer,
    Text2PoseStage,
    cpu_computes_bf16,
    retarget_to,
)
from slp_pipeline.synthesize import Synthesizer
from text2pose.canonical import FPS, to_canonical

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, ROOT, probe, rss_mib, write_report  # noqa: E402

REAL_TEXT2POSE = ROOT / "models" / "text2pose" / "de"
REAL_RENDERER = ROOT / "models" / "pgmm" / "full-small"
SENTENCE = "am tag regnet es im norden und im süden scheint die sonne"
SENTENCE_SECONDS = 5.0
#: The stand-in signs a sentence of this many frames and loops it for longer outputs, so its
#: own memory does not grow with the length being measured.
LOOP_FRAMES = 250
CHUNK_FRAMES = PipelineConfig.chunk_frames


@dataclass(frozen=True)
class Setting:
    """One way of running the sentence: the levers for real time on two cores."""

    name: str
    first_chunk_frames: int
    threads: int  # torch.set_num_threads for the whole run
    precision: str  # the renderer's autocast: fp32 | bf16
    compiled: bool = False  # the renderer through torch.compile (PipelineConfig.compile)


#: The first row is the baseline the others' frames are compared with (the pipeline before the
#: real-time work: 16-frame chunks, one thread, float32).
SETTINGS = (
    Setting("baseline", CHUNK_FRAMES, 1, "fp32"),
    Setting("first chunk 4", 4, 1, "fp32"),
    Setting("first chunk 2", 2, 1, "fp32"),
    Setting("first 4, 2 threads", 4, 2, "fp32"),
    Setting("first 4, bf16", 4, 1, "bf16"),
    Setting("first 4, 2 threads, bf16", 4, 2, "bf16"),
)


def settings_for(device: str) -> tuple[Setting, ...]:
    """The settings worth timing here: on a CPU without bf16 instructions oneDNN emulates bf16,
    more slowly than float32, and ``precision: fast`` renders float32 there -- so its bf16 rows
    would time a setting no user gets (and take minutes each)."""
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpu or cpu_computes_bf16():
        return SETTINGS
    return tuple(s for s in SETTINGS if s.precision != "bf16")


def fastest(settings: tuple[Setting, ...]) -> Setting:
    """The real-time setting (two threads, bf16 where the CPU computes it): the last row."""
    return settings[-1]


def compiled(setting: Setting) -> Setting:
    """``setting`` with the renderer compiled (``--compile``: opt-in, as it costs minutes)."""
    return dataclasses.replace(setting, name=f"{setting.name}, compiled", compiled=True)


@dataclass
class SettingResult:
    """A setting's best of the repeats (each figure's own minimum) and its frames' distance
    from the baseline's."""

    setting: Setting
    frames: int
    video_s: float
    time_to_first_frame_s: float
    wall_s: float
    real_time_factor: float
    cpu_s: float  # process CPU time over the best-wall run, all threads
    runs_wall_s: list[float]
    stages_s: dict[str, float]
    psnr_vs_baseline_db: float | None  # None: identical frames (infinite PSNR)
    max_abs_diff_vs_baseline: int
    mean_abs_diff_vs_baseline: float


class StandInTextToPose:
    """text2pose's interface with SynthSigner poses: each word one sign, ``frames`` in all.

    Generating the poses costs milliseconds, so a run with the stand-in measures the rest of
    the pipeline; the real model's cost is in the report only when it was found.
    """

    def __init__(self, language: str, frames: int) -> None:
        self.language = language
        self.frames = frames

    def _sentence(self, text: str) -> PoseSequence:
        words = [w.upper() for w in text.split()]
        lexicon = build_lexicon({self.language: sorted(set(words))})
        signs = [lexicon[(self.language, w)] for w in words]
        length = min(self.frames, LOOP_FRAMES)
        pose = sentence_pose(signs, length, make_identity(0), keyed_rng(0, text))
        return to_canonical(to_pose_sequence(pose))

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        sentence = self._sentence(text)
        for start in range(0, self.frames, chunk_frames):
            stop = min(start + chunk_frames, self.frames)
            index = [i % len(sentence) for i in range(start, stop)]
            yield dataclasses.replace(sentence, data=sentence.data[index])


def make_synthesizer(
    work: Path, frames: int, renderer: str, device: str = "cpu", real_text2pose: bool = True
) -> tuple[Synthesizer, dict]:
    """A :class:`Synthesizer` on the real models where present, else on stand-ins.

    ``real_text2pose=False`` forces the stand-in, whose output has exactly ``frames`` frames:
    the real model signs the sentence at its natural length, whatever length is asked for.
    """
    models = {}
    if real_text2pose and REAL_TEXT2POSE.is_dir():
        text2pose, loader = str(REAL_TEXT2POSE), None
        models["text2pose"] = f"real: {REAL_TEXT2POSE.relative_to(ROOT)}"
    else:
        (work / "de").mkdir(parents=True, exist_ok=True)
        text2pose = str(work / "de")

        def loader(path: Path) -> StandInTextToPose:
            return StandInTextToPose(path.name, frames)

        models["text2pose"] = (
            f"stand-in: SynthSigner poses, {frames} frames "
            f"({REAL_TEXT2POSE.relative_to(ROOT)} absent)"
        )
    renderers = {"skeleton": SKELETON}
    if renderer != SKELETON:
        if REAL_RENDERER.is_dir():
            renderers[renderer] = str(REAL_RENDERER)
            models["renderer"] = f"real: {REAL_RENDERER.relative_to(ROOT)}"
        else:
            cfg = PGMMConfig.from_yaml(ROOT / "configs" / "pgmm" / "full-small.yaml")
            torch.manual_seed(0)
            renderers[renderer] = str(PGMM(cfg).save_pretrained(work / "full-small"))
            models["renderer"] = (
                f"random-init full-small PGMM ({REAL_RENDERER.relative_to(ROOT)} absent; "
                "same cost as a trained one)"
            )
    else:
        models["renderer"] = "skeleton (no model)"
    config = PipelineConfig(
        text2pose={"de": text2pose},
        renderers=renderers,
        default_renderer=renderer,
        signers_dir=str(work / "signers"),
        device=device,
        text2pose_loader=loader,
    )
    return Synthesizer(config), models


def stream(
    t2p: Text2PoseStage,
    stage: Renderer[Any],
    person: Signer,
    text: str,
    on_chunk: Callable[[np.ndarray], None] | None = None,
    max_chunks: int | None = None,
) -> dict:
    """One request through the stages, chunk by chunk, timing each stage; ``on_chunk`` is
    called with each rendered chunk, ``max_chunks`` cuts the request short."""
    start = time.perf_counter()
    state = stage.prepare(person)
    signer_s = time.perf_counter() - start
    stages = dict.fromkeys(("text2pose", "retarget", "render", "encode"), 0.0)
    encoder = EncodeStage().mp4(FPS, fragmented=True)
    frames, first_frame, first_bytes = 0, None, None
    cpu = time.process_time()
    start = clock = time.perf_counter()

    def lap(name: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        stages[name] += now - clock
        clock = now
        return now - start

    chunks = itertools.islice(t2p.stream(text, "de"), max_chunks)
    while True:
        chunk = next(chunks, None)
        lap("text2pose")
        if chunk is None:
            break
        pose = retarget_to(chunk, person)
        lap("retarget")
        rendered = stage.render([state], [pose])[0]  # PGMM's heatmaps included
        elapsed = lap("render")
        first_frame = first_frame if first_frame is not None else elapsed
        data = encoder.write(rendered)
        elapsed = lap("encode")
        if data and first_bytes is None:
            first_bytes = elapsed
        frames += len(rendered)
        if on_chunk:
            on_chunk(rendered)
    encoder.close()
    total = lap("encode")
    return {
        "frames": frames,
        "video_s": round(frames / FPS, 2),
        "wall_s": round(total, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "real_time_factor": round(total / (frames / FPS), 3),
        "time_to_first_frame_s": round(first_frame, 3),
        "time_to_first_bytes_s": round(first_bytes, 3) if first_bytes is not None else None,
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "signer_encode_s": round(signer_s, 3),
    }


def frame_distance(frames: np.ndarray, reference: np.ndarray) -> tuple[float | None, int, float]:
    """PSNR in dB (None when identical), largest and mean absolute difference in grey levels."""
    diff = frames.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff**2))
    psnr = None if mse == 0 else round(10 * np.log10(255**2 / mse), 2)
    return psnr, int(np.abs(diff).max()), round(float(np.abs(diff).mean()), 4)


def sentence_benchmark(repeats: int, device: str, settings: tuple[Setting, ...]) -> dict:
    """The sentence on the PGMM renderer in every one of ``settings``, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        start = time.perf_counter()
        frames = round(SENTENCE_SECONDS * FPS)
        synth, models = make_synthesizer(Path(tmp), frames, "full", device)
        models_t2p = synth.text2pose("de").models
        base = synth.renderer("full")
        assert isinstance(base, PGMMRenderer)
        load_s = time.perf_counter() - start
        person = synth.registry.get("default")
        renderers = {  # one set of weights; each autocast setting, eager or compiled
            (s.precision, s.compiled): PGMMRenderer(
                "full", base.model, base.device, s.precision, compile=s.compiled
            )
            for s in settings
        }
        compile_s = {}  # the compiled renderers' first chunk: compilation, paid once per process
        for (precision, is_compiled), renderer in renderers.items():
            if is_compiled:
                torch.set_num_threads(max(s.threads for s in settings if s.compiled))
                compile_s[precision] = round(renderer.warm_up(), 1)
                print(f"  compiled the {precision} renderer in {compile_s[precision]} s")

        def run(setting: Setting, keep: list[np.ndarray] | None = None, **kw: Any) -> dict:
            torch.set_num_threads(setting.threads)
            t2p = Text2PoseStage(models_t2p, CHUNK_FRAMES, setting.first_chunk_frames)
            on_chunk = None if keep is None else keep.append
            renderer = renderers[setting.precision, setting.compiled]
            return stream(t2p, renderer, person, SENTENCE, on_chunk, **kw)

        for setting in settings:  # first-call allocations, lazy init, oneDNN kernel choice
            run(setting, max_chunks=2)
        runs: dict[Setting, list[dict]] = {s: [] for s in settings}
        outputs: dict[Setting, list[np.ndarray]] = {}
        load = [os.getloadavg()[0]]
        for _ in range(repeats):
            for setting in settings:
                outputs[setting] = []
                runs[setting].append(run(setting, outputs[setting]))
                print(f"  {setting.name}: {runs[setting][-1]['wall_s']:.2f} s", flush=True)
        load.append(os.getloadavg()[0])
    reference = np.concatenate(outputs[settings[0]])
    rows = []
    for setting, results in runs.items():
        best = min(results, key=lambda r: r["wall_s"])
        psnr, max_diff, mean_diff = frame_distance(np.concatenate(outputs[setting]), reference)
        copied = ("frames", "video_s", "wall_s", "real_time_factor", "cpu_s", "stages_s")
        rows.append(
            SettingResult(
                setting,
                **{k: best[k] for k in copied},
                time_to_first_frame_s=min(r["time_to_first_frame_s"] for r in results),
                runs_wall_s=[r["wall_s"] for r in results],
                psnr_vs_baseline_db=psnr,
                max_abs_diff_vs_baseline=max_diff,
                mean_abs_diff_vs_baseline=mean_diff,
            )
        )
    return {
        "device": str(base.device),
        "cpu_computes_bf16": cpu_computes_bf16(),
        "models": models,
        "text": SENTENCE,
        "load_s": round(load_s, 2),
        "peak_rss_MiB": round(rss_mib("VmHWM")),
        "load_average_1min_start_end": [round(x, 2) for x in load],
        "signer_encode_s": runs[settings[0]][0]["signer_encode_s"],
        "compile_s": compile_s,
        "settings": [dataclasses.asdict(r) for r in rows],
    }


def probe_stream(seconds: float, renderer: str, device: str) -> dict:
    """Run in a fresh subprocess: RSS while streaming ``seconds`` of video through ``renderer``
    (skeleton, or the PGMM in the :func:`fastest` setting of this machine)."""
    frames = round(seconds * FPS)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        synth, _ = make_synthesizer(Path(tmp), frames, renderer, device, real_text2pose=False)
        stage = synth.renderer(renderer)
        if isinstance(stage, PGMMRenderer):
            best = fastest(settings_for(device))
            stage = PGMMRenderer(renderer, stage.model, stage.device, best.precision)
            torch.set_num_threads(best.threads)
        samples: list[tuple[int, float]] = []
        done = 0

        def sample(chunk: np.ndarray) -> None:
            nonlocal done
            done += len(chunk)
            samples.append((done, rss_mib()))

        t2p = synth.text2pose("de")
        result = stream(t2p, stage, synth.registry.get("default"), SENTENCE, sample)
    # Growth is measured from the first second on: the first chunks allocate the encoder's and
    # renderer's buffers once, which is a constant, not growth.
    after_first_s = next(r for n, r in samples if n >= FPS)
    peak = max(r for _, r in samples)
    # The allocator makes the PGMM's RSS swing by tens of MiB from chunk to chunk, so one
    # sample is a poor baseline: a leak shows as a later half whose peak exceeds the earlier's.
    half = frames / 2
    early = max([r for n, r in samples if FPS <= n <= half] or [after_first_s])
    late = max(r for n, r in samples if n > half)
    return {
        "renderer": renderer,
        "seconds": seconds,
        "frames": result["frames"],
        "wall_s": result["wall_s"],
        "rss_after_1s_MiB": round(after_first_s, 1),
        "rss_peak_MiB": round(peak, 1),
        "rss_end_MiB": round(samples[-1][1], 1),
        "rss_growth_MiB": round(peak - after_first_s, 1),
        "rss_late_minus_early_peak_MiB": round(late - early, 1),
    }


def rss_sweep(runs: list[tuple[float, str]], device: str) -> list[dict]:
    """Each (seconds, renderer) streamed in a fresh subprocess (:func:`probe_stream`)."""
    rows = []
    for seconds, renderer in runs:
        rows.append(probe(__file__, str(seconds), renderer, "--device", device))
        r = rows[-1]
        print(
            f"{renderer:>8} {seconds:>6.0f} s of video ({r['frames']} frames, "
            f"{r['wall_s']:.1f} s wall): RSS "
            f"{r['rss_after_1s_MiB']:.0f} MiB after 1 s, peak {r['rss_peak_MiB']:.0f} MiB, "
            f"growth {r['rss_growth_MiB']:+.1f} MiB, peak of the 2nd half minus the 1st's "
            f"{r['rss_late_minus_early_peak_MiB']:+.1f} MiB",
            flush=True,
        )
    return rows


def print_table(sentence: dict) -> None:
    rows = sentence["settings"]
    print(f"models: text2pose = {sentence['models']['text2pose']}")
    print(f"        renderer  = {sentence['models']['renderer']}")
    print(
        f"{rows[0]['video_s']} s sentence ({rows[0]['frames']} frames); CPU has bf16 "
        f"instructions: {sentence['cpu_computes_bf16']}; 1-min load average at start/end: "
        f"{sentence['load_average_1min_start_end']}"
    )
    print(
        f"{'setting':<36}{'first':>6}{'thr':>4}{'prec':>6}{'1st frame':>10}{'wall':>9}"
        f"{'RTF':>6}{'CPU s':>7}{'render':>8}{'PSNR dB':>9}{'max diff':>9}"
    )
    for r in rows:
        s = r["setting"]
        psnr = "same" if r["psnr_vs_baseline_db"] is None else f"{r['psnr_vs_baseline_db']:.1f}"
        print(
            f"{s['name']:<36}{s['first_chunk_frames']:>6}{s['threads']:>4}{s['precision']:>6}"
            f"{r['time_to_first_frame_s']:>9.2f}s{r['wall_s']:>8.2f}s"
            f"{r['real_time_factor']:>6.2f}{r['cpu_s']:>7.2f}"
            f"{r['stages_s']['render'] / r['wall_s']:>8.0%}{psnr:>9}"
            f"{r['max_abs_diff_vs_baseline']:>9}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300])
    parser.add_argument(
        "--pgmm-seconds", type=float, default=20, help="PGMM streaming-memory run (0: none)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="renderer device: cpu | cuda | auto")
    parser.add_argument(
        "--compile", action="store_true", help="add the fastest setting, renderer compiled"
    )
    parser.add_argument("--probe", nargs=2, metavar=("SECONDS", "RENDERER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probe:
        print(json.dumps(probe_stream(float(args.probe[0]), args.probe[1], args.device)))
        return 0
    settings = settings_for(args.device)
    if len(settings) < len(SETTINGS):
        print("bf16 settings skipped: this CPU has no bf16 instructions (oneDNN emulates them)")
    timed = (*settings, compiled(fastest(settings))) if args.compile else settings
    sentence = sentence_benchmark(args.repeats, args.device, timed)
    print_table(sentence)
    print(f"(per-signer encode, cached by the service: {sentence['signer_encode_s']:.3f} s)")
    lengths = [(s, SKELETON) for s in args.lengths]
    lengths += [(args.pgmm_seconds, "full")] if args.pgmm_seconds > 0 else []
    report = {
        "chunk_frames": CHUNK_FRAMES,
        "sentence": sentence,
        "streaming_rss": {
            "text2pose": "stand-in",
            "pgmm_setting": dataclasses.asdict(fastest(settings)),
            "runs": rss_sweep(lengths, args.device),
        },
    }
    write_report(RESULTS / "pipeline.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
