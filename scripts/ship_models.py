"""Copy trained model folders into ``models/`` (what the package and `make demo` use).

Large weight files are stored as float16: the shipped models must fit in the repository
(< 80 MiB in all), and every loader copies weights into its float32 parameters
(``load_state_dict`` casts), so inference is unchanged apart from the rounding of the weights
themselves (relative 5e-4). Small files stay float32. Folders are replaced, never piled up.
``--int8`` stores the weight matrices of the named folders as int8 with one scale per output
channel instead (half of float16; :func:`pgmm.checkpoint.quantize_int8`), for a model whose card
reports its scores as stored; ``--int8-modules`` limits that to some top-level modules.

Example (the commands behind models/ are in each MODEL_CARD.md)::

    python scripts/ship_models.py pgmm/full-small=outputs/ablation800/full/model \\
        pose_estimator=outputs/runs/pose_estimator_aug/model text2pose/de=outputs/t2p/de \\
        recognizer/de=outputs/runs/recognizer_de/model
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pgmm.checkpoint import quantize_int8

ROOT = Path(__file__).resolve().parents[1]
HALF_ABOVE_BYTES = 2**20  # only P_e (0.7 MB) stays float32
KEEP = ("MODEL_CARD.md",)  # hand-written files that survive a re-ship


def ship(
    name: str,
    source: Path,
    models: Path,
    int8: bool = False,
    int8_modules: tuple[str, ...] | None = None,
) -> int:
    if not source.is_dir():
        raise SystemExit(f"not a model folder: {source}")
    target = models / name
    kept = {k: (target / k).read_text() for k in KEEP if (target / k).is_file()}
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoints", "*.tmp", ".*"))
    for path in tmp.rglob("*.safetensors"):
        if path.stat().st_size > HALF_ABOVE_BYTES:
            state = load_file(str(path))
            if any(v.dtype == torch.uint8 for v in state.values()):
                # Already packed by its own model (the gloss dictionary's uint8 clips): its
                # float tensors are part of that format (float32 steps), copied as they are.
                continue
            if int8:
                state = quantize_int8(state, int8_modules)
            half = {
                k: v.half() if v.is_floating_point() and v.dtype == torch.float32 else v
                for k, v in state.items()
            }
            stored = "int8" if int8 else "float16"
            save_file(half, str(path), metadata={"format": "pt", "stored_as": stored})
    for k, text in kept.items():
        (tmp / k).write_text(text)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("items", nargs="+", help="NAME=SOURCE_FOLDER, e.g. pgmm/full-small=DIR")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--int8", action="store_true", help="store these folders' weight matrices as int8"
    )
    parser.add_argument(
        "--int8-modules", nargs="+", metavar="MODULE",
        help="with --int8: only these top-level modules (e.g. dense_motion kp_detector bg_motion)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.int8_modules and not args.int8:
        parser.error("--int8-modules needs --int8")
    modules = tuple(args.int8_modules) if args.int8_modules else None
    for item in args.items:
        name, _, source = item.partition("=")
        size = ship(name, Path(source), args.models, int8=args.int8, int8_modules=modules)
        print(f"models/{name}: {size / 2**20:.1f} MiB")
    total = sum(p.stat().st_size for p in args.models.rglob("*") if p.is_file())
    print(f"models/ total: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
