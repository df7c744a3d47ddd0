"""``slp synthesize``, ``slp serve`` and ``slp signers``: the serving side of the ``slp`` command.

All three read the same serve config (``configs/serve/cpu.yaml`` by default), so a sentence
rendered on the command line looks exactly like one rendered by the service.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pgmm.console import quiet_native_logs
from pgmm.pose.sequence import PoseSequence
from pgmm.training.adapt import AdaptConfig
from slp_pipeline.auth import check_exposure
from slp_pipeline.config import DEFAULT_CONFIG, PipelineConfig, load_serve_config, pipeline_config
from slp_pipeline.signers import (
    BUILTIN_SIGNERS,
    MAX_UPLOAD_BYTES,
    STORED_SIZE,
    SignerRegistry,
    UploadTooLarge,
    check_name,
)
from slp_pipeline.stages import is_skeleton, resolve_device, upload_pose_estimator
from slp_pipeline.synthesize import MAX_DRIVING_SECONDS, Synthesizer


def _render_options(parser: argparse.ArgumentParser, fps_default: str, out: str) -> None:
    """The options ``slp synthesize`` and ``slp animate`` share."""
    parser.add_argument("--signer", default="default", help="a registered signer")
    parser.add_argument("--renderer", help="renderer name from the config (default: its default)")
    parser.add_argument("--fps", type=float, help=f"output frame rate (default: {fps_default})")
    parser.add_argument("-o", "--out", type=Path, default=Path(out))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser("synthesize", help="render one sentence to an mp4, without Ray")
    synth.add_argument("text", help="the sentence to sign")
    synth.add_argument("--lang", default="de", help="language of the text (de, zh)")
    _render_options(synth, "text2pose's", "outputs/sign.mp4")
    synth.set_defaults(func=run_synthesize)

    animate = sub.add_parser(
        "animate",
        help="a signer performs the motion of a driving video (the paper's setting), without Ray",
        description="Label the driving video with MediaPipe Holistic (the 'real' extra), retarget "
        "the poses onto the signer's body and render them. A .pose or .npz file of whole-body "
        "poses can stand in for the video (no labelling).",
    )
    animate.add_argument("driving", type=Path, help="driving video, frame folder, .pose or .npz")
    animate.add_argument(
        "--max-seconds", type=float, default=MAX_DRIVING_SECONDS, help="refuse longer clips"
    )
    _render_options(animate, "the driving clip's", "outputs/animate.mp4")
    animate.set_defaults(func=run_animate)

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
    adapt = actions.add_parser(
        "adapt",
        parents=[common],
        help="fine-tune the renderer on a short clip of a real person and register them",
        description="Label the clip with MediaPipe, fine-tune the config's default PGMM on its "
        "frames (the last 20%% held out for validation and early stopping) and register the "
        "signer with its own weights. Resumable: run the same command again to continue.",
    )
    adapt.add_argument("clip", type=Path, help="video of the signer (a few seconds or more)")
    adapt.add_argument("--name", required=True)
    adapt.add_argument("--steps", type=int, default=AdaptConfig.steps)
    adapt.add_argument("--device", default="auto", help="auto | cpu | cuda")
    adapt.add_argument(
        "--work", type=Path, help="resumable work folder (default outputs/adapt/NAME)"
    )
    remove = actions.add_parser("remove", parents=[common], help="delete a signer")
    remove.add_argument("name")
    signers.set_defaults(func=run_signers)


def _config(path: Path) -> PipelineConfig:
    """The serve config with models on this machine's disk (copied from ``models_uri`` once
    and verified, when the config names one), as every Serve replica sees them."""
    return pipeline_config(load_serve_config(path)).resolved().localized()


def _rendering(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`_render_options` as keyword arguments of :class:`Synthesizer`'s methods."""
    return dict(signer=args.signer, renderer=args.renderer, fps=args.fps, progress=not args.quiet)


def run_synthesize(args: argparse.Namespace) -> int:
    synthesizer = Synthesizer(_config(args.config))
    print(synthesizer.synthesize(args.text, args.lang, args.out, **_rendering(args)))
    return 0


