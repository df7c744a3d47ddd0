"""``slp pose ...``: label real video with keypoints (MediaPipe Holistic, offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pgmm.console import quiet_native_logs
from pgmm.pose.sequence import PoseSequence

SUFFIXES = (".pose", ".npz")


def register(sub: argparse._SubParsersAction) -> None:
    pose = sub.add_parser("pose", help="pose labels of real video").add_subparsers(
        dest="pose_command", required=True
    )
    extract = pose.add_parser(
        "extract",
        help="label a video with whole-body keypoints (MediaPipe Holistic)",
        description="Run MediaPipe Holistic (offline) on every frame and save COCO-WholeBody "
        "keypoints: .pose (pose-format, pixel coordinates) or .npz (our PoseSequence).",
    )
    extract.add_argument("video", type=Path, help="video file or folder of frame images")
    extract.add_argument("-o", "--out", type=Path, required=True, help="output .pose or .npz")
    extract.add_argument("--max-frames", type=int, default=None, help="label only the first N")
    extract.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from pgmm.pose.mediapipe_labels import label_video

    if args.out.suffix not in SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(SUFFIXES)}, got {args.out.name!r}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    with quiet_native_logs():  # MediaPipe's C++ logging would bury the progress bar
        pose: PoseSequence = label_video(args.video, max_frames=args.max_frames)
    pose.save(args.out)  # .pose or .npz, by the suffix
    found = int((pose.confidence[:, 5:7] > 0).all(axis=1).sum())
    print(f"{args.out}: {len(pose)} frames at {pose.fps:g} fps, a person in {found}")
    return 0
