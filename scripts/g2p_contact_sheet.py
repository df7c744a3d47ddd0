"""Contact sheet of gloss -> pose output: old NAR G2P | shipped dictionary G2P | target (issue 15).

Why this picture exists: the NAR G2P (``outputs/nar/models/text2pose/<lang>/g2p``) is closest to
the targets frame by frame, yet a recognizer reads back few of its glosses, because its L1 loss
averages the signs into small, smooth motion near the body -- hands that hover where every sign
passes and never take any sign's shape. The dictionary G2P shipped in
``models/text2pose/<lang>/g2p`` stitches per-gloss clips and so keeps each sign's hand position
and handshape. A row of stick figures per model, sampled at the same relative times as the
ground-truth canonical poses, shows that difference at a glance where a WER table cannot.

Each sentence gets three rows (NAR, dictionary, target), time runs across the columns, each
cell is captioned with the frame it shows, and the target's cells also with the gloss signed
there. The view is zoomed onto the signing space: hands at rest below the frame fall off the
image, as they do in the targets.

Regenerate the images in ``docs/images``::

    python scripts/g2p_contact_sheet.py --lang de --out docs/images/g2p_de_contact_sheet.png
    python scripts/g2p_contact_sheet.py --lang zh --out docs/images/g2p_zh_contact_sheet.png

Without ``--sentence-index`` the first test sentence with 4-8 glosses is drawn.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pgmm.checkpoint import CONFIG_NAME
from pgmm.pose.sequence import PoseSequence
from pgmm.pose.skeleton import draw_skeleton
from pgmm.video import contact_sheet
from text2pose.baselines import canonical_sequence
from text2pose.data import G2PData, build_g2p_data
from text2pose.pipeline import load_g2p

CACHE = "outputs/cache/g2p"
SPLIT = "test"
# Canonical-frame box (x0, y0, x1, y1) drawn in each cell: the signing space. Of the de and zh
# test targets' hand points above y = 0.8, all but 0.02 % lie inside; hands lowered to rest leave.
# Square pixels: the cell's aspect ratio is the box's.
VIEW = (0.15, 0.04, 0.85, 0.90)
READABLE_GLOSSES = (4, 8)  # default sentence: the first with this many glosses (inclusive)
MARGIN = 150  # left label column, px
TITLE_H = 26
CAPTION_H = 36
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
DIM = (150, 150, 150)


@dataclass(frozen=True)
class SheetRow:
    """One row of the sheet: a label and the pose sequence it samples."""

    label: str
    poses: PoseSequence


@dataclass(frozen=True)
class Sentence:
    """A test sentence: its id, gold glosses, frames per gloss and the canonical target."""

    id: str
    glosses: tuple[str, ...]
    durations: np.ndarray
    target: PoseSequence


def default_index(data: G2PData) -> int:
    """The first sentence whose gloss count lies in :data:`READABLE_GLOSSES` (else the first)."""
    low, high = READABLE_GLOSSES
    return next((i for i, g in enumerate(data.glosses) if low <= len(g) <= high), 0)


def load_sentence(data: G2PData, index: int) -> Sentence:
    if not 0 <= index < len(data):
        raise ValueError(f"sentence index {index} outside 0..{len(data) - 1}")
    target = canonical_sequence(data.poses[index].astype(np.float32), data.labelled)
    return Sentence(data.ids[index], data.glosses[index], data.durations[index], target)


def sample_frames(length: int, times: np.ndarray) -> np.ndarray:
    """Frame indices at relative times in [0, 1] of a ``length``-frame sequence."""
    return np.rint(times * (length - 1)).astype(np.int64)


def gloss_at(durations: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Index of the gloss signed at each frame, from the frames per gloss."""
    return np.searchsorted(np.cumsum(durations), frames, side="right").clip(0, len(durations) - 1)


def cell_size(cell_width: int) -> tuple[int, int]:
    """``(height, width)`` of a cell ``cell_width`` px wide showing :data:`VIEW`."""
    x0, y0, x1, y1 = VIEW
    return round(cell_width * (y1 - y0) / (x1 - x0)), cell_width


