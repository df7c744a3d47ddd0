"""``slp caption``: sign the captions of a video, as picture-in-picture or a separate track.

    slp caption talk.mp4 --captions talk.vtt -o talk.signed.mp4
    slp caption talk.mp4 --captions talk.srt -o signs.mp4 --captions-only --timing-log t.json

Registered by :mod:`slp_pipeline.cli` with ``register(sub, load_renderer)``: the command is
handed the function that builds the renderer, so this package never imports the service that
uses it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

from integrations.captions import LANGUAGES, load_captions
from integrations.track import CORNERS, SignRenderer, render_pip, render_sign_track
from pgmm.video import probe

#: ``load_renderer(signer, models_dir)``: the renderer that signs the cues.
RendererLoader = Callable[[str, Path], SignRenderer]


def register(sub: argparse._SubParsersAction, load_renderer: RendererLoader) -> None:
    cap = sub.add_parser(
        "caption",
        help="add a sign-language track (picture-in-picture) to a captioned video",
        description="Sign the cues of an SRT/WebVTT file in time with a video; see "
        "docs/captions.md for the timing rules.",
    )
    cap.add_argument("input", type=Path, help="source video (its audio is copied bit-exact)")
    cap.add_argument("--captions", type=Path, required=True, help=".srt or .vtt file (UTF-8)")
    cap.add_argument("-o", "--out", type=Path, required=True, help="output .mp4/.mov/.mkv")
    cap.add_argument("--signer", default="default", help="registered signer name")
    cap.add_argument("--models-dir", type=Path, default=Path("models"), help="trained models")
    cap.add_argument(
        "--lang", choices=LANGUAGES, help="language of the captions (default: from the script)"
    )
    cap.add_argument("--pip", choices=CORNERS, default="bottom-right", help="corner of the signer")
    cap.add_argument("--scale", type=float, default=0.3, help="signer width / video width")
    cap.add_argument("--margin", type=int, default=16, help="pixels from the video's edges")
    cap.add_argument(
        "--captions-only",
        action="store_true",
        help="write only the sign video (the source's length, at the signer's frame rate)",
    )
    cap.add_argument("--timing-log", type=Path, help="write the per-cue timing log as JSON")
    cap.add_argument("--quiet", action="store_true", help="no progress bars")
    cap.set_defaults(func=partial(run_caption, load_renderer=load_renderer))


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Caption and timing warnings as one line each, without the source line of the warning."""
    print(f"slp: warning: {message}", file=sys.stderr)


def run_caption(args: argparse.Namespace, load_renderer: RendererLoader) -> int:
    if not args.input.is_file():
        raise FileNotFoundError(2, "No such file", str(args.input))
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        cues = load_captions(args.captions, args.lang)
        renderer = load_renderer(args.signer, args.models_dir)
        progress = not args.quiet
        if args.captions_only:
            info = probe(args.input)
            log = render_sign_track(
                cues, renderer, info.num_frames / info.fps, args.out, args.timing_log, progress
            )
        else:
            log = render_pip(
                args.input,
                cues,
                renderer,
                args.out,
                corner=args.pip,
                scale=args.scale,
                margin=args.margin,
                timing_log=args.timing_log,
                progress=progress,
            )
    placed = sum(entry["action"] != "dropped" for entry in log)
    print(f"{args.out}: {placed}/{len(cues)} cues signed")
    return 0
