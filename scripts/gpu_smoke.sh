#!/usr/bin/env bash
# GPU smoke check (issue 21): the CUDA paths a GPU user takes first, in a few minutes, so the
# first GPU this project is lent gives numbers at once. Run from anywhere (`make gpu-check`):
#
#   scripts/gpu_smoke.sh [OUT]        # default OUT: outputs/gpu_smoke (emptied first)
#
# Steps, each with a time limit and its full output in OUT/<step>.log:
#   train       25 PGMM steps (full-small, AMP) on CUDA, with a sample sheet and a checkpoint
#   resume      the same run continued to step 50
#   cpu-train   2 steps on the CPU, then
#   cpu-resume  that run continued on CUDA (the gradient scaler's empty CPU state)
#   render      bench/render_speed.py --device cuda: animate() in fp32/fp16/bf16, torch.compile
#               (GPU_SMOKE_COMPILE=0: without) and CUDA graphs (full-small vs tpsmm-small,
#               128², batch 16)
#   serve       the Ray Serve graph of configs/serve/gpu.yaml (fitted to this host, loopback),
#               one German and one Chinese sentence through HTTP (slp demo)
#   synthesize  slp synthesize with gpu.yaml in-process: the renderer's device and precision
# then prints one table. Exit status: 0 if every step passed, else 1. Without a CUDA device it
# prints "no CUDA device" and exits 0 (CI and CPU hosts).
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SLP=${SLP:-.venv/bin/slp}
OUT=${1:-outputs/gpu_smoke}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke: no CUDA device; nothing to check"
    exit 0
fi

rm -rf "$OUT"
mkdir -p "$OUT"
ROWS="$OUT/steps.tsv"
: >"$ROWS"

# run_step NAME SECONDS CMD...: run CMD under a time limit, log it, record status and seconds.
run_step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS rc status
    echo "== $name: $*" | tee "$OUT/$name.log"
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124) status="TIMEOUT after ${limit} s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$ROWS"
    echo "   $status ($((SECONDS - start)) s)"
}

# Training config: full-small with a sample sheet and a checkpoint every 25 steps, so the
# first 25 steps write both on the GPU and the second run resumes from them.
"$PY" - "$OUT/smoke.yaml" <<'EOF'
import sys
import yaml
data = yaml.safe_load(open("configs/pgmm/full-small.yaml", encoding="utf-8"))
data["train"].update(sample_every=25, checkpoint_every=25, log_every=5, amp=True)
yaml.safe_dump(data, open(sys.argv[1], "w", encoding="utf-8"))
EOF
TRAIN=("$SLP" train pgmm --config "$OUT/smoke.yaml" --pose-estimator models/pose_estimator
    --max-videos 8)
run_step train 300 "${TRAIN[@]}" --out "$OUT/run" --device cuda --max-steps 25
run_step resume 300 "${TRAIN[@]}" --out "$OUT/run" --device cuda --max-steps 50
run_step cpu-train 300 "${TRAIN[@]}" --out "$OUT/cpu_run" --device cpu --max-steps 2
run_step cpu-resume 300 "${TRAIN[@]}" --out "$OUT/cpu_run" --device cuda --max-steps 4

# torch.compile of each model takes a minute or two; GPU_SMOKE_COMPILE=0 leaves it out.
COMPILE=()
[ "${GPU_SMOKE_COMPILE:-1}" = 1 ] && COMPILE=(--compile)
run_step render 600 "$PY" bench/render_speed.py --device cuda --sets small --size 128 \
    --batch 16 "${COMPILE[@]}" --cuda-graphs --iters 5 --out "$OUT/render_speed.json"

# gpu.yaml as `slp serve` would run it here (fitted to this host's GPUs), on loopback so that
# no API key is needed.
"$PY" - "$OUT/serve.yaml" <<'EOF'
import sys
import yaml
from slp_pipeline.config import load_serve_config
data = load_serve_config("configs/serve/gpu.yaml")
data["http_options"]["host"] = "127.0.0.1"
yaml.safe_dump(data, open(sys.argv[1], "w", encoding="utf-8"))
EOF
run_step serve 600 "$SLP" demo --config "$OUT/serve.yaml" --out "$OUT/demo"
run_step synthesize 300 "$PY" - "$OUT/serve.yaml" "$OUT/synth.mp4" <<'EOF'
import sys
import time
from slp_pipeline.config import load_serve_config, pipeline_config
from slp_pipeline.synthesize import Synthesizer
synth = Synthesizer(pipeline_config(load_serve_config(sys.argv[1])).resolved())
stage = synth.renderer(None)
start = time.perf_counter()
synth.synthesize("Morgen regnet es im Norden.", "de", sys.argv[2], progress=False)
print(f"renderer on {stage.device} in {stage.dtype}; {time.perf_counter() - start:.1f} s")
assert stage.device.type == "cuda", "device auto did not pick the GPU"
EOF

"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1])


def detail(step: str) -> str:
    """One line of numbers from a step's log or results."""
    log = (out / f"{step}.log").read_text(errors="replace").splitlines()
    if step == "render" and (out / "render_speed.json").is_file():
        rows = json.loads((out / "render_speed.json").read_text())["rows"]
        parts = []
        for r in rows:
            how = "compiled" if r["compiled"] else "graphs" if r["cuda_graphs"] else "eager"
            name = f"{r['dtype']} {how}"
            if "error" in r:
                parts.append(f"{name}: {r['error'].split(':')[0]}")
            else:
                parts.append(f"{name}: {r['full']['fps']:.0f}/{r['tpsmm']['fps']:.0f} fps")
        return "full/tpsmm b16 " + "; ".join(parts)
    keys = ("trained", "resumed", "renderer on", "video:", "Error", "error")
    hits = [line.strip() for line in log if any(k in line for k in keys)]
    return " | ".join(hits[-2:])[:160]


gpu = torch.cuda.get_device_name()
cap = ".".join(map(str, torch.cuda.get_device_capability()))
print(f"\nGPU smoke check: {gpu} (compute capability {cap}), torch {torch.__version__}\n")
print("| step | status | seconds | details |")
print("|---|---|---:|---|")
failed = False
for line in (out / "steps.tsv").read_text().splitlines():
    step, status, seconds = line.split("\t")
    failed |= status != "ok"
    print(f"| {step} | {status} | {seconds} | {detail(step)} |")
sys.exit(1 if failed else 0)
EOF
