"""The ``slp`` command line. Each subcommand lives in its own module of this package and
registers itself here.

Errors a user can cause (bad paths, corrupt media, bad arguments) are reported as one line on
stderr with exit code 2 -- never a traceback. A training stopped by Ctrl-C or SIGTERM (after
writing its checkpoint) is one line saying where the checkpoint is, with exit code 128 + the
signal: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import argparse
import sys

from integrations import cli as cli_caption
from pgmm.training.common import TrainingStopped
from slp_pipeline import synthesize
from slp_pipeline.cli import data, demo, eval, export, pose, serve, text2pose, train

# ImportError: an optional extra that is missing or broken (its message says which, and how
# to install it).
USER_ERRORS = (FileNotFoundError, ValueError, PermissionError, IsADirectoryError, ImportError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slp", description="Sign language production: text -> pose -> PGMM -> video."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cli_caption.register(sub, synthesize.caption_renderer)  # integrations is handed the renderer
    for module in (data, demo, eval, export, pose, serve, train):
        module.register(sub)
    text2pose.register_tools(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"slp: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"slp: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("slp: interrupted", file=sys.stderr)
        return 130
