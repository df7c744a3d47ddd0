"""Collect ``slp signers adapt`` reports into the before/after table of docs/results.md and
copy each contact sheet to ``docs/images/adapt_<signer>.png``.

Every row is scored on the report's *test* frames; the notes give each signer's frame ranges
(trained on / best step chosen on / scored on). Reports written before the three-way split
scored the same held-out frames that chose the best step; their notes say so.

    python scripts/adapt_report.py how2sign asl     # reads outputs/adapt/<name>/report.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pgmm.report import md_table

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("l1", "L1 ↓", "{:.4f}"),
    ("ssim", "SSIM ↑", "{:.3f}"),
    ("ke_upper_body", "KE body ↓", "{:.3f}"),
    ("ke_left_hand", "KE left hand ↓", "{:.3f}"),
    ("ke_right_hand", "KE right hand ↓", "{:.3f}"),
    ("left_hand_found", "left hand found", "{:.0%}"),
    ("right_hand_found", "right hand found", "{:.0%}"),
)


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _frames(frames: dict) -> str:
    """Which frames did what, as ``[start, stop)`` index ranges."""
    if "test" not in frames:  # a report from before the three-way split
        train, held = frames["train"], frames["holdout"]
        return (
            f"frames [0, {train}) trained on, [{train}, {train + held}) both chose the best step "
            "and were scored (predates the train/validation/test split)"
        )
    (a, b), (c, d), (e, f) = frames["train"], frames["validation"], frames["test"]
    return (
        f"frames [{a}, {b}) trained on, [{c}, {d}) chose the best step, [{e}, {f}) scored "
        "(before and after)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "adapt")
    args = parser.parse_args()
    rows, notes = [], []
    for name in args.names:
        run = args.runs / name
        report = json.loads((run / "report.json").read_text())
        for when, label in (("before", "SynthSigner PGMM (photo only)"), ("after", "adapted")):
            row = report[when]
            rows.append([name, label, *(_cell(row.get(key), fmt) for key, _, fmt in COLUMNS)])
        frames = report["frames"]
        pe = {k: f"{v:.2f}" for k, v in report.get("pe_pck", {}).items()}
        notes.append(
            f"- **{name}**: {Path(report['video']).name} at {frames['fps']:g} fps, "
            f"{_frames(frames)}; "
            f"{report['steps']} steps in {report['train_seconds'] / 60:.1f} min on "
            f"{report['device']}{' (stopped early)' if report['stopped_early'] else ''}; "
            f"our P_e on the scored frames vs MediaPipe: PCK@0.05 hands "
            f"{pe.get('hands', 'n/a')}, whole body {pe.get('whole_body', 'n/a')}"
        )
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "contact_sheet.png", images / f"adapt_{name}.png")
    header = ["signer", "model", *(c[1] for c in COLUMNS)]
    print("\n".join([md_table(header, rows), "", *notes]))


if __name__ == "__main__":
    main()
