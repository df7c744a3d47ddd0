"""Write a SynthSigner corpus to disk in a PHOENIX-2014T-like layout.

::

    OUT/
      README.md                                 what is where
      annotations/{split}.csv                   one row per video (see CSV_FIELDS)
      poses/{split}/{id}.npz                    PoseSequence, wholebody133 (full skeleton)
      poses/{split}/{id}.pgmm36.npz             PoseSequence, PGMM's 36 heatmap points
      features/fullFrame-{S}x{S}px/{split}/{id}.mp4   (or {id}/images0001.png ... with frames="png")
      preview.mp4, contact_sheet.png, index.html

Every file is written atomically and existing outputs are skipped, so an interrupted run
resumes where it stopped. Videos are rendered in worker processes (one sentence per task).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pgmm.console import progress as progress_bar
from pgmm.data.corpus import LANGUAGES, SPLITS, CorpusSentence, round_robin
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.video import contact_sheet, write_video

CSV_FIELDS = ("id", "split", "language", "signer", "identity", "gloss", "text", "num_frames")


@dataclass(frozen=True)
class GenerateConfig:
    out: Path
    videos: int | None = 20  # None = every sentence of the selected splits/languages
    sizes: tuple[int, ...] = (128,)
    splits: tuple[str, ...] = SPLITS
    languages: tuple[str, ...] = LANGUAGES
    seed: int = 0
    frames: str = "mp4"  # "mp4" | "png" | "none" (poses only)
    identity: int | None = None  # force one identity (e.g. a held-out one) for every video
    workers: int = 2
    data_dir: Path | None = None
    overwrite: bool = False
    frames_per_video: int | None = None  # override the corpus length (benchmarks, previews)


def select_sentences(signer: SynthSigner, cfg: GenerateConfig) -> list[CorpusSentence]:
    """A deterministic, evenly spread subset: every split and language is represented."""
    pools = [signer.sentences(split, lang) for lang in cfg.languages for split in cfg.splits]
    pools = [p for p in pools if p]
    if cfg.videos is None:
        return [s for p in pools for s in p]
    if cfg.videos < 1:
        raise ValueError(f"--videos must be >= 1, got {cfg.videos}")
    rng = np.random.default_rng(cfg.seed)
    shuffled = [[pool[k] for k in rng.permutation(len(pool))] for pool in pools]
    return round_robin(shuffled, cfg.videos)


def _feature_dir(out: Path, size: int, split: str) -> Path:
    return out / "features" / f"fullFrame-{size}x{size}px" / split


def _save_png_frames(folder: Path, frames: Iterable[np.ndarray]) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, 1):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG", optimize=False, compress_level=6)
        (tmp / f"images{i:04d}.png").write_bytes(buf.getvalue())
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    tmp.replace(folder)


# Worker state: the signer (lexicon) is built once per process, not once per task.
_WORKER: dict[str, SynthSigner] = {}


def _init_worker(seed: int, data_dir: Path | None, languages: Sequence[str]) -> None:
    _WORKER["signer"] = SynthSigner(seed, data_dir, languages)


def _render_one(args: tuple[CorpusSentence, GenerateConfig]) -> dict[str, str]:
    sentence, cfg = args
    if cfg.frames_per_video:
        sentence = dataclasses.replace(sentence, num_frames=cfg.frames_per_video)
    signer = _WORKER["signer"]
    ident = signer.identity_for(sentence, cfg.identity)
    pose = signer.pose(sentence, cfg.identity)
    pose_dir = cfg.out / "poses" / sentence.split
    full = pose_dir / f"{sentence.id}.npz"
    if cfg.overwrite or not full.exists():
        seq = to_pose_sequence(pose)
        compact = cfg.frames == "none"  # corpus-scale pose exports: quantised, 2.5x smaller
        seq.to_layout("pgmm36").save(pose_dir / f"{sentence.id}.pgmm36.npz", compact=compact)
        seq.save(full, compact=compact)  # last: its presence marks the poses as complete
    if cfg.frames != "none":
        for size in cfg.sizes:
            folder = _feature_dir(cfg.out, size, sentence.split)
            target = folder / (f"{sentence.id}.mp4" if cfg.frames == "mp4" else sentence.id)
            if target.exists() and not cfg.overwrite:
                continue
            frames = signer.render(pose, ident, size)
            if cfg.frames == "mp4":
                write_video(target, frames, fps=25.0, crf=16)
            else:
                _save_png_frames(target, frames)
    return {
        "id": sentence.id,
        "split": sentence.split,
        "language": sentence.language,
        "signer": sentence.signer,
        "identity": str(ident.id),
        "gloss": " ".join(sentence.glosses),
        "text": sentence.text,
        "num_frames": str(sentence.num_frames),
    }


def generate(cfg: GenerateConfig, progress: bool = True) -> list[dict[str, str]]:
    """Generate the dataset described by ``cfg``; returns the annotation rows written."""
    if cfg.frames not in ("mp4", "png", "none"):
        raise ValueError(f"frames must be mp4, png or none, got {cfg.frames!r}")
    for size in cfg.sizes:
        if size < 32 or size % 2:
            raise ValueError(f"frame size must be an even number >= 32, got {size}")
    signer = SynthSigner(cfg.seed, cfg.data_dir, cfg.languages)
    sentences = select_sentences(signer, cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    tasks = [(s, cfg) for s in sentences]
    workers = max(1, min(cfg.workers, len(tasks)))
    bar = progress_bar(total=len(tasks), desc="SynthSigner", unit="video", disable=not progress)
    rows: list[dict[str, str]] = []
    if workers == 1:
        _WORKER["signer"] = signer
        for task in tasks:
            rows.append(_render_one(task))
            bar.update()
    else:
        with ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=(cfg.seed, cfg.data_dir, cfg.languages)
        ) as pool:
            for row in pool.map(_render_one, tasks, chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()
    _write_annotations(cfg.out, rows)
    if cfg.frames != "none" and rows:
        _write_previews(cfg, signer, sentences[: min(9, len(sentences))])
    _write_readme(cfg, rows)
    return rows


def _write_annotations(out: Path, rows: list[dict[str, str]]) -> None:
    """Merge with existing annotation files, so runs over different subsets accumulate."""
    for split in sorted({r["split"] for r in rows}):
        path = out / "annotations" / f"{split}.csv"
        merged: dict[str, dict[str, str]] = {}
        if path.exists():
            with path.open(encoding="utf-8", newline="") as f:
                merged = {r["id"]: r for r in csv.DictReader(f)}
        merged.update({r["id"]: r for r in rows if r["split"] == split})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(merged[k] for k in sorted(merged))
        tmp.replace(path)


def _write_previews(cfg: GenerateConfig, signer: SynthSigner, sample: list[CorpusSentence]):
    """A 3x3 grid video of the first sentences and a contact sheet (6 frames per sentence)."""
    size = min(cfg.sizes)
    clips = []
    for s in sample:
        pose = signer.pose(s, cfg.identity)
        clips.append(
            np.stack(list(signer.render(pose, signer.identity_for(s, cfg.identity), size)))
        )
    cols = 3 if len(clips) > 4 else min(2, len(clips))
    length = max(len(c) for c in clips)

    def grid_frames():
        for t in range(length):
            tiles = [c[t % len(c)] for c in clips]
            yield contact_sheet(np.stack(tiles), cols=cols)

    write_video(cfg.out / "preview.mp4", grid_frames(), fps=25.0)
    sheet = np.concatenate([contact_sheet(c, cols=6, num=6) for c in clips[:8]], axis=0)
    tmp = cfg.out / ".contact_sheet.png.tmp"
    Image.fromarray(sheet).save(tmp, format="PNG")
    tmp.replace(cfg.out / "contact_sheet.png")


def _write_readme(cfg: GenerateConfig, rows: list[dict[str, str]]) -> None:
    size = min(cfg.sizes)
    items = []
    for r in rows[:200]:
        video = f"features/fullFrame-{size}x{size}px/{r['split']}/{r['id']}.mp4"
        player = (
            f'<video src="{video}" width="{size}" controls loop></video>'
            if cfg.frames == "mp4"
            else ""
        )
        items.append(
            f"<tr><td>{player}</td><td>{html.escape(r['id'])}<br>{r['language']} · "
            f"identity {r['identity']}</td><td>{html.escape(r['gloss'])}</td>"
            f"<td>{html.escape(r['text'])}</td></tr>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>SynthSigner</title>"
        "<h1>SynthSigner corpus</h1><video src='preview.mp4' controls loop></video>"
        "<table border=1 cellpadding=4>" + "\n".join(items) + "</table>"
    )
    (cfg.out / "index.html").write_text(page, encoding="utf-8")
    readme = f"""# SynthSigner corpus

Generated by `slp data synth` (seed {cfg.seed}); {len(rows)} videos in this run.
Procedural signers signing real PHOENIX-2014T (de) / CSL-Daily (zh) sentences, with exact poses.

- `annotations/{{split}}.csv`: {", ".join(CSV_FIELDS)}
- `poses/{{split}}/{{id}}.npz`: full skeleton (COCO-WholeBody 133), normalised coordinates
- `poses/{{split}}/{{id}}.pgmm36.npz`: the 36 points of PGMM's pose branch
- `features/fullFrame-SxSpx/{{split}}/`: rendered video ({cfg.frames}), sizes {list(cfg.sizes)}
- `preview.mp4`, `contact_sheet.png`, `index.html`: browse the corpus

Licence: the sentences come from PHOENIX-2014T (CC BY-NC-SA 3.0) and CSL-Daily (research use);
this derived corpus inherits those non-commercial terms.
"""
    (cfg.out / "README.md").write_text(readme, encoding="utf-8")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
