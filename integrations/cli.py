"""``slp caption``: sign the captions of a video, as picture-in-picture or a separate track.

    slp caption talk.mp4 --captions talk.vtt -o talk.signed.mp4
    slp caption talk.mp4 --captions talk.srt -o signs.mp4 --captions-only --timing-log t.json

Register with ``integrations.cli.register(sub)`` in :mod:`slp_pipeline.cli`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from integrations.captions import LANGUAGES, load_captions
from integrations.track import CORNERS, SignRenderer, render_pip, render_sign_track
from pgmm.video import probe


def register(sub: argparse._SubParsersAction) -> None:
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
    cap.set_defaults(func=run_caption)


def load_renderer(signer: str, models_dir: Path) -> SignRenderer:
    """The project's in-process renderer for captions, imported only when it is needed (it
    loads torch and the models)."""
    from slp_pipeline.synthesize import caption_renderer

    return caption_renderer(signer, models_dir)


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Caption and timing warnings as one line each, without the source line of the warning."""
    print(f"slp: warning: {message}", file=sys.stderr)


def run_caption(args: argparse.Namespace) -> int:
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
