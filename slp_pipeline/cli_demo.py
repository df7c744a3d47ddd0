"""``slp demo``: the main job.

Until the Ray Serve graph lands, the demo renders one German (PHOENIX-2014T) and one Chinese
(CSL-Daily) test sentence with SynthSigner -- the corpus every model of the project trains on --
and writes an mp4, the pose file and a skeleton-overlay preview for each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose.skeleton import draw_skeleton
from pgmm.video import write_video


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="render a German and a Chinese sentence to mp4")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--size", type=int, default=256)
    demo.add_argument("--data-dir", type=Path, help="shared data folder (holds corpora/)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    signer = SynthSigner(data_dir=args.data_dir)
    for language in ("de", "zh"):
        sentence = signer.sentences("test", language)[0]
        pose = signer.pose(sentence)
        identity = signer.identity_for(sentence)
        frames = np.stack(list(signer.render(pose, identity, args.size)))
        video = write_video(args.out / f"{sentence.id}.mp4", frames)
        seq = to_pose_sequence(pose, args.size)
        seq.save(args.out / f"{sentence.id}.pose")
        overlay = np.stack(
            [draw_skeleton(seq.data[t], args.size, background=frames[t]) for t in range(len(seq))]
        )
        write_video(args.out / f"{sentence.id}.skeleton.mp4", overlay)
        print(f"[{language}] {sentence.text}")
        print(f"     glosses: {' '.join(sentence.glosses)}")
        print(f"     video:   {video}  ({len(frames)} frames, {len(frames) / 25:.1f} s)")
    return 0
