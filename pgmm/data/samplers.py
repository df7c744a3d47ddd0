"""Training and evaluation views over a :class:`~pgmm.data.loaders.SignVideoDataset`.

* :class:`FramePairDataset` -- PGMM's training sample: a random (source, driving) frame pair
  from one video; the model learns to re-pose the source frame into the driving frame.
* :class:`VideoWindowSampler` -- an epoch order that keeps the pair dataset's video cache hot.
* :class:`ClipDataset` -- contiguous clips for FVD and other temporal metrics.

Both datasets decode whole videos (videos are compressed streams; frame-accurate seeking in
H.264 costs nearly a full decode anyway) and keep the last few decoded videos in an LRU cache.
Memory per cached video is ``T * S * S * 3`` bytes: a 300-frame PHOENIX video is 14.7 MB at
128^2 and 59 MB at 256^2, so the default of 4 videos costs about 60 MB (240 MB at 256^2) *per
DataLoader worker* -- in exchange each video is decoded once per ``pairs_per_video`` items
instead of once per item.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pgmm.data.loaders import SignVideoDataset
from pgmm.video import VideoError


class _VideoCache:
    """LRU of decoded videos: index -> (frames ``(T,S,S,3)`` uint8, poses ``(T,K,3)`` or None)."""

    def __init__(self, dataset: SignVideoDataset, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1 video, got {capacity}")
        self.dataset = dataset
        self.capacity = capacity
        self._videos: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if i in self._videos:
            self._videos.move_to_end(i)
            return self._videos[i]
        frames, pose = self.dataset.load_video(i)
        poses = None if pose is None else pose.data
        self._videos[i] = (frames, poses)
        if len(self._videos) > self.capacity:
            self._videos.popitem(last=False)
        return frames, poses


def _to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [0, 1].

    The frames are copied first: a :class:`~pgmm.data.loaders.FrameCache` hands out read-only
    memory maps, which ``torch.from_numpy`` would only wrap (with a warning).
    """
    return torch.from_numpy(np.array(frames)).movedim(-1, -3).float().div_(255.0)


class FramePairDataset(Dataset):
    """Random (source, driving) frame pairs, ``pairs_per_video`` per video per epoch.

    Item ``k`` belongs to video ``k // pairs_per_video``; its two frame indices are drawn from
    a generator seeded by ``(seed, epoch, k)``, so any item can be recomputed exactly (across
    workers, restarts and machines) while every epoch sees new pairs. Call :meth:`set_epoch`
    each epoch; DataLoader workers hold copies of this object, so use non-persistent workers
    (the default) for the new epoch to reach them.
    """

    def __init__(
        self,
        dataset: SignVideoDataset,
        pairs_per_video: int = 100,
        seed: int = 0,
        cache_videos: int = 4,
    ) -> None:
        if pairs_per_video < 1:
            raise ValueError(f"pairs_per_video must be at least 1, got {pairs_per_video}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.dataset = dataset
        self.pairs_per_video = pairs_per_video
        self.seed = seed
        self.epoch = 0
        self._cache = _VideoCache(dataset, cache_videos)

    @property
    def cache_videos(self) -> int:
        return self._cache.capacity

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset) * self.pairs_per_video

    def pair(self, k: int, num_frames: int) -> tuple[int, int]:
        """Item ``k``'s (source, driving) indices: distinct whenever the video has 2+ frames."""
        if num_frames < 2:
            return 0, 0
        rng = np.random.default_rng([self.seed, self.epoch, k])
        source, driving = rng.choice(num_frames, size=2, replace=False)
        return int(source), int(driving)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not 0 <= k < len(self):
            raise IndexError(f"pair index {k} out of range for {len(self)} pairs")
        video = k // self.pairs_per_video
        frames, poses = self._cache.get(video)
        source, driving = self.pair(k, len(frames))
        item: dict[str, Any] = {
            "source": _to_float(frames[source]),
            "driving": _to_float(frames[driving]),
            "video_id": self.dataset.records[video].id,
            "source_index": source,
            "driving_index": driving,
        }
        if poses is not None:
            item["source_pose"] = torch.from_numpy(poses[source].copy())
            item["driving_pose"] = torch.from_numpy(poses[driving].copy())
        return item


class VideoWindowSampler(Sampler[int]):
    """Epoch order for :class:`FramePairDataset` that decodes each video about once.

    Plain ``shuffle=True`` scatters a video's pairs over the whole epoch, so nearly every item
    misses the cache and decodes a full video. This sampler shuffles the videos, takes them
    ``window`` at a time and shuffles the pairs *within* each window: batches still mix
    ``window`` videos, and with ``window <= cache_videos`` every video is decoded once per
    epoch per DataLoader worker. Larger windows mix more videos at the cost of cache memory.
    """

    def __init__(self, pairs: FramePairDataset, window: int = 4, seed: int = 0) -> None:
        if not 1 <= window <= pairs.cache_videos:
            raise ValueError(
                f"window must be between 1 and the pair dataset's cache_videos "
                f"({pairs.cache_videos}), got {window}: larger windows re-decode every item"
            )
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.pairs = pairs
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        per_video = self.pairs.pairs_per_video
        videos = rng.permutation(len(self.pairs.dataset))
        for w in range(0, len(videos), self.window):
            chunk = videos[w : w + self.window]
            items = (chunk[:, None] * per_video + np.arange(per_video)).ravel()
            yield from rng.permutation(items).tolist()


class ClipDataset(Dataset):
    """Every ``clip_len``-frame clip of every video, starting each ``stride`` frames.

    Clip positions are fixed (not random) so FVD and temporal metrics compare the same clips
    across models. Videos shorter than ``clip_len`` are skipped with one warning that counts
    them (``skipped``): padding them would invent motion the metric then scores.
    """

    def __init__(
        self,
        dataset: SignVideoDataset,
        clip_len: int = 16,
        stride: int | None = None,
        cache_videos: int = 2,
    ) -> None:
        stride = clip_len if stride is None else stride
        if clip_len < 1 or stride < 1:
            raise ValueError(f"clip_len and stride must be positive, got {clip_len}, {stride}")
        self.dataset = dataset
        self.clip_len = clip_len
        self.stride = stride
        self.clips: list[tuple[int, int]] = []
        self.skipped = 0
        for video in range(len(dataset)):
            length = dataset.num_frames(video)
            if length < clip_len:
                self.skipped += 1
                continue
            self.clips.extend((video, s) for s in range(0, length - clip_len + 1, stride))
        if self.skipped:
            warnings.warn(
                f"ClipDataset: skipped {self.skipped} of {len(dataset)} videos shorter than "
                f"{clip_len} frames",
                stacklevel=2,
            )
        self._cache = _VideoCache(dataset, cache_videos)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, k: int) -> dict[str, Any]:
        video, start = self.clips[k]
        frames, poses = self._cache.get(video)
        stop = start + self.clip_len
        if stop > len(frames):
            record = self.dataset.records[video]
            raise VideoError(
                f"{record.source}: decoded {len(frames)} frames, fewer than the "
                f"{self.dataset.num_frames(video)} its annotation/header promised"
            )
        item: dict[str, Any] = {
            "frames": _to_float(frames[start:stop]),
            "video_id": self.dataset.records[video].id,
            "start": start,
        }
        if poses is not None:
            item["poses"] = torch.from_numpy(poses[start:stop].copy())
        return item
