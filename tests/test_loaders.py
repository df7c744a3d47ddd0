"""Dataset loaders and samplers on tiny fake trees in each corpus's published layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pgmm.data.loaders import (
    CSLDaily,
    FrameCache,
    Phoenix2014T,
    SignVideoDataset,
    load_dataset,
    square_crop_box,
)
from pgmm.data.samplers import ClipDataset, FramePairDataset, VideoWindowSampler
from pgmm.pose.sequence import PoseSequence
from pgmm.video import VideoError, write_video

RED, BLUE = (255, 0, 0), (0, 0, 255)


# ---------------------------------------------------------------------- frame helpers
def gray_frames(num: int, height: int, width: int) -> np.ndarray:
    """Frame t is uniformly gray at 40 * t + 20, so frame order survives compression."""
    levels = 40 * np.arange(num, dtype=np.uint8) + 20
    return np.broadcast_to(levels[:, None, None, None], (num, height, width, 3)).copy()


def red_blue_frames(num: int, height: int, width: int) -> np.ndarray:
    """Left half red, right half blue: a crop tells which half it came from."""
    frames = np.zeros((num, height, width, 3), np.uint8)
    frames[:, :, : width // 2] = RED
    frames[:, :, width // 2 :] = BLUE
    return frames


def write_images(folder: Path, frames: np.ndarray, name: str, first: int = 0) -> None:
    """Write frame i as ``name.format(first + i)`` (``images{:04d}.png``, ``{:06d}.jpg``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / name.format(first + i))


