"""Our MediaPipe labels against the labels shipped with the real clips (docs/results.md).

* How2Sign clip, 1280x720: DWPose labels for every frame (same 135 frames).
* How2Sign clip, 480x480: DWPose labels at 24 fps (97 files) for a 30 fps video (121 frames);
  DWPose frame ``i`` is matched to video frame ``round(i * 30 / 24)`` (same 4.04 s).
* ASL "what is your name": a MediaPipe Holistic ``.pose`` made elsewhere (same 107 frames):
  a check that our mapping and settings reproduce MediaPipe's own output.

Run: ``python scripts/label_agreement.py`` (about 1 min on 2 CPU cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pgmm.pose.agreement import PARTS, part_distances
from pgmm.pose.dwpose import load_dwpose_folder
from pgmm.pose.mediapipe_labels import label_video
from pgmm.pose.sequence import PoseSequence
from pgmm.report import md_table

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video"


def main() -> None:
    h2s = VIDEO / "how2sign-signer"
    asl = VIDEO / "asl-what-is-your-name"
    rows = []
    for name, video, reference, aspect in (
        ("How2Sign 1280x720 vs DWPose", h2s / "signer_1280x720.mp4", "dw1280", 1280 / 720),
        ("How2Sign 480x480 vs DWPose", h2s / "signer_480.mp4", "dw480", 1.0),
        ("ASL 320x240 vs shipped MediaPipe .pose", asl / "what-is-your-name.mp4", "pose", 4 / 3),
    ):
        ours = label_video(video, progress=False)
        if reference == "dw1280":
            ref = load_dwpose_folder(h2s / "dwpose_1280x720").data
            labels = ours.data
        elif reference == "dw480":
            ref = load_dwpose_folder(h2s / "dwpose_480").data
            index = np.minimum(np.round(np.arange(len(ref)) * ours.fps / 24.0), len(ours) - 1)
            labels = ours.data[index.astype(int)]
        else:
            ref = PoseSequence.load_pose(asl / "what-is-your-name.pose").data
            labels = ours.data
        n = min(len(labels), len(ref))
        rows.append((name, n, part_distances(labels[:n], ref[:n], aspect)))
    cells = [
        [name, n, *(f"{p['mean']:.3f} / {p['median']:.3f}" for p in parts.values())]
        for name, n, parts in rows
    ]
    print("mean / median distance in shoulder widths\n")
    print(md_table(["clip", "frames", *PARTS], cells))
    out = ROOT / "outputs" / "label_agreement.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({name: parts for name, _, parts in rows}, indent=2))


if __name__ == "__main__":
    main()