def draw_cells(seq: PoseSequence, frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stick figures of ``frames`` of a canonical sequence, zoomed onto :data:`VIEW`."""
    x0, y0, x1, y1 = VIEW
    points = seq.data[frames].astype(np.float64)
    points[..., :2] = (points[..., :2] - (x0, y0)) / (x1 - x0, y1 - y0)
    return draw_skeleton(points, size, seq.layout, BACKGROUND)


def drawable(text: str) -> bool:
    """Whether PIL's built-in font can draw ``text`` (it has Latin glyphs only, no CJK)."""
    return text.isascii()


def row_image(
    row: SheetRow,
    times: np.ndarray,
    size: tuple[int, int],
    font: ImageFont.FreeTypeFont,
    captions: Sequence[str],
) -> Image.Image:
    """Label margin + one cell per relative time, each with a caption strip under it."""
    frames = sample_frames(len(row.poses), times)
    cells = contact_sheet(draw_cells(row.poses, frames, size), cols=len(frames))
    h, w = cells.shape[:2]
    img = Image.new("RGB", (MARGIN + w, h + CAPTION_H), BACKGROUND)
    img.paste(Image.fromarray(cells), (MARGIN, 0))
    draw = ImageDraw.Draw(img)
    draw.multiline_text((8, h // 2 - 20), row.label, fill=TEXT, font=font, spacing=4)
    for k, (frame, extra) in enumerate(zip(frames, captions, strict=True)):
        x = MARGIN + k * size[1]
        draw.line([(x, 0), (x, h + CAPTION_H)], fill=(60, 60, 60))
        draw.multiline_text(
            (x + 4, h + 1), f"f{frame}/{len(row.poses)}{extra}", fill=DIM, font=font
        )
    return img


def sentence_block(
    sentence: Sentence, rows: Sequence[SheetRow], columns: int, cell_width: int
) -> Image.Image:
    """Title strip (id and glosses) over the rows, all sampled at the same relative times."""
    font = ImageFont.load_default(size=13)
    title_font = ImageFont.load_default(size=15)
    # Mid-points of equal slices: the first and last frames are rest holds in every row.
    times = (np.arange(columns) + 0.5) / columns
    size = cell_size(cell_width)
    target_glosses = gloss_at(sentence.durations, sample_frames(len(sentence.target), times))
    glosses = " ".join(sentence.glosses)
    if drawable(glosses):
        title = f"{sentence.id}: {glosses}"
        gloss_captions = [f"\n#{g + 1} {sentence.glosses[g]}" for g in target_glosses]
    else:  # e.g. Chinese: name the glosses by position, the command prints them
        title = f"{sentence.id}: {len(sentence.glosses)} glosses (#1-#{len(sentence.glosses)})"
        gloss_captions = [f" #{g + 1}" for g in target_glosses]
    images = [
        row_image(row, times, size, font,
                  gloss_captions if row.poses is sentence.target else [""] * columns)
        for row in rows
    ]  # fmt: skip
    width = images[0].width
    block = Image.new("RGB", (width, TITLE_H + sum(i.height for i in images)), BACKGROUND)
    ImageDraw.Draw(block).text((8, 5), title, fill=TEXT, font=title_font)
    y = TITLE_H
    for img in images:
        block.paste(img, (0, y))
        y += img.height
        ImageDraw.Draw(block).line([(0, y - 1), (width, y - 1)], fill=(90, 90, 90))
    return block


def build_sheet(
    lang: str,
    indices: Sequence[int] | None,
    columns: int,
    cell_width: int,
    old_dir: Path,
    new_dir: Path,
    cache_dir: str | Path = CACHE,
) -> tuple[Image.Image, list[Sentence]]:
    """The whole sheet (one block per sentence, stacked) and the sentences drawn."""
    from pgmm.data.synth.signer import SynthSigner

    models = []
    for label, folder in (("NAR G2P\n(old)", old_dir), ("dictionary\nG2P (shipped)", new_dir)):
        if not (folder / CONFIG_NAME).is_file():
            raise ValueError(f"no G2P model in {folder} (missing {CONFIG_NAME})")
        model = load_g2p(folder)
        if model.config.language != lang:
            raise ValueError(f"the G2P in {folder} signs {model.config.language!r}, not {lang!r}")
        models.append((label, model))
    data = build_g2p_data(SynthSigner(languages=[lang]), SPLIT, lang, cache_dir)
    sentences = [load_sentence(data, i) for i in (indices or [default_index(data)])]
    blocks = []
    for sentence in sentences:
        rows = [SheetRow(label, model.generate([sentence.glosses])[0]) for label, model in models]
        rows.append(SheetRow("target\n(canonical)", sentence.target))
        blocks.append(sentence_block(sentence, rows, columns, cell_width))
    sheet = Image.new("RGB", (blocks[0].width, sum(b.height for b in blocks)), BACKGROUND)
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height
    return sheet, sentences


def main(argv: Sequence[str] | None = None) -> int:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lang", choices=("de", "zh"), default="de")
    parser.add_argument("--sentence-index", type=int, nargs="+", help="test sentence(s) to draw")
    parser.add_argument("--columns", type=int, default=9, help="frames per row")
    parser.add_argument(
        "--cell-width", type=int, default=184, help="px per cell; fingers need >= 128"
    )
    parser.add_argument("--old", type=Path, help="NAR G2P folder")
    parser.add_argument("--new", type=Path, help="dictionary G2P folder")
    parser.add_argument("--cache", default=CACHE, help="G2P data cache folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.columns < 1:
        parser.error(f"--columns must be >= 1, got {args.columns}")
    if args.cell_width < 32:
        parser.error(f"--cell-width must be >= 32, got {args.cell_width}")
    old = args.old or Path(f"outputs/nar/models/text2pose/{args.lang}/g2p")
    new = args.new or Path(f"models/text2pose/{args.lang}/g2p")
    try:
        sheet, sentences = build_sheet(
            args.lang, args.sentence_index, args.columns, args.cell_width, old, new, args.cache
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in sentences:
        print(f"{s.id} ({len(s.glosses)} glosses, {len(s.target)} frames): {' '.join(s.glosses)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
