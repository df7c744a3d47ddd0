"""Benchmark: the text -> sign-video pipeline in process (the stages behind ``slp synthesize``).

1. **A ~5-second sentence**: time to first frame, end-to-end real-time factor (wall time /
   video duration; < 1 is faster than real time) and where the time goes -- text2pose,
   heatmaps + retargeting, rendering, H.264 encoding -- through the same stage objects as the
   service (``Synthesizer`` loads them; the loop below is its chunk loop with a clock around
   each stage). The real models under ``models/`` are used where they exist
   (``models/text2pose/de``, ``models/pgmm/full-small``); otherwise a text2pose stand-in
   (SynthSigner poses, ~free) and a randomly initialised ``full-small`` PGMM (same cost as a
   trained one). The report says which.
2. **Streaming memory vs output length** (10 s, 60 s, 300 s of video): each length runs in a
   fresh subprocess that streams poses -> skeleton renderer -> fragmented mp4 (bytes dropped, as
   a streaming response hands them to the client), sampling RSS after every chunk. Memory must
   not grow with the length: the report gives each run's RSS growth over its first second.

Run: ``python bench/pipeline.py [--lengths 10 60 300] [--repeats 2] [--device cpu|cuda]``
(the device applies to the sentence's renderer; on CUDA it renders in bf16 autocast, as the
service does).
Writes ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.lexicon import build_lexicon
from pgmm.data.synth.motion import sentence_pose, sentence_rng
from pgmm.data.synth.signer import to_pose_sequence
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.pose.sequence import PoseSequence
from slp_pipeline.config import PipelineConfig
from slp_pipeline.stages import SKELETON, EncodeStage, retarget_to
from slp_pipeline.synthesize import Synthesizer
from text2pose.canonical import FPS, to_canonical

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
REAL_TEXT2POSE = ROOT / "models" / "text2pose" / "de"
REAL_RENDERER = ROOT / "models" / "pgmm" / "full-small"
SENTENCE = "am tag regnet es im norden und im süden scheint die sonne"
SENTENCE_SECONDS = 5.0
#: The stand-in signs a sentence of this many frames and loops it for longer outputs, so its
#: own memory does not grow with the length being measured.
LOOP_FRAMES = 250


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
        pose = sentence_pose(signs, length, make_identity(0), sentence_rng(0, text))
        return to_canonical(to_pose_sequence(pose))

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        sentence = self._sentence(text)
        for start in range(0, self.frames, chunk_frames):
            stop = min(start + chunk_frames, self.frames)
            index = [i % len(sentence) for i in range(start, stop)]
            yield PoseSequence(
                sentence.data[index], sentence.fps, sentence.layout, sentence.width, sentence.height
            )


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set size, or with ``VmHWM`` its peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


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
    synth: Synthesizer,
    text: str,
    renderer: str,
    on_chunk: Callable[[int], None] | None = None,
    max_chunks: int | None = None,
) -> dict:
    """One request through the stages, chunk by chunk, timing each stage; ``on_chunk`` is
    called with the frame count after each chunk, ``max_chunks`` cuts the request short."""
    person = synth.registry.get("default")
    t2p, stage = synth.text2pose("de"), synth.renderer(renderer)
    start = time.perf_counter()
    state = stage.prepare(person)
    signer_s = time.perf_counter() - start
    stages = dict.fromkeys(("text2pose", "retarget", "render", "encode"), 0.0)
    encoder = EncodeStage().mp4(FPS, fragmented=True)
    frames, first_frame, first_bytes = 0, None, None
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
            on_chunk(frames)
    encoder.close()
    total = lap("encode")
    return {
        "frames": frames,
        "video_s": round(frames / FPS, 2),
        "wall_s": round(total, 3),
        "real_time_factor": round(total / (frames / FPS), 3),
        "time_to_first_frame_s": round(first_frame, 3),
        "time_to_first_bytes_s": round(first_bytes, 3) if first_bytes is not None else None,
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "signer_encode_s": round(signer_s, 3),
    }


def sentence_benchmark(repeats: int, device: str) -> dict:
    """The ~5-s sentence on the PGMM renderer; the fastest of ``repeats`` warm runs."""
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        start = time.perf_counter()
        frames = round(SENTENCE_SECONDS * FPS)
        synth, models = make_synthesizer(Path(tmp), frames, "full", device)
        synth.text2pose("de")
        synth.renderer("full")
        load_s = time.perf_counter() - start
        stream(synth, SENTENCE, "full", max_chunks=2)  # first-call allocations and lazy init
        runs = [stream(synth, SENTENCE, "full") for _ in range(repeats)]
    best = min(runs, key=lambda r: r["wall_s"])
    return {
        "device": str(synth.renderer("full").device),
        "models": models,
        "text": SENTENCE,
        "load_s": round(load_s, 2),
        "peak_rss_MiB": round(rss_mib("VmHWM")),
        "runs_wall_s": [r["wall_s"] for r in runs],
        **best,
    }


def probe_stream(seconds: float) -> dict:
    """Run in a fresh subprocess: RSS while streaming ``seconds`` of skeleton video."""
    frames = round(seconds * FPS)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        synth, _ = make_synthesizer(Path(tmp), frames, SKELETON, real_text2pose=False)
        samples: list[tuple[int, float]] = []
        result = stream(synth, SENTENCE, SKELETON, lambda n: samples.append((n, rss_mib())))
    # Growth is measured from the first second on: the first chunks allocate the encoder's and
    # renderer's buffers once, which is a constant, not growth.
    after_first_s = next(r for n, r in samples if n >= FPS)
    peak = max(r for _, r in samples)
    return {
        "seconds": seconds,
        "frames": result["frames"],
        "wall_s": result["wall_s"],
        "rss_after_1s_MiB": round(after_first_s, 1),
        "rss_peak_MiB": round(peak, 1),
        "rss_end_MiB": round(samples[-1][1], 1),
        "rss_growth_MiB": round(peak - after_first_s, 1),
    }


def rss_sweep(lengths: list[float]) -> list[dict]:
    rows = []
    for seconds in lengths:
        cmd = [sys.executable, __file__, "--probe", str(seconds)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{seconds:>6.0f} s of video ({r['frames']} frames, {r['wall_s']:.1f} s wall): RSS "
            f"{r['rss_after_1s_MiB']:.0f} MiB after 1 s, peak {r['rss_peak_MiB']:.0f} MiB, "
            f"growth {r['rss_growth_MiB']:+.1f} MiB",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="renderer device: cpu | cuda | auto")
    parser.add_argument("--probe", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probe:
        print(json.dumps(probe_stream(args.probe)))
        return 0
    sentence = sentence_benchmark(args.repeats, args.device)
    print(f"models: text2pose = {sentence['models']['text2pose']}")
    print(f"        renderer  = {sentence['models']['renderer']}")
    print(
        f"{sentence['video_s']} s sentence ({sentence['frames']} frames): first frame after "
        f"{sentence['time_to_first_frame_s']:.2f} s, wall {sentence['wall_s']:.2f} s, "
        f"real-time factor {sentence['real_time_factor']:.2f} (best of {args.repeats}: "
        f"{sentence['runs_wall_s']})"
    )
    for name, seconds in sentence["stages_s"].items():
        share = seconds / sentence["wall_s"]
        print(f"  {name:<18}{seconds:>8.2f} s  {share:>5.0%}")
    print(f"  (per-signer encode, cached by the service: {sentence['signer_encode_s']:.3f} s)")
    sweep = rss_sweep(args.lengths)
    report = {
        "torch_threads": 1,
        "chunk_frames": PipelineConfig.chunk_frames,
        "sentence": sentence,
        "streaming_rss": {"renderer": "skeleton", "text2pose": "stand-in", "runs": sweep},
    }
    out = RESULTS / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
