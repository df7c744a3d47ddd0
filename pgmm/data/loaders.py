"""Loaders for the PGMM training corpora in their *published* on-disk layouts.

PGMM trains on PHOENIX-2014T, CSL-Daily, LSA64 and WLASL; the project adds its own SynthSigner
corpus. Every dataset is read from the layout its authors ship (no conversion step), into one
:class:`VideoRecord` type, so samplers, metrics and the trainer never special-case a corpus.

Frames are always delivered as *square* ``S x S`` crops (PGMM works at 128^2 or 256^2): the
square comes from the dataset's person box when it has one (WLASL), otherwise from the centre
of the frame. The same crop is applied to poses so keypoints stay registered to the pixels.

Annotations are read only from plain-text files: CSL-Daily ships a ``.pkl`` as well, but
unpickling a downloaded file can execute arbitrary code, so we read ``video_map.txt`` and
``split_1.txt`` instead, which hold the same information.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pgmm.data.corpus import round_robin
from pgmm.pose.sequence import PoseSequence
from pgmm.video import VideoError, iter_frames, probe

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One sign video, whatever corpus it comes from.

    ``source`` is a video file or a folder of frame images. ``bbox`` is a person box in
    coordinates normalised to the full frame (``x0, y0, x1, y1``); ``frame_range`` is a
    0-based half-open ``(start, end)`` with ``end=None`` meaning "to the last frame".
    """

    id: str
    split: str
    source: Path
    signer: str
    gloss: str
    text: str
    language: str
    num_frames: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    frame_range: tuple[int, int | None] | None = None
    pose_path: Path | None = None


def spread_over_signers(signers: Sequence[str], n: int) -> list[int]:
    """Indices of ``n`` videos taken from every signer in turn, in corpus order.

    Why: corpora are not shuffled by signer -- the first 120 PHOENIX-2014T training sentences
    hold 5 of its 9 signers -- so "the first N videos" trains a renderer on a few appearances
    and it repaints unseen signers in theirs. Round robin over signers (each signer's own
    videos in corpus order) gives every signer a share until it runs out.
    """
    by_signer: dict[str, list[int]] = {}
    for i, signer in enumerate(signers):
        by_signer.setdefault(signer, []).append(i)
    return sorted(round_robin(list(by_signer.values()), n))


def square_crop_box(
    width: int, height: int, bbox: tuple[float, float, float, float] | None = None
) -> tuple[int, int, int]:
    """``(left, top, side)`` in pixels of the square that the loaders crop from a frame.

    Without a box: the largest centred square. With a box: a square of side
    ``max(box width, box height)`` around the box centre, shrunk to fit the frame and shifted
    inside it -- we never pad, because black borders would be learned as image content.
    """
    if bbox is None:
        cx, cy, side = width / 2, height / 2, float(min(width, height))
    else:
        x0, y0, x1, y1 = bbox
        cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
        side = max((x1 - x0) * width, (y1 - y0) * height)
    s = int(round(min(max(side, 1.0), min(width, height))))
    left = min(max(int(round(cx - s / 2)), 0), width - s)
    top = min(max(int(round(cy - s / 2)), 0), height - s)
    return left, top, s


