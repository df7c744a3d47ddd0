#!/usr/bin/env bash
# Install the optional mmpose extra (pgmm.models.mmpose_adapter.MMPoseWholeBody) into the
# *active* virtualenv, leaving the project's own pins (torch, numpy) exactly as they are.
#
#   . .venv/bin/activate && bash scripts/install_mmpose.sh
#
# Versions (chosen to fit together; mmpose 1.3.x accepts mmcv >=2.0,<2.2 and mmengine <1.0):
#   openmim 0.3.9, mmengine 0.10.7, mmcv 2.1.0 (built from source with its C++ ops), mmpose 1.3.2.
# No mmcv wheel exists for torch 2.13, so mmcv is compiled here: about 20 minutes on 2 cores.
# mmcv 2.1.0's setup.py still imports pkg_resources, which setuptools >= 81 no longer ships:
# an older setuptools is put on PYTHONPATH for that build only, not installed into the venv.
# torchvision (an mmpose dependency) must match torch: 0.28.x pairs with torch 2.13.
#
# Nothing is downloaded by the project's code. This script puts a self-contained copy of the
# HRNet-W32 COCO-WholeBody 256x192 config in $SLP_MMPOSE_DIR (default outputs/models/mmpose);
# copy the matching checkpoint there yourself:
#   hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth
# (the weights listed for td-hm_hrnet-w32_8xb64-210e_coco-wholebody-256x192 in mmpose's
# model zoo). tests/test_pose_estimator.py::test_mmpose_real_model looks there too, or at
# $SLP_MMPOSE_CONFIG / $SLP_MMPOSE_CHECKPOINT.
set -euo pipefail

OPENMIM_VERSION=0.3.9
MMENGINE_VERSION=0.10.7
MMCV_VERSION=2.1.0
MMPOSE_VERSION=1.3.2
TORCHVISION_SPEC="torchvision>=0.28,<0.29"
CONFIG_NAME=td-hm_hrnet-w32_8xb64-210e_coco-wholebody-256x192.py
OUT_DIR="${SLP_MMPOSE_DIR:-outputs/models/mmpose}"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'install_mmpose.sh: %s\n' "$*" >&2; exit 1; }

PY="$(command -v python || true)"
[ -n "$PY" ] || die "no python on PATH; activate the project venv first (. .venv/bin/activate)"
"$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' \
    || die "not inside a virtualenv ($PY); activate the project venv first, this script never touches a system install"
"$PY" -c 'import torch' 2>/dev/null || die "torch is not installed in $PY's environment; run 'make install' first"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Pin what is already installed so no step below can up- or downgrade the project's core.
"$PY" - >"$WORK/constraints.txt" <<'EOF'
from importlib.metadata import version
for name in ("torch", "numpy", "pillow"):
    print(f"{name}=={version(name).split('+')[0]}")
EOF
say "keeping these pins: $(tr '\n' ' ' <"$WORK/constraints.txt")"
# PIP_CONSTRAINT also reaches the pip that mim runs.
export PIP_CONSTRAINT="$WORK/constraints.txt"
PIP=("$PY" -m pip install)

say "openmim ${OPENMIM_VERSION} and mmengine ${MMENGINE_VERSION}"
"${PIP[@]}" "openmim==${OPENMIM_VERSION}"
# opencv-python >= 4.12 needs numpy >= 2, which the project does not allow.
"$(dirname "$PY")/mim" install "mmengine==${MMENGINE_VERSION}" "opencv-python>=4.8,<4.12"

say "building mmcv ${MMCV_VERSION} from source with ops (about 20 min on 2 cores)"
"$PY" -m pip install --target "$WORK/buildtools" "setuptools<81" wheel ninja
# ninja (on PATH) lets torch's extension builder compile in parallel; MAX_JOBS=2 fits 2 cores.
MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" PATH="$WORK/buildtools/bin:$PATH" \
    PYTHONPATH="$WORK/buildtools${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps --no-binary mmcv \
    -w "$WORK/wheels" "mmcv==${MMCV_VERSION}"
"${PIP[@]}" "$WORK"/wheels/mmcv-*.whl

say "mmpose ${MMPOSE_VERSION}"
# --no-deps: mmpose lists chumpy, which no longer builds and which the 2-D models never use.
"${PIP[@]}" --no-deps "mmpose==${MMPOSE_VERSION}"
"${PIP[@]}" "$TORCHVISION_SPEC" json_tricks munkres scipy matplotlib "xtcocotools>=1.12"

say "checking the install"
"$PY" - <<'EOF'
import mmcv, mmengine, mmpose, torch
from mmcv.ops import nms  # noqa: F401  (proves the compiled ops load)
print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmpose {mmpose.__version__}")
EOF

say "writing the HRNet-W32 WholeBody config to ${OUT_DIR}"
mkdir -p "$OUT_DIR"
CONFIG_NAME="$CONFIG_NAME" OUT_DIR="$OUT_DIR" "$PY" - <<'EOF'
import os
from pathlib import Path

import mmpose
from mmengine.config import Config

root = Path(mmpose.__file__).parent / ".mim" / "configs"
matches = sorted(root.rglob(os.environ["CONFIG_NAME"]))
if not matches:
    raise SystemExit(f"{os.environ['CONFIG_NAME']} not found under {root}")
out = Path(os.environ["OUT_DIR"]) / "hrnet_w32_wholebody_256x192.py"
# dump() resolves the _base_ chain, so the copy works outside mmpose's config tree.
Config.fromfile(str(matches[0])).dump(str(out))
print(f"config: {out}")
EOF

CKPT="$OUT_DIR/hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth"
if [ -f "$CKPT" ]; then
    say "checkpoint found: $CKPT"
else
    say "now copy the checkpoint to: $CKPT"
fi
echo "Use it as: MMPoseWholeBody('$OUT_DIR/hrnet_w32_wholebody_256x192.py', '$CKPT')"