def write_table(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def mean_rgb(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(-1, 3).mean(axis=0)


# ---------------------------------------------------------------------- fixtures
PHOENIX_HEADER = "name|video|start|end|speaker|orth|translation"


@pytest.fixture
def phoenix_root(tmp_path: Path) -> Path:
    """Release-style nesting: tmp/PHOENIX-2014-T/{annotations,features}."""
    base = tmp_path / "PHOENIX-2014-T"
    videos = {
        "train": [("11August_2010_Wednesday_tagesschau-1", "Signer08", 4),
                  ("12August_2010_Thursday_heute-2", "Signer01", 3)],
        "dev": [("01April_2010_Thursday_heute-6694", "Signer04", 5)],
        "test": [("03July_2011_Sunday_tagesschau-1", "Signer05", 3)],
    }  # fmt: skip
    for split, items in videos.items():
        lines = [PHOENIX_HEADER]
        for name, speaker, num in items:
            lines.append(f"{name}|{name}/1/*.png|-1|-1|{speaker}|REGEN WIND|es gibt regen und wind")
            folder = base / "features" / "fullFrame-210x260px" / split / name
            write_images(folder, gray_frames(num, 52, 40), "images{:04d}.png", first=1)
        write_table(base / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv", lines)
    return tmp_path


@pytest.fixture
def csl_root(tmp_path: Path) -> Path:
    root = tmp_path / "CSL-Daily"
    names = {"S000000_P0008_T00": ("train", 4), "S000001_P0003_T01": ("dev", 3),
             "S000002_P0010_T00": ("test", 5)}  # fmt: skip
    video_map = ["index|name|length|gloss|char|word|postag"]
    split = ["name|split"]
    for i, (name, (which, num)) in enumerate(names.items()):
        video_map.append(f"{i}|{name}|{num}|我 喜欢 你|我 喜 欢 你|我 喜欢 你|r v r")
        split.append(f"{name}|{which}")
        write_images(root / "sentence" / "frames_512x512" / name, gray_frames(num, 32, 32),
                     "{:06d}.jpg")  # fmt: skip
    write_table(root / "sentence_label" / "video_map.txt", video_map)
    write_table(root / "sentence_label" / "split_1.txt", split)
    return root


@pytest.fixture
def lsa64_root(tmp_path: Path) -> Path:
    root = tmp_path / "lsa64"
    for name in ("001_001_001", "001_002_003", "010_010_005", "057_003_002", "064_001_001"):
        write_video(root / "all" / f"{name}.mp4", gray_frames(4, 48, 64))
    return root


@pytest.fixture
def wlasl_root(tmp_path: Path) -> Path:
    root = tmp_path / "wlasl"
    write_video(root / "videos" / "00335.mp4", red_blue_frames(4, 32, 64))
    write_video(root / "videos" / "00336.mp4", gray_frames(6, 32, 64))
    write_video(root / "videos" / "00400.mp4", gray_frames(3, 32, 64))

    def inst(video_id: str, split: str, start: int = 1, end: int = -1, bbox=None) -> dict:
        return {"video_id": video_id, "split": split, "signer_id": 118, "frame_start": start,
                "frame_end": end, "bbox": bbox or [0, 0, 64, 32], "fps": 25,
                "url": "http://example.invalid", "source": "aslu", "variation_id": 0}  # fmt: skip

    index = [
        {"gloss": "book", "instances": [
            inst("00335", "train", bbox=[32, 0, 64, 32]),
            inst("00336", "train", start=2, end=4),
            inst("99998", "train"),  # never downloaded
            inst("99999", "train"),
        ]},
        {"gloss": "drink", "instances": [inst("00400", "val"), inst("99997", "test")]},
    ]  # fmt: skip
    (root / "WLASL_v0.3.json").write_text(json.dumps(index))
    return root


SYNTH_HEADER = "id,split,language,signer,identity,gloss,text,num_frames"


def synth_pose(num: int, seed: int = 0) -> PoseSequence:
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.1, 0.9, (num, 133, 3)).astype(np.float32)
    return PoseSequence(data, 25.0, "wholebody133", 64, 64)


@pytest.fixture
def synth_root(tmp_path: Path) -> Path:
    """Three train videos (6, 4, 3 frames): two mp4s and one image folder, 64x64 features."""
    root = tmp_path / "synth"
    features = root / "features" / "fullFrame-64x64px" / "train"
    lines = [SYNTH_HEADER]
    for n, (vid, num) in enumerate([("syn_000", 6), ("syn_001", 4), ("syn_002", 3)]):
        lines.append(f'{vid},train,dgs,signer{n},id{n},HAUS BAUEN,"ein haus, gebaut",{num}')
        if vid == "syn_002":
            write_images(features / vid, gray_frames(num, 64, 64), "images{:04d}.png", first=1)
        else:
            write_video(features / f"{vid}.mp4", gray_frames(num, 64, 64))
        synth_pose(num, n).save(root / "poses" / "train" / f"{vid}.npz")
    write_table(root / "annotations" / "train.csv", lines)
    return root


# ---------------------------------------------------------------------- PHOENIX-2014T
def test_phoenix_records_and_frames(phoenix_root: Path) -> None:
    ds = load_dataset("phoenix2014t", phoenix_root, "train", size=32)
    assert isinstance(ds, Phoenix2014T)
    assert [r.id for r in ds.records] == [
        "11August_2010_Wednesday_tagesschau-1", "12August_2010_Thursday_heute-2"]  # fmt: skip
    record = ds.records[0]
    assert (record.split, record.signer, record.language) == ("train", "8", "de")
    assert (record.gloss, record.text) == ("REGEN WIND", "es gibt regen und wind")
    frames = ds.load_frames(0)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    # natural order of images0001..images0004 is kept
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [20, 60, 100, 140], atol=2)
    assert ds.load_frames(0, size=64).shape == (4, 64, 64, 3)
    item = ds[1]
    assert item["frames"].shape == (3, 3, 32, 32) and "poses" not in item
    assert (
        load_dataset("phoenix2014t", phoenix_root / "PHOENIX-2014-T", "dev").records[0].signer
        == "4"
    )


def test_phoenix_missing_annotation_and_malformed_line(phoenix_root: Path) -> None:
    corpus = phoenix_root / "PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.test.corpus.csv"
    corpus.write_text(PHOENIX_HEADER + "\n" + "a|b|-1|-1|Signer01|X|x\n" + "broken|line\n")
    with pytest.raises(ValueError, match=r"PHOENIX-2014-T\.test\.corpus\.csv:3"):
        Phoenix2014T(phoenix_root, "test")
    corpus.unlink()
    with pytest.raises(FileNotFoundError, match=r"PHOENIX-2014-T\.test\.corpus\.csv.*layout"):
        Phoenix2014T(phoenix_root, "test")


def test_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    for name in ("phoenix2014t", "csl-daily", "lsa64", "wlasl", "synthsigner"):
        with pytest.raises(FileNotFoundError, match=r"nowhere.*expected layout"):
            load_dataset(name, tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("how2sign", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_dataset("lsa64", tmp_path, "val")


def test_corrupt_image_names_file(phoenix_root: Path) -> None:
    ds = Phoenix2014T(phoenix_root, "dev", size=32)
    bad = ds.records[0].source / "images0002.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(VideoError, match="images0002.png"):
        ds.load_frames(0)


# ---------------------------------------------------------------------- CSL-Daily
def test_csl_daily_records(csl_root: Path) -> None:
    ds = load_dataset("csl-daily", csl_root, "train", size=32)
    assert isinstance(ds, CSLDaily)
    (record,) = ds.records
    assert (record.id, record.signer, record.language) == ("S000000_P0008_T00", "8", "zh")
    assert (record.gloss, record.text, record.num_frames) == ("我 喜欢 你", "我喜欢你", 4)
    assert ds.load_frames(0).shape == (4, 32, 32, 3)
    assert CSLDaily(csl_root, "test").records[0].signer == "10"


def test_csl_daily_malformed_and_missing(csl_root: Path) -> None:
    video_map = csl_root / "sentence_label" / "video_map.txt"
    video_map.write_text(video_map.read_text() + "7|S000009_P0001_T00|notanumber|A|a|a|n\n")
    (csl_root / "sentence_label" / "split_1.txt").write_text(
        "name|split\nS000009_P0001_T00|train\n"
    )
    with pytest.raises(ValueError, match=r"video_map\.txt:5.*length"):
        CSLDaily(csl_root, "train")
    (csl_root / "sentence_label" / "split_1.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"split_1\.txt"):
        CSLDaily(csl_root, "train")


# ---------------------------------------------------------------------- LSA64
def test_lsa64_word_split(lsa64_root: Path) -> None:
    train = load_dataset("lsa64", lsa64_root, "train", size=32)
    test = load_dataset("lsa64", lsa64_root, "test", size=32)
    assert [r.id for r in train.records] == ["001_001_001", "001_002_003", "010_010_005"]
    assert [r.id for r in test.records] == ["057_003_002", "064_001_001"]
    assert {r.gloss for r in test.records} == {"LSA64_057", "LSA64_064"}
    assert not {r.gloss for r in train.records} & {r.gloss for r in test.records}
    assert (test.records[0].signer, test.records[0].language) == ("3", "aed")
    assert train.records[2].signer == "10"
    assert len(load_dataset("lsa64", lsa64_root, "dev")) == 0
    dev = load_dataset("lsa64", lsa64_root, "dev", dev_signs=[10])
    assert [r.id for r in dev.records] == ["010_010_005"]
    assert test.load_frames(0).shape == (4, 32, 32, 3)
    assert test[1]["frames"].shape == (4, 3, 32, 32)


def test_lsa64_corrupt_mp4_names_file(lsa64_root: Path) -> None:
    (lsa64_root / "all" / "057_003_002.mp4").write_bytes(b"\x00" * 64)
    ds = load_dataset("lsa64", lsa64_root, "test")
    with pytest.raises(VideoError, match="057_003_002.mp4"):
        ds.load_frames(0)


# ---------------------------------------------------------------------- WLASL
def test_wlasl_records_missing_warning_and_ranges(wlasl_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 train") as caught:
        train = load_dataset("wlasl", wlasl_root, "train", size=32)
    assert len([w for w in caught if "WLASL" in str(w.message)]) == 1
    assert [r.id for r in train.records] == ["00335", "00336"]
    assert train.records[0].bbox == (0.5, 0.0, 1.0, 1.0)
    assert (train.records[0].signer, train.records[0].language) == ("118", "ase")
    assert train.records[0].frame_range is None and train.records[0].num_frames == 4
    # frames 2..4 (1-based, inclusive) -> 0-based half-open (1, 4): gray levels of t=1,2,3
    assert train.records[1].frame_range == (1, 4) and train.records[1].num_frames == 3
    frames = train.load_frames(1)
    assert frames.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [60, 100, 140], atol=4)

    with pytest.warns(UserWarning, match="skipped 1 of 1 test"):
        assert len(load_dataset("wlasl", wlasl_root, "test")) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing in val -> no warning
        dev = load_dataset("wlasl", wlasl_root, "dev")
    assert [(r.id, r.split, r.gloss) for r in dev.records] == [("00400", "dev", "drink")]


def test_bbox_crop_takes_the_boxed_half(wlasl_root: Path) -> None:
    with pytest.warns(UserWarning):
        ds = load_dataset("wlasl", wlasl_root, "train", size=32)
    frames = ds.load_frames(0)
    red, _, blue = mean_rgb(frames)
    assert blue > 200 and red < 40
    # without a box the centre square straddles both halves
    assert square_crop_box(64, 32) == (16, 0, 32)


def test_wlasl_corrupt_mp4_names_file(wlasl_root: Path) -> None:
    (wlasl_root / "videos" / "00400.mp4").write_bytes(b"garbage" * 10)
    with pytest.raises(VideoError, match="00400.mp4"):
        load_dataset("wlasl", wlasl_root, "dev")


def test_wlasl_malformed_json(wlasl_root: Path) -> None:
    (wlasl_root / "WLASL_v0.3.json").write_text('[{"gloss": "a", "instances": [{"video_id": ')
    with pytest.raises(ValueError, match=r"WLASL_v0\.3\.json:1"):
        load_dataset("wlasl", wlasl_root, "train")
    (wlasl_root / "WLASL_v0.3.json").write_text('[{"gloss": "a", "instances": [{"split": "x"}]}]')
    with pytest.raises(ValueError, match=r"entry 0 .*instance 0.*video_id"):
        load_dataset("wlasl", wlasl_root, "train")


# ---------------------------------------------------------------------- SynthSigner
def test_synthsigner_records_frames_and_poses(synth_root: Path) -> None:
    ds = load_dataset("synthsigner", synth_root, "train", size=32)
    assert [r.id for r in ds.records] == ["syn_000", "syn_001", "syn_002"]
    record = ds.records[0]
    assert (record.signer, record.language, record.text) == ("signer0", "dgs", "ein haus, gebaut")
    assert record.pose_path == synth_root / "poses" / "train" / "syn_000.npz"
    assert ds.records[2].source.is_dir()
    for size in (32, 64):
        assert ds.load_frames(2, size=size).shape == (3, size, size, 3)
    pose = ds.load_poses(0)
    assert pose is not None and (pose.width, pose.height) == (32, 32)
    # square frames: the centre crop is the whole frame, so poses are unchanged
    np.testing.assert_allclose(pose.data, synth_pose(6, 0).data, atol=1e-6)
    item = ds[1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["poses"].shape == (4, 133, 3)
    # no 32x32 features: the 64x64 ones are downscaled
    assert load_dataset("synthsigner", synth_root, "train", size=128).load_frames(1).shape[1] == 128


def test_poses_follow_non_square_crop(tmp_path: Path) -> None:
    """A white dot and the keypoint on it must stay together through the crop + resize."""
    root = tmp_path / "synth"
    frames = np.zeros((2, 32, 64, 3), np.uint8)
    frames[:, 8:12, 44:48] = 255  # dot centred on pixel (46, 10) of a 64x32 frame
    write_images(
        root / "features" / "fullFrame-64x64px" / "train" / "v", frames, "images{:04d}.png", 1
    )
    data = np.zeros((2, 133, 3), np.float32)
    data[:, 0] = (46 / 64, 10 / 32, 1.0)
    PoseSequence(data, 25.0, "wholebody133", 64, 32).save(root / "poses" / "train" / "v.npz")
    write_table(root / "annotations" / "train.csv", [SYNTH_HEADER, "v,train,dgs,s,i,G,t,2"])
    ds = load_dataset("synthsigner", root, "train", size=64)
    cropped = ds.load_frames(0)  # centre square = columns 16..48, scaled 2x
    x, y = ds.load_poses(0).pixels()[0, 0]
    assert cropped[0, int(y), int(x)].min() > 200
    assert cropped[0, 4, 4].max() == 0


def test_synthsigner_missing_features_and_bad_row(synth_root: Path) -> None:
    table = synth_root / "annotations" / "train.csv"
    table.write_text(table.read_text() + "syn_009,train,dgs\n")
    with pytest.raises(ValueError, match=r"train\.csv:5"):
        load_dataset("synthsigner", synth_root, "train")
    with pytest.raises(FileNotFoundError, match=r"dev\.csv"):
        load_dataset("synthsigner", synth_root, "dev")
    synth_pose(5).save(synth_root / "poses" / "train" / "syn_001.npz")  # video has 4 frames
    table.write_text(SYNTH_HEADER + "\nsyn_001,train,dgs,s,i,G,t,4\n")
    with pytest.raises(ValueError, match=r"syn_001\.npz: 5 pose frames"):
        load_dataset("synthsigner", synth_root, "train")[0]
    table.write_text(SYNTH_HEADER + "\nsyn_404,train,dgs,s,i,G,t,3\n")
    with pytest.raises(FileNotFoundError, match="syn_404"):
        load_dataset("synthsigner", synth_root, "train")


# ---------------------------------------------------------------------- samplers
@pytest.fixture
def synth(synth_root: Path) -> SignVideoDataset:
    return load_dataset("synthsigner", synth_root, "train", size=32)


def count_decodes(ds: SignVideoDataset, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = ds.load_frames

    def counting(i: int, size: int | None = None) -> np.ndarray:
        calls.append(i)
        return original(i, size)

    monkeypatch.setattr(ds, "load_frames", counting)
    return calls


def test_frame_pairs_length_determinism_and_content(
    synth: SignVideoDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_decodes(synth, monkeypatch)
    pairs = FramePairDataset(synth, pairs_per_video=10, seed=3)
    assert len(pairs) == 30
    first = [pairs[k] for k in range(len(pairs))]
    assert calls == [0, 1, 2]  # consecutive items reuse the cached video
    item = first[0]
    assert item["source"].shape == (3, 32, 32) and item["source"].dtype.is_floating_point
    assert float(item["source"].min()) >= 0.0 and float(item["driving"].max()) <= 1.0
    assert item["source_pose"].shape == (133, 3) and item["video_id"] == "syn_000"
    assert all(it["source_index"] != it["driving_index"] for it in first)
    assert {it["video_id"] for it in first[20:]} == {"syn_002"}
    # the pixels really are the chosen frames (gray level 40 t + 20)
    assert abs(float(item["source"].mean()) * 255 - (40 * item["source_index"] + 20)) < 4
    np.testing.assert_allclose(
        item["driving_pose"].numpy(), synth_pose(6, 0).data[item["driving_index"]], atol=1e-6
    )

    indices = [(it["source_index"], it["driving_index"]) for it in first]
    again = FramePairDataset(synth, pairs_per_video=10, seed=3)
    assert [(again[k]["source_index"], again[k]["driving_index"]) for k in range(30)] == indices
    again.set_epoch(1)
    assert [(again[k]["source_index"], again[k]["driving_index"]) for k in range(30)] != indices
    other_seed = FramePairDataset(synth, pairs_per_video=10, seed=4)
    assert [other_seed.pair(k, 6) for k in range(30)] != [pairs.pair(k, 6) for k in range(30)]
    assert pairs.pair(0, 1) == (0, 0)
    with pytest.raises(IndexError):
        pairs[30]


def test_window_sampler_covers_epoch_and_decodes_once(
    synth: SignVideoDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_decodes(synth, monkeypatch)
    pairs = FramePairDataset(synth, pairs_per_video=5, cache_videos=2)
    sampler = VideoWindowSampler(pairs, window=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(15)) and len(sampler) == 15
    for k in order:
        pairs[k]
    assert sorted(calls) == [0, 1, 2]
    sampler.set_epoch(1)
    assert list(sampler) != order
    with pytest.raises(ValueError, match="cache_videos"):
        VideoWindowSampler(pairs, window=3)


def test_frame_cache_decodes_each_video_once_per_run(
    synth: SignVideoDataset, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_decodes(synth, monkeypatch)
    cache = FrameCache(synth, tmp_path / "frames", max_bytes=2**30)
    decoded = [synth.load_frames(i) for i in range(len(synth))]
    calls.clear()
    for epoch in range(2):  # the pair dataset's LRU is fresh every epoch, as in a new worker
        pairs = FramePairDataset(cache, pairs_per_video=4, seed=epoch)
        items = [pairs[k] for k in range(len(pairs))]
    assert calls == [0, 1, 2]  # decoded in the first epoch only
    for i, frames in enumerate(decoded):
        cached = cache.load_frames(i)
        assert isinstance(cached, np.memmap) and np.array_equal(cached, frames)
    assert items[0]["source_pose"].shape == (133, 3)  # poses come from the dataset
    # A resumed run (a new wrapper on the same folder) reads the files; nothing is decoded.
    again = FrameCache(synth, tmp_path / "frames", max_bytes=2**30)
    assert again.folder == cache.folder and again.used_bytes == cache.used_bytes > 0
    again.load_frames(2)
    assert calls == [0, 1, 2]
    # Another dataset (here: another frame size) gets its own folder.
    other = FrameCache(
        load_dataset("synthsigner", synth_root, "train", size=16), tmp_path / "frames", 2**30
    )
    assert other.folder != cache.folder and other.used_bytes == 0
    # The cache stops growing at its cap: a video that does not fit is decoded every time.
    small = FrameCache(synth, tmp_path / "small", max_bytes=decoded[0].nbytes + 200)
    small.load_frames(0), small.load_frames(1), small.load_frames(1)
    assert sorted(p.name for p in small.folder.glob("*.npy")) == ["0000000.npy"]
    assert calls[-3:] == [0, 1, 1]
    with pytest.raises(ValueError, match="max_bytes"):
        FrameCache(synth, tmp_path / "bad", max_bytes=-1)


def test_clip_dataset_counts(synth: SignVideoDataset) -> None:
    with pytest.warns(UserWarning, match="skipped 1 of 3 videos shorter than 4"):
        clips = ClipDataset(synth, clip_len=4)
    assert clips.clips == [(0, 0), (1, 0)] and clips.skipped == 1
    item = clips[0]
    assert item["frames"].shape == (4, 3, 32, 32) and item["poses"].shape == (4, 133, 3)
    assert (item["video_id"], item["start"]) == ("syn_000", 0)
    with pytest.warns(UserWarning):
        overlapping = ClipDataset(synth, clip_len=4, stride=1)
    assert len(overlapping) == 3 + 1
    last = overlapping[2]
    assert last["start"] == 2
    np.testing.assert_allclose(last["frames"].mean(dim=(1, 2, 3)).numpy() * 255,
                               [100, 140, 180, 220], atol=4)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ClipDataset(synth, clip_len=3, stride=3)) == 2 + 1 + 1
