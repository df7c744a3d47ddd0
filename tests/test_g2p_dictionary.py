"""``GlossDictionary``: dictionary signs + learned co-articulation (text2pose/dictionary.py).

A tiny synthetic corpus with a known structure stands in for SynthSigner: four glosses, each a
distinct hand trajectory ("the sign"), joined by minimum-jerk transitions of 3 frames, with a
6-frame rest hold + 3-frame entry before the first sign and a 3-frame exit + 6-frame hold
after the last, every sentence played at its own speed. The dictionary must recover that
structure (timing within a frame or two, the cores themselves), never average occurrences,
stream its first gloss before building the next, survive a save/load round trip, and sign an
unknown gloss as a documented hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pgmm.pose import layout as L
from text2pose.data import G2PData
from text2pose.dictionary import (
    HANDS,
    DictionaryConfig,
    GlossDictionary,
    SentenceTarget,
    build_dictionary,
    medoid,
    min_jerk,
    pack_cores,
    resample,
    unpack_cores,
)
from text2pose.pipeline import PIPELINE_NAME, TextToPose, load_g2p

SIGNS = {"A": 8, "B": 12, "C": 10, "D": 6}  # core frames at speed 1
TRANS, LEAD_HOLD, LEAD_MOVE, TAIL_MOVE, TAIL_HOLD = 3, 6, 3, 3, 6
UNLABELLED = np.arange(17, 23)  # feet, as SynthSigner


def _rest() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (0.5 + 0.05 * rng.standard_normal((L.NUM_WHOLEBODY, 2))).astype(np.float32)


def _core(gloss: str, frames: int) -> np.ndarray:
    """The sign of ``gloss``: its hands sweep from a gloss-specific start along a
    gloss-specific direction, fingers spread by a gloss-specific amount."""
    k = "ABCD".index(gloss) + 1
    u = np.linspace(0.0, 1.0, frames)[:, None, None]
    pose = np.repeat(_rest()[None], frames, 0)
    spread = 0.01 * k * np.linspace(-1, 1, len(HANDS))[None, :, None]
    pose[:, HANDS] += 0.1 * k * np.array([1.0, -0.5]) + u * 0.05 * np.array([k % 2, 1.0]) + spread
    return pose


def _move(a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    u = min_jerk(np.arange(1, frames + 1) / (frames + 1.0))[:, None, None]
    return a[None] + u * (b - a)[None]


def _sentence(
    glosses: list[str], speed: float, signs: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Poses and frames per gloss (the first gloss owns the lead, the last the tail);
    ``signs`` gives the performance of glosses outside ``SIGNS``."""
    n = lambda x: max(1, round(x * speed))  # noqa: E731
    rest = _rest()
    parts, durations, current = [np.repeat(rest[None], n(LEAD_HOLD), 0)], [], rest
    for i, gloss in enumerate(glosses):
        core = signs[gloss] if signs and gloss in signs else _core(gloss, n(SIGNS[gloss]))
        move = _move(current, core[0], n(LEAD_MOVE if i == 0 else TRANS))
        parts += [move, core]
        durations.append(len(move) + len(core) + (n(LEAD_HOLD) if i == 0 else 0))
        current = core[-1]
    tail = [_move(current, rest, n(TAIL_MOVE)), np.repeat(rest[None], n(TAIL_HOLD), 0)]
    durations[-1] += sum(len(t) for t in tail)
    return np.concatenate(parts + tail), np.asarray(durations, np.int64)


def _data(sentences: list[tuple]) -> G2PData:
    """``sentences``: ``(glosses, speed)`` or ``(glosses, speed, signs)``."""
    poses, durations = zip(*(_sentence(*s) for s in sentences), strict=True)
    labelled = np.ones(L.NUM_WHOLEBODY, bool)
    labelled[UNLABELLED] = False
    return G2PData([f"s{i}" for i in range(len(sentences))], "de",
                   [tuple(s[0]) for s in sentences],
                   [p.astype(np.float16) for p in poses], list(durations), labelled)  # fmt: skip


@pytest.fixture(scope="module")
def corpus() -> G2PData:
    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(60):
        glosses = list(rng.choice(list(SIGNS), int(rng.integers(3, 6))))
        sentences.append((glosses, float(rng.uniform(0.8, 1.25))))
    return _data(sentences)


@pytest.fixture(scope="module")
def model(corpus: G2PData) -> GlossDictionary:
    return build_dictionary(corpus)


