"""Benchmark: one PGMM training step at 128^2, batch 4 -- where its time goes, and old vs new.

Each *arm* is one trainer (``PGMMTrainer``, the code ``slp train pgmm`` runs) in its own worker
process, built from a source tree and a config: ``new`` is this working tree, ``old`` a copy of
it in which every file the training-step work changed (:data:`CHANGED`, code and
``configs/pgmm/*-small.yaml``) is as it was at ``--baseline`` -- so other work since then is in
both arms and the comparison isolates this one. The parent sends each worker a few steps at a
time, round robin (old full, new full, old tpsmm, new tpsmm, old full, ...), so load from other
jobs on a shared machine hits every arm alike: read the ratios. Each worker runs PyTorch on one
thread (``--threads 1 2`` adds old and new full-small arms on two intra-op threads: what ``slp
train pgmm`` uses on an otherwise idle 2-core machine, since it leaves torch's thread count at
the core count); only one computes at a time, so a multi-thread arm only measures its threads'
gain when nothing else runs on the machine.

Data: ``--videos`` SynthSigner train videos rendered on the fly (``RenderedSynthSigner``, what
``slp train pgmm`` trains on by default), ``pairs_per_video`` from the config (20), batches
drawn by the trainer's own ``VideoWindowSampler``/``DataLoader``. Timed rounds are half
epochs, an even number of them, so rendering is amortised as in a real run; at each epoch the
pair dataset's 4-video LRU is emptied, as it is with any corpus of more than 4 videos. A data
time is the wait for the next batch, a step time ``train_step``; samples/s = batch / (data +
step).

Parts (each one run of this script; all write into ``bench/results/train_step.json``):

* ``speed`` (default): samples/s of every arm, new/old speed-up of full-small, and the
  full/tpsmm step-time ratio of the new code (the issue's goals: >= 3x and <= 1.5), plus where
  the time goes: ``torch.profiler`` attributes every op, forward and backward, to the module
  that ran it (a backward op to its forward op by autograd sequence number).
* ``losses``: the same seed for N steps: old, new with float32 (must be bit-identical to old:
  those changes are pure speed), new with its defaults, and a control -- old with other random
  draws for TPS dropout and the equivariance warps (same data): the noise against which "equal
  loss per step" is judged.

Run: ``OMP_NUM_THREADS=1 python bench/train_step.py [--part speed|losses] [--steps N]``.
Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, ROOT, TreeWorker, run_worker, tree_at, write_report  # noqa: E402

from pgmm.report import md_table  # noqa: E402

#: The last commit before the training-step work of issue 16: the "old" arms.
BASELINE = "91f29c6"
#: Pieces of a step named in the profile, by the module that runs them.
MODEL_PIECES = ("kp_detector", "bg_motion", "dense_motion", "encoder", "posenet", "generator",
                "driving_head")  # fmt: skip
#: Where the profile puts time spent outside every piece.
OTHER = "other (loss arithmetic, TPS warps, heatmaps)"


@dataclass(frozen=True)
class Arm:
    """One trainer: which code, which config, which overrides."""

    name: str
    tree: str  # "old" | "new"
    variant: str  # "full" | "tpsmm"
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    model: dict[str, Any] = field(default_factory=dict)  # PGMMConfig overrides
    model_from: str = ""  # whose *-small.yaml model section; default: the arm's own tree
    step_seed_offset: int = 0  # other random draws per step (the noise control)
    threads: int = 1  # torch intra-op threads of the worker


@dataclass
class StepTimes:
    data_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)

    def samples_per_s(self, batch: int) -> float:
        return batch * len(self.step_s) / (sum(self.data_s) + sum(self.step_s))


@dataclass
class ArmResult:
    arm: Arm
    times: StepTimes
    warm_s: float = 0.0  # filling the frame cache (the first epoch's rendering), if any
    round_s: list[float] = field(default_factory=list)  # data + step seconds of each round
    profile: dict[str, dict[str, float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------- worker side
def _worker(spec: dict[str, Any]) -> None:
    """Build one trainer from ``spec`` and answer commands read line by line from stdin."""
    import torch

    from pgmm.data.synth.dataset import RenderedSynthSigner
    from pgmm.models.config import PGMMConfig
    from pgmm.models.pose_estimator import HRNetLite
    from pgmm.training.config import TrainConfig
    from pgmm.training.trainer import PGMMTrainer

    torch.set_num_threads(spec["threads"])
    import yaml

    config = yaml.safe_load(Path(spec["config"]).read_text())
    model_config = yaml.safe_load(Path(spec["model_config"]).read_text())

    def known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in values.items() if k in names}  # old code lacks new keys

    mcfg = PGMMConfig.from_dict(known(PGMMConfig, {**model_config["model"], **spec["model"]}))
    tcfg = TrainConfig(**known(TrainConfig, {**config["train"], **spec["train"]}))
    data = RenderedSynthSigner("train", mcfg.image_size, max_videos=spec["videos"])
    estimator = HRNetLite.from_pretrained(ROOT / "models" / "pose_estimator")
    run = Path(tempfile.mkdtemp(prefix="train-step-"))
    trainer = PGMMTrainer(mcfg, tcfg, data, run, estimator=estimator, progress=False)

    def batches() -> Iterator[dict[str, Any]]:
        epoch = 0
        while True:
            trainer.pairs._cache._videos.clear()  # as with > 4 videos: evicted since last epoch
            trainer.state.epoch = epoch
            yield from trainer._batches(epoch, 0)
            epoch += 1

    stream = batches()

    def step(times: StepTimes | None) -> None:
        start = time.perf_counter()
        batch = next(stream)
        fetched = time.perf_counter()
        trainer.state.global_step += spec["step_seed_offset"]
        terms, _ = trainer.train_step(batch)
        trainer.state.global_step += 1 - spec["step_seed_offset"]
        if times is not None:
            times.data_s.append(fetched - start)
            times.step_s.append(time.perf_counter() - fetched)
            times.losses.append({k: float(v) for k, v in terms.items()})

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "warm":  # fill the frame cache (if the arm has one) and warm up
            start = time.perf_counter()
            dataset = trainer.pairs.dataset
            for i in range(len(dataset)):
                dataset.load_frames(i)
            answer: Any = {"warm_s": time.perf_counter() - start}
            step(None)
        elif cmd["cmd"] == "steps":
            times = StepTimes()
            for _ in range(cmd["n"]):
                step(times)
            answer = dataclasses.asdict(times)
        elif cmd["cmd"] == "profile":
            answer = _profile(trainer, next(stream))
        else:
            raise ValueError(f"unknown command {cmd}")
        print(json.dumps(answer), flush=True)


def _profile(trainer: Any, batch: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Milliseconds of one step per piece, forward and backward, from ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    pieces = {name: getattr(trainer.model, name) for name in MODEL_PIECES
              if hasattr(trainer.model, name)}  # fmt: skip
    if trainer.loss.vgg is not None:
        pieces["perceptual VGG19"] = trainer.loss.vgg
    if trainer.loss.estimator is not None and trainer.loss.weights["pose_distance"] > 0:
        pieces["P_e (L_pd)"] = trainer.loss.estimator
    handles, open_scopes = [], []
    for name, module in pieces.items():

        def enter(module: Any, args: Any, name: str = name) -> None:
            scope = record_function(f"piece:{name}")
            scope.__enter__()
            open_scopes.append(scope)

        def leave(module: Any, args: Any, output: Any) -> None:
            open_scopes.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer.train_step(batch)
        wall = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    events = prof.events()
    scopes = [e for e in events if e.name.startswith("piece:")]

    def owner(event: Any) -> str:
        inside = [s for s in scopes if s.time_range.start <= event.time_range.start
                  and event.time_range.end <= s.time_range.end]  # fmt: skip
        if not inside:
            return OTHER
        return min(inside, key=lambda s: s.time_range.elapsed_us()).name[len("piece:") :]

    forward_owner: dict[int, str] = {}
    for event in events:
        if event.name.startswith("aten::") and event.sequence_nr >= 0:
            forward_owner.setdefault(event.sequence_nr, owner(event))
    result: dict[str, dict[str, float]] = defaultdict(
        lambda: {"forward_ms": 0.0, "backward_ms": 0.0}
    )
    for scope in scopes:  # nested pieces (none today) would be counted twice
        result[scope.name[len("piece:") :]]["forward_ms"] += scope.cpu_time_total / 1e3
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function"):
            piece = forward_owner.get(event.sequence_nr, OTHER)
            result[piece]["backward_ms"] += event.cpu_time_total / 1e3
        elif event.name.startswith("Optimizer.step"):
            result["optimizer (Adam)"]["forward_ms"] += event.cpu_time_total / 1e3
    accounted = sum(v["forward_ms"] + v["backward_ms"] for v in result.values())
    result[OTHER]["forward_ms"] += max(0.0, wall * 1e3 - accounted)
    return dict(result)


# ------------------------------------------------------------------------------- parent side
class Worker(TreeWorker):
    """A worker process holding one arm's trainer."""

    def __init__(self, arm: Arm, trees: dict[str, Path], videos: int) -> None:
        self.arm = arm
        tree = trees[arm.tree]
        name = Path("configs", "pgmm", f"{arm.variant}-small.yaml")
        spec = {
            "config": str(tree / name),
            "model_config": str(trees[arm.model_from or arm.tree] / name),
            "train": arm.train,
            "model": arm.model,
            "videos": videos,
            "step_seed_offset": arm.step_seed_offset,
            "threads": arm.threads,
        }
        # Imported here, not at the top: a worker runs this file on the old tree's pgmm.
        from pgmm.data.corpus import default_data_dir

        data = os.environ.get("SLP_SHARED_DATA", str(default_data_dir()))
        script = Path(__file__).resolve()
        super().__init__(arm.name, script, tree, spec, arm.threads, {"SLP_SHARED_DATA": data})


