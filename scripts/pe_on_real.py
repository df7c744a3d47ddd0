"""Fine-tune or replace P_e on a real signer? Measure P_e on the held-out tail of a real clip.

Signer adaptation (``slp signers adapt``) drives PGMM with MediaPipe labels instead of P_e.
The alternative is to fine-tune P_e on the clip's MediaPipe labels and keep it (with L_pd).
This script measures the ingredient that choice depends on: P_e's PCK@0.05 on the clip's
held-out frames against MediaPipe, as shipped (SynthSigner only) and after fine-tuning on the
training frames of the same clip. Frames are split as adaptation splits them
(:func:`~pgmm.training.adapt.split_clip`); P_e is fine-tuned for a fixed number of steps, with
no selection on held-out frames, so it is scored on the whole held-out tail (validation and
test frames; the range is written to ``pck.json``). Uses the labels an adaptation run saved::

    python scripts/pe_on_real.py outputs/adapt/how2sign-1000 \\
        ../shared/data/video/how2sign-signer/signer_1280x720.mp4 --steps 300
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pgmm.models.pose_estimator import HRNetLite
from pgmm.pose.sequence import PoseSequence
from pgmm.training.adapt import AdaptConfig, LabelledClip, estimator_pck, split_clip
from pgmm.training.pose_estimator import train_pose_estimator

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work", type=Path, help="an adaptation work folder (has labels.npz)")
    parser.add_argument("video", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pose-estimator", type=Path, default=ROOT / "models" / "pose_estimator")
    args = parser.parse_args()
    labels = args.work / "labels.npz"
    n = len(PoseSequence.load(labels))
    split = split_clip(n, AdaptConfig.holdout)
    held_out = range(split.validation.start, split.test.stop)
    train = LabelledClip(args.video, labels, "train", 128, split.train)
    dev = LabelledClip(args.video, labels, "dev", 128, held_out)
    frames, poses = dev.load_frames(0), dev.load_poses(0).data
    shipped = HRNetLite.from_pretrained(args.pose_estimator)
    before = estimator_pck(shipped, frames, poses)
    # Fine-tuning = the trainer resuming from the shipped weights at step 0.
    run = args.work / "pe_finetune"
    start = run / "checkpoints" / "last"
    if not (start / "state.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        shipped.save_pretrained(start)
        (start / "state.json").write_text(json.dumps({"step": 0}))
    tuned = train_pose_estimator(train, run, steps=args.steps, batch_size=16, lr=5e-4)
    after = estimator_pck(tuned, frames, poses)
    result = {"held_out_frames": [held_out.start, held_out.stop], "shipped": before,
              "fine_tuned": after, "steps": args.steps}  # fmt: skip
    (run / "pck.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