def test_learns_the_corpus_timing(model: GlossDictionary) -> None:
    t = model.timing
    assert t.profiled_glosses == len(SIGNS)  # every gloss has >= 8 mid-sentence occurrences
    assert abs(t.transition_frames - TRANS) <= 1.0
    assert abs(t.lead_hold - LEAD_HOLD) <= 1.0 and abs(t.tail_hold - TAIL_HOLD) <= 1.0
    assert abs(t.lead_hold + t.lead_move - LEAD_HOLD - LEAD_MOVE) <= 1.5
    assert abs(t.tail_hold + t.tail_move - TAIL_HOLD - TAIL_MOVE) <= 1.5
    for gloss, frames in SIGNS.items():
        row = model.vocab.index[gloss] - 4
        assert abs(model.core_frames[row] - frames) <= 1.5, gloss


def test_generated_sentence_matches_a_speed_one_sentence(model: GlossDictionary) -> None:
    glosses = ["B", "A", "D", "C"]
    target, _ = _sentence(glosses, 1.0)
    out = model.generate([glosses])[0]
    assert abs(len(out) - len(target)) <= 3
    assert out.data.shape[1:] == (L.NUM_WHOLEBODY, 3)
    assert (out.confidence[:, UNLABELLED] == 0).all()
    assert (np.delete(out.confidence, UNLABELLED, 1) == 1).all()
    # Each sign is there: some frame shows its first and some its last pose (the signs' hand
    # positions lie >= 0.1 apart, so a wrong or averaged sign fails).
    for gloss in glosses:
        for end in (0, -1):
            pose = _core(gloss, SIGNS[gloss])[end, HANDS]
            assert np.abs(out.xy[:, HANDS] - pose).mean((1, 2)).min() < 0.01, (gloss, end)


def test_core_is_one_real_occurrence_never_the_mean() -> None:
    """Two different performances of X: the stored core is one of them, not their average."""
    first, second = _core("A", 9), _core("C", 9)  # the two performances of X
    rng = np.random.default_rng(1)  # varied contexts: the transitions must differ to be found
    base = [(list(rng.choice(list(SIGNS), 4)), 1.0) for _ in range(40)]
    extra = [(["A", "X", "B"], 1.0, {"X": first}), (["B", "X", "C"], 1.0, {"X": second})]
    model = build_dictionary(_data(base + extra))
    row = model.vocab.index["X"] - 4
    stored = model.cores[model.offsets[row] : model.offsets[row + 1]]
    joints = model.joints
    tails = [c[-len(stored) :, joints] for c in (first, second)]
    assert any(np.abs(stored - t).max() < 2e-3 for t in tails)
    mean = (tails[0] + tails[1]) / 2
    assert np.abs(stored - mean).max() > 0.05