#: Every file the training-step work changed: the old arms run this tree with these files as
#: they were at the baseline, so the comparison isolates that work from other changes.
CHANGED = (
    "pgmm/models/pgmm.py", "pgmm/models/generator.py", "pgmm/models/posenet.py",
    "pgmm/models/pfm.py", "pgmm/losses/total.py", "pgmm/losses/perceptual.py",
    "pgmm/losses/pose.py", "pgmm/losses/motion.py", "pgmm/training/trainer.py",
    "pgmm/training/config.py", "pgmm/allocator.py", "pgmm/models/cmm.py",
    "pgmm/models/hourglass.py", "pgmm/models/encoder.py",
    "pgmm/data/loaders.py", "pgmm/data/samplers.py", "pgmm/data/synth/dataset.py",
    *(f"configs/pgmm/{v}-small.yaml" for v in ("tpsmm", "pose_sum", "pfm", "pfm_pd", "full")),
)  # fmt: skip


#: Files refactored after the baseline whose old names the old arms' code imports (issue 18 moved
#: the checkpoint helpers): taken as of the baseline too. They hold checkpoint I/O, not step
#: work, so the comparison is unchanged.
OLD_IMPORTS = ("pgmm/training/common.py",)


def run_arms(arms: list[Arm], trees: dict[str, Path], videos: int, rounds: int, steps: int,
             profile: bool) -> list[ArmResult]:  # fmt: skip
    """Warm every arm, then ``rounds`` x ``steps`` timed steps round robin (and a profile)."""
    workers = [Worker(arm, trees, videos) for arm in arms]
    results = [ArmResult(w.arm, StepTimes()) for w in workers]
    try:
        for worker, result in zip(workers, results, strict=True):
            result.warm_s = worker.ask(cmd="warm")["warm_s"]
        for r in range(rounds):
            for worker, result in zip(workers, results, strict=True):
                times = worker.ask(cmd="steps", n=steps)
                for key in ("data_s", "step_s", "losses"):
                    getattr(result.times, key).extend(times[key])
                result.round_s.append(sum(times["data_s"]) + sum(times["step_s"]))
                print(f"round {r + 1}/{rounds} {worker.arm.name}: "
                      f"{statistics.mean(times['step_s']):.2f} s/step", flush=True)  # fmt: skip
        if profile:
            for worker, result in zip(workers, results, strict=True):
                result.profile = worker.ask(cmd="profile")
    finally:
        for worker in workers:
            worker.close()
    return results


