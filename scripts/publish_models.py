"""Publish the model folders a serve config names to a shared location (its ``models_uri``).

Each folder is copied file by file, then its ``manifest.json`` (every file's SHA-256) is written
last: a node that finds the manifest finds every file, and checks each one when it copies the
folder into its cache (``PipelineConfig.localized``). Re-publishing a changed model writes a new
manifest, hence a new cache entry on every node. Example::

    python scripts/publish_models.py --config configs/serve/cluster.yaml s3://my-bucket/slp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slp_pipeline.config import load_serve_config, pipeline_config
from slp_pipeline.stages import is_skeleton
from slp_pipeline.store import Store

ROOT = Path(__file__).resolve().parents[1]


def model_paths(config_path: Path) -> list[str]:
    """The relative model paths of a serve config (what models_uri must hold)."""
    config = pipeline_config(load_serve_config(config_path, gpus=0))
    paths = [*config.text2pose.values(), *config.renderers.values(), config.pose_estimator or ""]
    return sorted({p for p in paths if p and not is_skeleton(p) and not Path(p).is_absolute()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", help="the models_uri to publish to (a folder or fsspec URL)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/serve/cpu.yaml")
    parser.add_argument("--root", type=Path, default=ROOT, help="where the model paths start")
    args = parser.parse_args()
    store = Store(args.uri)
    for path in model_paths(args.config):
        if not (args.root / path).is_dir():
            print(f"error: {args.root / path} is not a model folder", file=sys.stderr)
            return 2
        manifest = store.put_folder(args.root / path, path)
        print(f"{store.url(path)}: {len(manifest.files)} files, digest {manifest.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