def test_medoid_picks_the_central_clip_and_a_real_one() -> None:
    clips = [np.full((5, 3, 2), v, np.float32) for v in (0.0, 0.4, 0.5, 0.6, 2.0)]
    assert medoid(clips, 4, np.ones(3)) == 2  # least summed distance: 0.5, not the mean 0.7
    pair = [np.zeros((4, 3, 2)), np.ones((6, 3, 2))]
    assert medoid(pair, 4, np.ones(3)) in (0, 1)
    assert resample(np.arange(5.0)[:, None], 3)[:, 0].tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_stream_equals_generate(model: GlossDictionary, chunk: int) -> None:
    glosses = ["C", "A", "B"]
    whole = model.generate([glosses])[0].data
    parts = list(model.generate_stream(glosses, chunk_frames=chunk))
    assert all(1 <= len(p) <= chunk for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_stream_yields_the_first_gloss_before_building_the_next(
    model: GlossDictionary, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    core = GlossDictionary._core
    monkeypatch.setattr(model, "_core", lambda row, n: built.append(row) or core(model, row, n))
    stream = model.generate_stream(["D", "B", "C"], chunk_frames=4)
    first = next(stream)
    assert len(first) == 4 and built == [model.vocab.index["D"] - 4]
    rest = list(stream)
    assert len(built) == 3 and rest


def test_max_frames_cuts_the_tail(model: GlossDictionary) -> None:
    out = model.generate([["A", "B", "C", "D"]], max_frames=20)[0]
    assert len(out) == 20
    with pytest.raises(ValueError, match="max_frames"):
        model.generate([["A"]], max_frames=0)
    with pytest.raises(ValueError, match="empty"):
        model.generate([[]])


def test_unknown_gloss_holds_the_previous_pose(model: GlossDictionary) -> None:
    frames = model.plan(["A", "UNSEEN", "B"])
    out = model.generate([["A", "UNSEEN", "B"]])[0].xy
    start = int(frames[:3].sum())  # lead hold, entry, core A
    hold = out[start : start + int(frames[3] + frames[4])]
    assert len(hold) >= 2 and np.abs(hold - out[start - 1]).max() == 0.0
    # ... for the pooled transition + core frames, rescaled as the whole sentence is.
    t, glosses = model.timing, ["A", "UNSEEN", "B"]
    scale = model.predicted_frames(glosses) / model.planned_frames(glosses)
    assert abs(len(hold) - scale * (t.transition_frames + t.core_frames)) <= 1.0


def test_save_load_round_trip(model: GlossDictionary, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "dict")
    loaded = load_g2p(tmp_path / "dict")
    assert isinstance(loaded, GlossDictionary)
    assert loaded.config == model.config and loaded.timing == model.timing
    glosses = [["A", "C"], ["D", "UNSEEN", "B", "A"]]
    for a, b in zip(model.generate(glosses), loaded.generate(glosses), strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    meta = json.loads((tmp_path / "dict" / "config.json").read_text())
    assert meta["model_type"] == "GlossDictionary" and meta["language"] == "de"
    assert model.cores.shape[1] == L.NUM_WHOLEBODY - len(UNLABELLED)  # only labelled joints


def test_packed_clips_are_as_fine_as_float16() -> None:
    """uint8 steps above each clip's own minimum: within half a step (a clip spanning 0.3 of
    the frame: 6e-4) of the float clip, finer than float16 itself is near 1 (ulp 9.8e-4); one
    byte a value plus one float16 frame a clip (the minimum), against two bytes a value."""
    rng = np.random.default_rng(0)
    clips = [
        (rng.uniform(0.2, 0.9, (1, 40, 2)) + rng.uniform(-0.15, 0.15, (n, 40, 2))).astype(
            np.float32
        )
        for n in (1, 9, 14)
    ]
    arrays = pack_cores(clips)
    frames = unpack_cores(arrays)
    for clip, a, b, step in zip(clips, arrays["offsets"], arrays["offsets"][1:],
                                arrays["cores_step"], strict=False):  # fmt: skip
        assert np.all(np.abs(frames[a:b] - clip) <= step / 2 + 1e-6)
        assert step.max() <= 0.3 / 255 + 1e-6
    stored = sum(arrays[k].nbytes for k in ("cores_q", "cores_low", "cores_step"))
    assert stored == (24 + 3 * 2) * 40 * 2 + 3 * 2 * 4


def test_float16_folders_from_before_the_packing_still_load(
    model: GlossDictionary, tmp_path: Path
) -> None:
    """A folder written with ``cores`` float16 (stop 36 and before) loads, packed on the way
    in, generates what it did to within a quantisation step, and saves in the packed form."""
    folder = model.save_pretrained(tmp_path / "new")
    arrays = load_file(str(folder / "model.safetensors"))
    legacy = {k: v for k, v in arrays.items() if not k.startswith("cores_")}
    legacy["cores"] = model.cores.astype(np.float16)
    save_file(legacy, str(folder / "model.safetensors"))
    old = GlossDictionary.from_pretrained(folder)
    assert "cores" not in old.arrays and old.arrays["cores_q"].dtype == np.uint8
    assert np.abs(old.cores - model.cores).max() < 2e-3
    glosses = [["A", "C", "B"]]
    for a, b in zip(model.generate(glosses), old.generate(glosses), strict=True):
        assert a.data.shape == b.data.shape and np.abs(a.data - b.data).max() < 2e-3
    again = GlossDictionary.from_pretrained(old.save_pretrained(tmp_path / "again"))
    np.testing.assert_array_equal(again.cores, old.cores)


def test_corrupt_folder_is_a_clear_error(model: GlossDictionary, tmp_path: Path) -> None:
    folder = model.save_pretrained(tmp_path / "dict")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cannot read model.safetensors"):
        GlossDictionary.from_pretrained(folder)
    with pytest.raises(FileNotFoundError):
        GlossDictionary.from_pretrained(tmp_path / "missing")


def test_text2pose_json_must_name_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / PIPELINE_NAME).write_text(json.dumps({"language": "de", "g2p": "../g2p"}))
    with pytest.raises(ValueError, match="subfolder"):
        TextToPose.from_pretrained(tmp_path)


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="core_threshold"):
        DictionaryConfig(core_threshold=1.5)
    with pytest.raises(ValueError, match="unknown"):
        DictionaryConfig.from_dict({"hand_weigth": 2.0})


def test_build_command(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``slp train text2pose --stage dict`` on the first 40 PHOENIX training sentences."""
    from slp_pipeline.cli import main

    config = tmp_path / "dict.yaml"
    config.write_text(
        f"model:\n  language: de\ntrain:\n  cache_dir: {tmp_path / 'cache'}\n  max_sentences: 40\n"
    )
    out = tmp_path / "run"
    assert main(["train", "text2pose", "--stage", "dict", "--config", str(config),
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "build.json").read_text())
    assert report["sentences"] == 40 and report["language"] == "de"
    model = load_g2p(out / "model")
    assert isinstance(model, GlossDictionary) and report["glosses"] == len(model.vocab) - 4
    assert len(model.generate([["REGEN", "NORD"]])[0]) > 0
    argv = ["train", "text2pose", "--stage", "dict", "--config", str(config), "--out", str(out)]
    assert main([*argv, "--epochs", "3"]) == 2
    assert "--epochs does not apply" in capsys.readouterr().err


def test_a_target_sets_the_sentence_length(model: GlossDictionary) -> None:
    glosses = ["B", "A", "D"]
    own = len(model.generate([glosses])[0])
    for target in (0.7 * own, 1.4 * own):
        for keep_signs in (False, True):
            aim = SentenceTarget(target, keep_signs)
            out = model.generate([glosses], targets=[aim])[0]
            assert abs(len(out) - target) <= 1.0
            assert int(model.plan(glosses, target=aim).sum()) == len(out)
            parts = list(model.generate_stream(glosses, chunk_frames=5, target=aim))
            np.testing.assert_array_equal(np.concatenate(parts), out.data)
    # keep_signs: the cores keep their own length, the holds and movements take the rest ...
    plan = model.plan(glosses)
    slow = model.plan(glosses, target=SentenceTarget(1.4 * plan.sum(), True))
    assert np.abs(slow[2:-1:2] - plan[2:-1:2]).max() <= 1
    assert slow[0] > plan[0] and slow[3] > plan[3]
    # ... down to half their length; a shorter target than that compresses every segment.
    tight = model.plan(glosses, target=SentenceTarget(0.3 * plan.sum(), True))
    assert (tight[2:-1:2] < plan[2:-1:2]).all()
    with pytest.raises(ValueError, match="> 0 frames"):
        SentenceTarget(0.0)
    with pytest.raises(ValueError, match="targets for"):
        model.generate([glosses, glosses], targets=[SentenceTarget(40.0)])


class _FixedT2G:
    """Stands in for the T2G: every sentence becomes the same glosses."""

    class config:  # noqa: N801 - the attribute TextToPose reads
        language = "de"

    def translate_normalized(self, sentences: list[str]) -> list[list[str]]:
        return [["A", "C", "B"] for _ in sentences]


def test_text_path_is_timed_by_the_length_model(model: GlossDictionary, tmp_path: Path) -> None:
    from text2pose.compare import _generate
    from text2pose.length import SentenceLength, SentenceLengthConfig
    from text2pose.pipeline import sentence_target

    texts = ["regen", "regen und wind", "regen und wind und sonne im norden"]
    length = SentenceLength.fit(SentenceLengthConfig("de", 1.0, 0.0), texts, [30, 60, 120])
    plain, timed = TextToPose(_FixedT2G(), model), TextToPose(_FixedT2G(), model, length)  # type: ignore[arg-type]
    short, long = (timed.generate(t) for t in (texts[0], texts[2]))
    assert len(short) < len(plain.generate(texts[0])) < len(long)  # same glosses, other texts
    target = sentence_target(model, length, texts[2], ["A", "C", "B"])
    assert target is not None and abs(len(long) - target.frames) <= 1
    stream = np.concatenate([c.data for c in timed.generate_stream(texts[2], chunk_frames=7)])
    np.testing.assert_array_equal(stream, long.data)
    assert timed.timeline(texts[2]).frames == len(long)
    (signed,) = timed.sign([texts[2]], [["A", "C", "B"]])
    np.testing.assert_array_equal(signed.data, long.data)
    (compared,) = _generate(model, [["A", "C", "B"]], [texts[2]], length)  # compare's T2G rows
    np.testing.assert_array_equal(compared.data, long.data)
    with pytest.raises(ValueError, match="sentence length model reads 'zh'"):
        TextToPose(
            _FixedT2G(), model, SentenceLength(SentenceLengthConfig("zh"), [], 0, 1, np.zeros(0))
        )  # type: ignore[arg-type]