def speed_table(results: list[ArmResult], batch: int) -> str:
    """Speed of every arm, against the old arm of its variant on one thread (the issue's
    "today") and, for a multi-thread arm, against the old arm on as many threads."""
    old = {
        (r.arm.variant, r.arm.threads): r.times.samples_per_s(batch)
        for r in results
        if r.arm.tree == "old"
    }
    rows = []
    for r in results:
        t, speed = r.times, r.times.samples_per_s(batch)
        one = old.get((r.arm.variant, 1))
        same = old.get((r.arm.variant, r.arm.threads))
        vs_one = f"{speed / one:.2f}x" if one else ""
        vs_same = f"{speed / same:.2f}x" if same and r.arm.threads > 1 else ""
        data_s, step_s = statistics.mean(t.data_s), statistics.mean(t.step_s)
        rows.append([r.arm.name, str(r.arm.threads), f"{data_s:.3f}", f"{step_s:.2f}",
                     f"{speed:.2f}", vs_one, vs_same])  # fmt: skip
    header = ["arm", "threads", "data s/step", "step s/step", "samples/s",
              "speed-up vs old, 1 thread", "vs old, same threads"]  # fmt: skip
    return md_table(header, rows)


def profile_table(results: list[ArmResult]) -> str:
    def cell(t: dict[str, float] | None) -> str:
        return "–" if t is None else f"{t['forward_ms']:.0f} / {t['backward_ms']:.0f}"

    pieces = dict.fromkeys(p for r in results for p in r.profile)  # first seen first
    order = sorted(pieces, key=lambda p: -sum(sum(r.profile.get(p, {}).values()) for r in results))
    rows = [[piece, *(cell(r.profile.get(piece)) for r in results)] for piece in order]
    return md_table(["piece", *(f"{r.arm.name} fwd / bwd ms" for r in results)], rows)