def run_animate(args: argparse.Namespace) -> int:
    if args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be > 0, got {args.max_seconds}")
    with quiet_native_logs():  # MediaPipe's C++ logging would bury the progress bar
        out = Synthesizer(_config(args.config)).animate(
            args.driving, args.out, max_seconds=args.max_seconds, **_rendering(args)
        )
    print(out)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    # Ray Serve takes seconds to import; every other slp command should not pay for it.
    from slp_pipeline.serve_app import run_from_config

    serve_config = load_serve_config(args.config)
    http = serve_config.get("http_options") or {}
    host, port = str(http.get("host", "127.0.0.1")), http.get("port", 8000)
    keys = pipeline_config(serve_config).key_policy()
    check_exposure(host, keys)  # a public address without a key: one line, before Ray starts
    print(f"starting Ray Serve for http://{host}:{port}/ (Ctrl-C stops it)")
    print(keys.describe())
    run_from_config(serve_config, blocking=True)
    return 0


def run_signers(args: argparse.Namespace) -> int:
    config = _config(args.config)
    registry = SignerRegistry(config.signers_dir, max_signers=config.max_signers)
    if args.action == "list":
        for row in registry.list():
            print(json.dumps(row))
    elif args.action == "add":
        estimator = upload_pose_estimator(config.upload_poses, config.pose_estimator)
        if estimator is None:
            raise ValueError(f"{args.config} configures no pose_estimator, needed to add signers")
        if args.image.stat().st_size > MAX_UPLOAD_BYTES:  # before reading it into memory
            raise UploadTooLarge(f"{args.image} is larger than {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
        with quiet_native_logs():  # the default estimator is MediaPipe's
            person = registry.add(args.name, args.image.read_bytes(), estimator)
        print(f"added signer {person.name!r} to {config.signers_dir}")
    elif args.action == "adapt":
        with quiet_native_logs():  # MediaPipe labels the clip and scores the result
            _adapt(args, config, registry)
    else:
        registry.delete(args.name)
        print(f"removed signer {args.name!r}")
    return 0


def _adapt(args: argparse.Namespace, config: PipelineConfig, registry: SignerRegistry) -> None:
    from pgmm.models.pgmm import PGMM
    from pgmm.models.pose_estimator import HRNetLite
    from pgmm.training.adapt import adapt_signer, source_signer
    from pgmm.video import probe

    check_name(args.name)
    if args.name in BUILTIN_SIGNERS:
        raise ValueError(f"signer {args.name!r} is built in; choose another name")
    probe(args.clip)  # an unreadable clip fails here, before any model is loaded
    base_dir = config.renderers[config.default_renderer]
    if is_skeleton(base_dir):
        raise ValueError(f"the default renderer of {args.config} is the skeleton: no PGMM to adapt")
    device = str(resolve_device(args.device))
    work = args.work or Path("outputs") / "adapt" / args.name
    estimator = HRNetLite.from_pretrained(config.pose_estimator) if config.pose_estimator else None
    report = adapt_signer(
        args.clip,
        PGMM.from_pretrained(base_dir, map_location=device),
        work,
        config=AdaptConfig(steps=args.steps),
        estimator=estimator,
        device=device,
    )
    labels = PoseSequence.load(work / "labels.npz")
    image, pose = source_signer(args.clip, labels, STORED_SIZE)
    meta = {
        "source": f"adapted on {args.clip.name}",
        "renderer": config.default_renderer,
        "report": f"{work / 'report.json'}",
    }
    registry.add_adapted(args.name, image, pose, work / "train" / "model", meta)
    b, a = report["before"], report["after"]
    print(
        f"adapted signer {args.name!r} in {report['train_seconds'] / 60:.1f} min "
        f"({report['steps']} steps): held-out L1 {b['l1']:.4f} -> {a['l1']:.4f}, "
        f"SSIM {b['ssim']:.3f} -> {a['ssim']:.3f}; contact sheet {work / 'contact_sheet.png'}"
    )