def crop_resize(frame: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` (from :func:`square_crop_box`) out of an ``HxWx3`` frame, resize to ``size``.

    PIL widens its bicubic kernel by the scale factor when shrinking, i.e. it antialiases, which
    matters: PHOENIX/CSL frames shrink 2-4x and aliased hands lose exactly the finger detail
    PGMM is about.
    """
    left, top, side = box
    image = Image.fromarray(frame)
    resized = image.resize(
        (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
    )
    return np.asarray(resized, dtype=np.uint8)


class SignVideoDataset(Dataset):
    """Base class: a list of :class:`VideoRecord` plus frame/pose loading for one split.

    Subclasses only parse their annotation layout in :meth:`_scan`; cropping, resizing and
    pose registration live here so they are identical for every corpus.
    """

    # Class-level defaults; FrameCache takes its wrapped dataset's on the instance.
    name: str = "dataset"
    layout: str = ""  # one sentence describing the expected tree, used in errors

    def __init__(self, root: str | Path, split: str = "train", size: int = 128) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.root = Path(root)
        self.split = split
        self.size = int(size)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name} root not found: {self.root}; expected layout: {self.layout}"
            )
        self.records: list[VideoRecord] = self._scan()

    def _scan(self) -> list[VideoRecord]:
        raise NotImplementedError

    def _require(self, path: Path) -> Path:
        """Fail with the missing path *and* the layout, so a wrong ``root`` is obvious."""
        if not path.exists():
            raise FileNotFoundError(
                f"{self.name} file not found: {path}; expected layout: {self.layout}"
            )
        return path

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ frames
    def _iter_raw(self, record: VideoRecord) -> Iterator[np.ndarray]:
        """Full-resolution frames of the record's frame range (decoding stops at its end)."""
        frames = iter_frames(record.source)
        if record.frame_range is None:
            return frames
        start, end = record.frame_range
        return islice(frames, start, end)

    def frame_size(self, i: int) -> tuple[int, int]:
        """``(width, height)`` of record ``i``'s full frames, from the header (or first image)."""
        info = probe(self.records[i].source)
        return info.width, info.height

    def num_frames(self, i: int) -> int:
        """Frames of record ``i`` after its frame range, from the annotation or the container."""
        record = self.records[i]
        if record.num_frames is not None:
            return record.num_frames
        total = probe(record.source).num_frames
        if record.frame_range is None:
            return total
        start, end = record.frame_range
        stop = total if end is None else min(end, total)
        return max(0, stop - start)

    def load_frames(self, i: int, size: int | None = None) -> np.ndarray:
        """``(T, S, S, 3)`` uint8 RGB: square crop (bbox or centre), antialiased resize."""
        record = self.records[i]
        size = size or self.size
        out: list[np.ndarray] = []
        box = None
        for frame in self._iter_raw(record):
            if box is None:
                box = square_crop_box(frame.shape[1], frame.shape[0], record.bbox)
            out.append(crop_resize(frame, box, size))
        if not out:
            raise VideoError(f"{record.source}: no frames in range {record.frame_range}")
        return np.stack(out)

    def load_poses(self, i: int, size: int | None = None) -> PoseSequence | None:
        """Record ``i``'s poses in the coordinates of the *cropped* frame, or None if unlabelled.

        Poses are normalised to the full frame; re-normalising them to the crop box keeps the
        keypoint heatmaps that drive PGMM on top of the pixels they describe.
        """
        record = self.records[i]
        if record.pose_path is None:
            return None
        pose = PoseSequence.load(record.pose_path)
        if record.frame_range is not None:
            pose = pose[slice(*record.frame_range)]
        width, height = self.frame_size(i)
        left, top, side = square_crop_box(width, height, record.bbox)
        data = pose.data.copy()
        data[..., 0] = (data[..., 0] * width - left) / side
        data[..., 1] = (data[..., 1] * height - top) / side
        size = size or self.size
        return PoseSequence(data, pose.fps, pose.layout, size, size)

    def require_poses(self, i: int, size: int | None = None) -> PoseSequence:
        """:meth:`load_poses` for a caller that cannot go on without them (a labelled clip)."""
        poses = self.load_poses(i, size)
        if poses is None:
            raise ValueError(f"{self.name} video {i} ({self.records[i].id}) has no poses")
        return poses

    def load_video(self, i: int) -> tuple[np.ndarray, PoseSequence | None]:
        """Record ``i``'s frames and poses, checked to pair 1:1 (a mismatch means a stale or
        wrong pose file)."""
        frames, poses = self.load_frames(i), self.load_poses(i)
        if poses is not None and len(frames) != len(poses):
            record = self.records[i]
            raise ValueError(
                f"{record.pose_path or record.id}: {len(poses)} pose frames "
                f"but {record.source} has {len(frames)}"
            )
        return frames, poses

    def cache_key(self) -> str:
        """What the frames of this dataset depend on: a :class:`FrameCache` keeps the frames of
        different datasets (another root, split, size or video list) in different folders."""
        ids = hashlib.sha1("\n".join(r.id for r in self.records).encode()).hexdigest()
        return f"{type(self).__name__}|{self.root}|{self.split}|{self.size}|{ids}"

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        frames, poses = self.load_video(i)
        item: dict[str, Any] = {
            "id": record.id,
            "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
            "gloss": record.gloss,
            "text": record.text,
            "signer": record.signer,
            "language": record.language,
        }
        if poses is not None:
            item["poses"] = torch.from_numpy(poses.data)
        return item


class FrameCache(SignVideoDataset):
    """Another dataset whose frames are decoded (or rendered) once, then read from disk.

    Training visits each video once per epoch, and decoding an mp4 or rendering a SynthSigner
    video costs about as much as the pairs drawn from it are worth on a CPU. This wrapper writes
    each video's ``(T, S, S, 3)`` uint8 frames to ``folder/<index>.npy`` the first time they are
    asked for and afterwards returns a read-only memory map of the file: a frame pair then costs
    two page reads, in this process or in any DataLoader worker, and the files outlive a stopped
    run. ``folder`` is a subfolder named after :meth:`SignVideoDataset.cache_key`, so another
    dataset never reads stale frames. The cache stops growing at ``max_bytes`` (later videos
    are decoded as before); poses are cheap and are always read from the dataset.
    """

    def __init__(self, dataset: SignVideoDataset, folder: str | Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        # No SignVideoDataset.__init__: the wrapped dataset has checked its root already.
        self.dataset = dataset
        self.name, self.layout = dataset.name, dataset.layout
        self.root, self.split, self.size = dataset.root, dataset.split, dataset.size
        self.records = dataset.records
        key = hashlib.sha1(dataset.cache_key().encode()).hexdigest()[:16]
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.used_bytes = sum(p.stat().st_size for p in self.folder.glob("*.npy"))

    def cache_key(self) -> str:
        return self.dataset.cache_key()

    def frame_size(self, i: int) -> tuple[int, int]:
        return self.dataset.frame_size(i)

    def num_frames(self, i: int) -> int:
        return self.dataset.num_frames(i)

    def load_frames(self, i: int, size: int | None = None) -> np.ndarray:
        if size not in (None, self.size):  # the cache holds one size
            return self.dataset.load_frames(i, size)
        path = self.folder / f"{i:07d}.npy"
        if path.is_file():
            return np.load(path, mmap_mode="r")
        frames = np.ascontiguousarray(self.dataset.load_frames(i), dtype=np.uint8)
        if self.used_bytes + frames.nbytes <= self.max_bytes:
            # Written beside and renamed: a reader (another worker) never sees half a file.
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
            np.save(tmp, frames)
            tmp.replace(path)
            self.used_bytes += path.stat().st_size
        return frames

    def load_poses(self, i: int, size: int | None = None) -> PoseSequence | None:
        return self.dataset.load_poses(i, size)


# ---------------------------------------------------------------------- annotation parsing
def _read_table(path: Path, required: Sequence[str], delimiter: str) -> list[tuple[int, dict]]:
    """Rows of a delimited text file with a header, as ``(line number, {column: value})``.

    The '|'-separated corpus files are read without quote handling: German and Chinese
    sentences contain '"' characters that are text, not CSV quoting.
    """
    quoting: Literal[0, 3] = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    rows: list[tuple[int, dict]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=True)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise ValueError(
                    f"{path}:1: header lacks column(s) {missing}; "
                    f"expected {delimiter.join(required)}"
                )
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}:{reader.line_num}: expected {len(header)} "
                        f"'{delimiter}'-separated fields ({delimiter.join(header)}), "
                        f"got {len(row)}"
                    )
                rows.append(
                    (reader.line_num, dict(zip(header, (v.strip() for v in row), strict=True)))
                )
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num}: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    return rows


def _parse_int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{path}:{line}: column {column!r} must be an integer, got {value!r}"
        ) from None


def _signer_number(raw: str) -> str:
    """``Signer08`` / ``P0008`` / ``003`` -> ``"8"`` / ``"8"`` / ``"3"``: one id style for all."""
    digits = re.findall(r"\d+", raw)
    return str(int(digits[-1])) if digits else raw


def _check_exist(name: str, paths: Sequence[Path], where: Path) -> None:
    """An incomplete download should fail at construction, not hours into training."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{name}: {len(missing)} of {len(paths)} files listed for this split are "
            f"missing under {where} (first: {missing[0]})"
        )


# ---------------------------------------------------------------------- PHOENIX-2014T
class Phoenix2014T(SignVideoDataset):
    """RWTH-PHOENIX-Weather 2014T (German weather forecasts, DGS): 210x260 PNG frame folders.

    ``root`` may be the ``PHOENIX-2014-T`` folder itself or any folder up to two levels above
    it (the release tarball nests it as ``PHOENIX-2014-T-release-v3/PHOENIX-2014-T``).
    Frames are 210 wide and 260 high, so the centre crop drops 25 rows at top and bottom.
    """

    name = "PHOENIX-2014T"
    layout = (
        "ROOT/annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv ('|'-separated, "
        "header name|video|start|end|speaker|orth|translation) and "
        "ROOT/features/fullFrame-210x260px/{train,dev,test}/<name>/images0001.png"
    )
    _COLUMNS = ("name", "video", "start", "end", "speaker", "orth", "translation")

    def _find_root(self) -> Path:
        marker = Path("annotations", "manual")
        for candidate in (
            self.root,
            self.root / "PHOENIX-2014-T",
            *sorted(self.root.glob("*/PHOENIX-2014-T")),
        ):
            if (candidate / marker).is_dir():
                return candidate
        return self.root  # let _require name the file expected directly under root

    def _scan(self) -> list[VideoRecord]:
        base = self._find_root()
        corpus = self._require(
            base / "annotations" / "manual" / f"PHOENIX-2014-T.{self.split}.corpus.csv"
        )
        frames = base / "features" / "fullFrame-210x260px" / self.split
        records = [
            VideoRecord(
                id=row["name"],
                split=self.split,
                source=frames / row["name"],
                signer=_signer_number(row["speaker"]),
                gloss=row["orth"],
                text=row["translation"],
                language="de",
            )
            for _, row in _read_table(corpus, self._COLUMNS, "|")
        ]
        _check_exist(self.name, [r.source for r in records], frames)
        return records


# ---------------------------------------------------------------------- CSL-Daily
class CSLDaily(SignVideoDataset):
    """CSL-Daily (Chinese sign language, daily-life sentences): 512x512 JPG frame folders.

    Reads ``video_map.txt`` and ``split_1.txt`` rather than the official ``csl2020ct_v2.pkl``
    (never unpickle downloaded files). The signer comes from the video name:
    ``S000000_P0008_T00`` -> ``"8"``. ``text`` is the Chinese sentence (the ``char`` column
    with its separating spaces removed).
    """

    name = "CSL-Daily"
    layout = (
        "ROOT/sentence_label/video_map.txt (header index|name|length|gloss|char|word|postag), "
        "ROOT/sentence_label/split_1.txt (header name|split) and "
        "ROOT/sentence/frames_512x512/<name>/000000.jpg"
    )
    _SIGNER = re.compile(r"_P(\d+)")

    def _scan(self) -> list[VideoRecord]:
        labels = self.root / "sentence_label"
        video_map = self._require(labels / "video_map.txt")
        split_file = self._require(labels / "split_1.txt")
        wanted = {
            row["name"]
            for _, row in _read_table(split_file, ("name", "split"), "|")
            if row["split"] == self.split
        }
        frames = self.root / "sentence" / "frames_512x512"
        columns = ("index", "name", "length", "gloss", "char", "word", "postag")
        records = []
        for line, row in _read_table(video_map, columns, "|"):
            if row["name"] not in wanted:
                continue
            signer = self._SIGNER.search(row["name"])
            if signer is None:
                raise ValueError(
                    f"{video_map}:{line}: name {row['name']!r} lacks the _P<signer> part "
                    "of S<sentence>_P<signer>_T<take>"
                )
            records.append(
                VideoRecord(
                    id=row["name"],
                    split=self.split,
                    source=frames / row["name"],
                    signer=str(int(signer.group(1))),
                    gloss=row["gloss"],
                    text="".join(row["char"].split()),
                    language="zh",
                    num_frames=_parse_int(row["length"], video_map, line, "length"),
                )
            )
        _check_exist(self.name, [r.source for r in records], frames)
        return records


# ---------------------------------------------------------------------- LSA64
class LSA64(SignVideoDataset):
    """LSA64 (64 Argentinian signs x 10 signers x 5 repetitions), mp4 per take.

    File names follow the official LSA64 convention ``SSS_PPP_RRR.mp4`` = sign, signer
    (subject), repetition -- e.g. ``057_003_001.mp4`` is sign 57 by signer 3. The project issue
    wrote ``SSS_RRR_PPP``, but the dataset's README uses signer-second and so do published
    loaders (e.g. AI4Bharat's OpenHands); a middle field of 006-010 can only be a signer, as
    there are 5 repetitions.

    Split by *word*, as the PGMM paper does: signs 57-64 are test so the model is evaluated on
    unseen signs; ``dev_signs`` moves chosen sign ids from train to dev (default: no dev).
    """

    name = "LSA64"
    layout = "ROOT/all/SSS_PPP_RRR.mp4 (or ROOT/SSS_PPP_RRR.mp4): sign, signer, repetition"
    TEST_SIGNS = frozenset(range(57, 65))
    _NAME = re.compile(r"^(\d{3})_(\d{3})_(\d{3})$")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int = 128,
        dev_signs: Sequence[int] = (),
    ) -> None:
        self.dev_signs = frozenset(int(s) for s in dev_signs)
        if self.dev_signs & self.TEST_SIGNS:
            raise ValueError(f"dev_signs must not include test signs 57-64: {sorted(dev_signs)}")
        super().__init__(root, split, size)

    def _split_of(self, sign: int) -> str:
        if sign in self.TEST_SIGNS:
            return "test"
        return "dev" if sign in self.dev_signs else "train"

    def _scan(self) -> list[VideoRecord]:
        folder = self.root / "all" if (self.root / "all").is_dir() else self.root
        # Hidden files are skipped: macOS "._057_001_001.mp4" resource forks match *.mp4 too.
        videos = sorted(p for p in folder.glob("*.mp4") if not p.name.startswith("."))
        if not videos:
            raise FileNotFoundError(
                f"{self.name}: no .mp4 files in {folder}; expected layout: {self.layout}"
            )
        records = []
        for path in videos:
            match = self._NAME.match(path.stem)
            if match is None:
                raise ValueError(f"{path}: name is not SSS_PPP_RRR.mp4 (sign_signer_repetition)")
            sign, signer, _ = (int(g) for g in match.groups())
            if not 1 <= sign <= 64:
                raise ValueError(f"{path}: sign id {sign} outside LSA64's 001-064")
            if self._split_of(sign) != self.split:
                continue
            records.append(
                VideoRecord(
                    id=path.stem,
                    split=self.split,
                    source=path,
                    signer=str(signer),
                    gloss=f"LSA64_{sign:03d}",
                    text="",
                    language="aed",
                )
            )
        return records


# ---------------------------------------------------------------------- WLASL
class WLASL(SignVideoDataset):
    """WLASL (word-level ASL, 2000 glosses) from ``WLASL_v0.3.json`` + ``videos/<id>.mp4``.

    Many WLASL source videos have vanished from the web, so every local copy is incomplete:
    instances without a video are skipped with one warning that counts them. Each kept video's
    header is probed once here, to turn the pixel bbox into normalised coordinates and to
    know its length. ``val`` is mapped to this project's ``dev``.
    """

    name = "WLASL"
    layout = "ROOT/WLASL_v0.3.json (list of {gloss, instances}) and ROOT/videos/<video_id>.mp4"
    _SPLIT = {"train": "train", "val": "dev", "test": "test"}
    _KEYS = ("video_id", "split", "signer_id", "frame_start", "frame_end", "bbox")

    def _scan(self) -> list[VideoRecord]:
        index = self._require(self.root / "WLASL_v0.3.json")
        try:
            entries = json.loads(index.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{index}:{e.lineno}: invalid JSON ({e.msg})") from e
        if not isinstance(entries, list):
            raise ValueError(f"{index}: expected a JSON list of {{gloss, instances}} entries")
        videos = self.root / "videos"
        records, missing = [], 0
        for n, entry in enumerate(entries):
            try:
                gloss, instances = entry["gloss"], entry["instances"]
            except (KeyError, TypeError) as e:
                raise ValueError(f"{index}: entry {n} lacks 'gloss'/'instances'") from e
            for m, inst in enumerate(instances):
                where = f"{index}: entry {n} ({gloss!r}) instance {m}"
                absent = [k for k in self._KEYS if not isinstance(inst, dict) or k not in inst]
                if absent:
                    raise ValueError(f"{where}: missing key(s) {absent}")
                if self._SPLIT.get(inst["split"]) is None:
                    raise ValueError(f"{where}: unknown split {inst['split']!r}")
                if self._SPLIT[inst["split"]] != self.split:
                    continue
                source = videos / f"{inst['video_id']}.mp4"
                if not source.is_file():
                    missing += 1
                    continue
                records.append(self._record(inst, gloss, source, where))
        if missing:
            warnings.warn(
                f"WLASL: skipped {missing} of {missing + len(records)} {self.split} instances "
                f"whose video is missing from {videos} (expected: WLASL videos disappear "
                "from the web)",
                stacklevel=3,
            )
        return records

    def _record(self, inst: dict, gloss: str, source: Path, where: str) -> VideoRecord:
        info = probe(source)
        try:
            x0, y0, x1, y1 = (float(v) for v in inst["bbox"])
            start, end = int(inst["frame_start"]), int(inst["frame_end"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad bbox/frame_start/frame_end ({e})") from e
        w, h = info.width, info.height
        bbox = (
            min(max(x0 / w, 0.0), 1.0), min(max(y0 / h, 0.0), 1.0),
            min(max(x1 / w, 0.0), 1.0), min(max(y1 / h, 0.0), 1.0),
        )  # fmt: skip
        # WLASL frames are 1-based and inclusive; frame_end -1 means "to the end of the video".
        begin, last = max(start - 1, 0), (end if end > 0 else None)
        total = info.num_frames or None  # 0: the container does not say
        stop = last if total is None else min(last or total, total)
        return VideoRecord(
            id=str(inst["video_id"]),
            split=self.split,
            source=source,
            signer=str(inst["signer_id"]),
            gloss=gloss,
            text=gloss,
            language="ase",
            num_frames=None if stop is None else max(stop - begin, 0),
            bbox=bbox,
            frame_range=None if begin == 0 and last is None else (begin, last),
        )


# ---------------------------------------------------------------------- SynthSigner
class SynthSigner(SignVideoDataset):
    """The project's synthetic corpus written by ``slp data synth``.

    Frames are square already, so the centre crop is the identity and poses pass through
    unchanged. The feature folder matching ``size`` is used when present; otherwise the
    smallest larger one (downscaling keeps detail), else the largest available.
    """

    name = "SynthSigner"
    layout = (
        "ROOT/annotations/{split}.csv (id,split,language,signer,identity,gloss,text,"
        "num_frames), ROOT/poses/{split}/<id>.npz and "
        "ROOT/features/fullFrame-SxSpx/{split}/<id>.mp4 (or <id>/images0001.png ...)"
    )
    _COLUMNS = ("id", "split", "language", "signer", "identity", "gloss", "text", "num_frames")
    _FEATURES = re.compile(r"^fullFrame-(\d+)x\1px$")

    def _features(self) -> Path:
        sizes = {}
        for folder in (self.root / "features").glob("fullFrame-*px"):
            match = self._FEATURES.match(folder.name)
            if match and (folder / self.split).is_dir():
                sizes[int(match.group(1))] = folder / self.split
        if not sizes:
            raise FileNotFoundError(
                f"{self.name}: no {self.root / 'features'}/fullFrame-SxSpx/{self.split} folder; "
                f"expected layout: {self.layout}"
            )
        larger = [s for s in sizes if s >= self.size]
        return sizes[min(larger) if larger else max(sizes)]

    def _scan(self) -> list[VideoRecord]:
        table = self._require(self.root / "annotations" / f"{self.split}.csv")
        features = self._features()
        poses = self.root / "poses" / self.split
        records = []
        for line, row in _read_table(table, self._COLUMNS, ","):
            if row["split"] != self.split:
                raise ValueError(
                    f"{table}:{line}: split {row['split']!r} in the {self.split} table"
                )
            video = features / f"{row['id']}.mp4"
            pose_path = poses / f"{row['id']}.npz"
            records.append(
                VideoRecord(
                    id=row["id"],
                    split=self.split,
                    source=video if video.is_file() else features / row["id"],
                    signer=row["signer"],
                    gloss=row["gloss"],
                    text=row["text"],
                    language=row["language"],
                    num_frames=_parse_int(row["num_frames"], table, line, "num_frames"),
                    pose_path=pose_path if poses.is_dir() else None,
                )
            )
        _check_exist(self.name, [r.source for r in records], features)
        _check_exist(self.name, [r.pose_path for r in records if r.pose_path is not None], poses)
        return records


DATASETS: dict[str, type[SignVideoDataset]] = {
    "phoenix2014t": Phoenix2014T,
    "csl-daily": CSLDaily,
    "lsa64": LSA64,
    "wlasl": WLASL,
    "synthsigner": SynthSigner,
}


def load_dataset(
    name: str, root: str | Path, split: str = "train", size: int = 128, **kw: Any
) -> SignVideoDataset:
    """Build a dataset by name (``phoenix2014t``, ``csl-daily``, ``lsa64``, ``wlasl``,
    ``synthsigner``); extra keywords go to its constructor (e.g. LSA64's ``dev_signs``)."""
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[key](root, split, size, **kw)