def loss_table(results: list[ArmResult]) -> str:
    """Per-step total loss vs the first arm: mean |difference| and the last steps' mean."""
    reference = [step["total"] for step in results[0].times.losses]
    last = max(1, len(reference) // 2)
    rows = []
    for r in results:
        totals = [step["total"] for step in r.times.losses]
        diffs = [abs(a - b) for a, b in zip(totals, reference, strict=True)]
        late, diff = statistics.mean(totals[-last:]), statistics.mean(diffs)
        same = "yes" if totals == reference else "no"
        rows.append([r.arm.name, f"{late:.4f}", f"{diff:.4f}", f"{max(diffs):.4f}", same])
    header = ["arm", "mean total loss, last half", "mean abs. diff. vs old per step", "max"]
    return md_table([*header, "identical"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("speed", "losses"), default="speed")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old arms")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="speed: half epochs per arm")
    parser.add_argument("--steps", type=int, default=20, help="losses: steps per arm")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="speed: full-small arms on these thread counts (1 is always run)",
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if run_worker(args.worker, _worker):
        return 0
    batch, pairs = 4, 20
    with tempfile.TemporaryDirectory(prefix="train-step-old-") as old_tree:
        trees = {"old": tree_at(args.baseline, CHANGED + OLD_IMPORTS, Path(old_tree)), "new": ROOT}
        start = time.perf_counter()
        if args.part == "speed":
            arms = [
                Arm("old full-small", "old", "full"),
                Arm("new full-small", "new", "full"),
                Arm("old tpsmm-small", "old", "tpsmm"),
                Arm("new tpsmm-small", "new", "tpsmm"),
            ]
            for n in sorted(set(args.threads) - {1}):
                arms += [
                    Arm(f"old full-small, {n} threads", "old", "full", threads=n),
                    Arm(f"new full-small, {n} threads", "new", "full", threads=n),
                ]
            steps = args.videos * pairs // batch // 2  # half an epoch per round
            results = run_arms(arms, trees, args.videos, args.rounds, steps, not args.no_profile)
        else:
            float32 = {"cpu_bf16": False, "frame_cache_gib": 1.0}
            control = Arm(
                "old, other random draws (control)", "old", "full", step_seed_offset=10**6
            )
            arms = [
                Arm("old", "old", "full"),
                Arm("new, float32 + frame cache", "new", "full", float32, model_from="old"),
                Arm("new, defaults", "new", "full", model_from="old"),
                control,
            ]
            results = run_arms(arms, trees, args.videos, 1, args.steps, profile=False)
        seconds = time.perf_counter() - start
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report[args.part] = {
        "command": " ".join(["python", "bench/train_step.py", *sys.argv[1:]]),
        "baseline": args.baseline,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
                   f"{os.getloadavg()[0]:.1f} at the end, torch threads per arm as named",
        "seconds": round(seconds, 1),
        "videos": args.videos, "pairs_per_video": pairs, "batch": batch,
        "arms": [dataclasses.asdict(r) for r in results],
    }  # fmt: skip
    if args.part == "speed":
        by, speed = {r.arm.name: r for r in results}, report["speed"]
        old, new = by["old full-small"], by["new full-small"]
        speedup = new.times.samples_per_s(batch) / old.times.samples_per_s(batch)
        speed["speedup_full_small"] = speedup
        # Rounds of the same phase of the epoch, one right after the other: the median of their
        # ratios is what a load spike in one round cannot move.
        speed["speedup_full_small_median_round"] = statistics.median(
            o / n for o, n in zip(old.round_s, new.round_s, strict=True)
        )
        step = {name: statistics.mean(r.times.step_s) for name, r in by.items()}
        for t in ("old", "new"):
            speed[f"full_over_tpsmm_{t}"] = step[f"{t} full-small"] / step[f"{t} tpsmm-small"]
        print(speed_table(results, batch))
        print(f"full-small samples/s new/old: {speed['speedup_full_small']:.2f}x "
              f"(median of rounds {speed['speedup_full_small_median_round']:.2f}x); "
              f"step time full/tpsmm: old {speed['full_over_tpsmm_old']:.2f}, "
              f"new {speed['full_over_tpsmm_new']:.2f}")  # fmt: skip
        for n in sorted(set(args.threads) - {1}):
            multi = by[f"new full-small, {n} threads"].times.samples_per_s(batch)
            speed[f"speedup_full_small_{n}_threads_vs_old_1"] = multi / old.times.samples_per_s(
                batch
            )
            print(f"new full-small on {n} threads / old on 1: "
                  f"{speed[f'speedup_full_small_{n}_threads_vs_old_1']:.2f}x")  # fmt: skip
        if not args.no_profile:
            print(profile_table(results))
    else:
        print(loss_table(results))
    write_report(args.out, report, f" ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
