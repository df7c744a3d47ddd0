"""``slp synthesize``, ``slp serve`` and ``slp signers``: the serving side of the ``slp`` command.

All three read the same serve config (``configs/serve/cpu.yaml`` by default), so a sentence
rendered on the command line looks exactly like one rendered by the service.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slp_pipeline.config import DEFAULT_CONFIG, PipelineConfig, load_serve_config, pipeline_config
from slp_pipeline.signers import SignerRegistry
from slp_pipeline.stages import PoseEstimatorStage
from slp_pipeline.synthesize import Synthesizer


def register(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser("synthesize", help="render one sentence to an mp4, without Ray")
    synth.add_argument("text", help="the sentence to sign")
    synth.add_argument("--lang", default="de", help="language of the text (de, zh)")
    synth.add_argument("--signer", default="default", help="a registered signer")
    synth.add_argument("--renderer", help="renderer name from the config (default: its default)")
    synth.add_argument("--fps", type=float, help="output frame rate (default: text2pose's)")
    synth.add_argument("-o", "--out", type=Path, default=Path("outputs/sign.mp4"))
    synth.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synthesize)

    serve_cmd = sub.add_parser("serve", help="run the Ray Serve graph (blocks until Ctrl-C)")
    serve_cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    serve_cmd.set_defaults(func=run_serve)

    signers = sub.add_parser("signers", help="list, add or remove signers")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    actions = signers.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="print the signers as JSON lines")
    add = actions.add_parser("add", parents=[common], help="register a signer from an image")
    add.add_argument("image", type=Path)
    add.add_argument("--name", required=True)
    remove = actions.add_parser("remove", parents=[common], help="delete a signer")
    remove.add_argument("name")
    signers.set_defaults(func=run_signers)


def _config(path: Path) -> PipelineConfig:
    return pipeline_config(load_serve_config(path)).resolved()


def run_synthesize(args: argparse.Namespace) -> int:
    out = Synthesizer(_config(args.config)).synthesize(
        args.text,
        args.lang,
        args.out,
        signer=args.signer,
        renderer=args.renderer,
        fps=args.fps,
        progress=not args.quiet,
    )
    print(out)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    # Ray Serve takes seconds to import; every other slp command should not pay for it.
    from slp_pipeline.serve_app import run_from_config

    serve_config = load_serve_config(args.config)
    http = serve_config.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), http.get("port", 8000)
    print(f"starting Ray Serve for http://{host}:{port}/ (Ctrl-C stops it)")
    run_from_config(serve_config, blocking=True)
    return 0


def run_signers(args: argparse.Namespace) -> int:
    config = _config(args.config)
    registry = SignerRegistry(config.signers_dir)
    if args.action == "list":
        for row in registry.list():
            print(json.dumps(row))
    elif args.action == "add":
        if not config.pose_estimator:
            raise ValueError(f"{args.config} configures no pose_estimator, needed to add signers")
        data = args.image.read_bytes()
        person = registry.add(args.name, data, PoseEstimatorStage.load(config.pose_estimator))
        print(f"added signer {person.name!r} ({config.signers_dir}/{person.name})")
    else:
        registry.delete(args.name)
        print(f"removed signer {args.name!r}")
    return 0
