"""``text2pose.evaluate``: the side-by-side table on a case whose every number is known.

The stages are replaced by stand-ins with known behaviour -- a T2G that returns the corpus
glosses but drops the last gloss of the first sentence, a G2P that returns each sentence's
target pose sequence played at half speed (every frame twice) and a recognizer that reads
exactly the true pose sequences and nothing else -- so the table's numbers follow by hand:
DTW-MJE 0 (DTW ignores timing), a length error of one whole target length, back-translation
WER 1 for every generated row and 0 for the ground truth. The lexicon and mean-pose rows use the
real baselines; only their order is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import text2pose.evaluate as ev
from pgmm.metrics import recognizer as recognizer_module
from pgmm.pose.sequence import PoseSequence
from text2pose.baselines import canonical_sequence
from text2pose.data import G2PData
from text2pose.metrics import camera_view
from text2pose.t2g import gloss_scores

SENTENCES = 3
TRAIN_SENTENCES = 20  # enough for the baselines' statistics; the full split takes minutes


class _Config:
    language = "de"


def _t2g_output(glosses: list[list[str]]) -> list[list[str]]:
    """What the stand-in T2G says: the gold glosses, the first sentence without its last."""
    return [list(g[:-1]) if i == 0 else list(g) for i, g in enumerate(glosses)]


class StubT2G:
    def __init__(self, pairs: list[tuple[str, list[str]]]) -> None:
        texts, glosses = zip(*pairs, strict=True)
        self.table = dict(zip(texts, _t2g_output(list(glosses)), strict=True))

    def translate_normalized(self, texts: list[str]) -> list[list[str]]:
        return [list(self.table[t]) for t in texts]


class HalfSpeedG2P:
    """The true sequence of each sentence (found by its gold or T2G glosses), frames doubled."""

    def __init__(self, data: G2PData) -> None:
        glosses = [list(g) for g in data.glosses]
        self.poses = {}
        for key in (glosses, _t2g_output(glosses)):
            self.poses.update({tuple(g): p for g, p in zip(key, data.poses, strict=True)})
        self.labelled = data.labelled

    def generate(self, gloss_lists: list[list[str]]) -> list:
        out = []
        for glosses in gloss_lists:
            xy = np.repeat(np.asarray(self.poses[tuple(glosses)], np.float32), 2, axis=0)
            out.append(canonical_sequence(xy, self.labelled))
        return out


class StubTextToPose:
    def __init__(self, pairs: list[tuple[str, list[str]]], data: G2PData) -> None:
        self.language = "de"
        self.t2g, self.g2p = StubT2G(pairs), HalfSpeedG2P(data)

    def fit(self, glosses: list[str]) -> list[str]:
        return glosses

    def sign(self, sentences: list[str], glosses: list[list[str]]) -> list[PoseSequence]:
        return self.g2p.generate(glosses)  # no length model: the G2P's own timing


class ExactReader:
    """Recognizes only the exact true pose sequences as the camera sees them (by their bytes);
    anything else: []."""

    config = _Config()

    def __init__(self, data: G2PData) -> None:
        self.known = {
            self._key(
                camera_view(canonical_sequence(p, data.labelled)).to_layout("pgmm36").data
            ): list(g)
            for g, p in zip(data.glosses, data.poses, strict=True)
        }

    @staticmethod
    def _key(sample: np.ndarray) -> bytes:
        return np.asarray(sample, np.float32).tobytes()

    def recognize_batch(self, samples: list[np.ndarray]) -> list[list[str]]:
        return [self.known.get(self._key(s), []) for s in samples]


@pytest.fixture(scope="module")
def known_case(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run ``evaluate_text2pose`` on the stand-ins; returns (result, test-split G2P data)."""
    cache = tmp_path_factory.mktemp("g2p_cache")
    original = ev.build_g2p_data
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLP_SHARED_DATA", str(shared_data))

        def small(signer, split, language, cache_dir=None, max_sentences=None, progress=True):
            cap = TRAIN_SENTENCES if split == "train" else SENTENCES
            return original(signer, split, language, cache, max_sentences=cap, progress=False)

        mp.setattr(ev, "build_g2p_data", small)
        signer = ev.SynthSigner(languages=["de"])
        data = small(signer, "test", "de")
        pairs = ev.corpus_pairs("de", "test")[:SENTENCES]
        mp.setattr(ev.TextToPose, "from_pretrained", lambda _: StubTextToPose(pairs, data))
        reader = ExactReader(data)
        mp.setattr(recognizer_module.PoseCTCRecognizer, "from_pretrained", lambda _: reader)
        result = ev.evaluate_text2pose(
            "stub", "test", max_sentences=SENTENCES, cache_dir=cache, recognizer_dir="stub"
        )
    return result, data


def test_known_case_scores(known_case) -> None:
    result, data = known_case
    rows = result["rows"]
    assert (result["language"], result["split"], result["sentences"]) == ("de", "test", 3)
    gold = [list(g) for g in data.glosses]
    # T2G is scored hypothesis against reference: one gloss short costs brevity and n-grams.
    expected = gloss_scores(_t2g_output(gold), gold)
    assert {k: rows["T2G"][k] for k in expected} == expected
    assert expected["bleu4"] < 100 and gloss_scores(gold, _t2g_output(gold)) != expected
    mean_length = float(np.mean([len(p) for p in data.poses]))
    for name in ("G2P (gold glosses)", "T2G2P (text -> pose)"):
        row = rows[name]
        assert row["sentences"] == SENTENCES, name
        # Half speed: DTW aligns every target frame with its two copies at zero cost ...
        assert row["dtw_mje"] == pytest.approx(0.0, abs=1e-6), name
        assert row["dtw_mje_hands"] == pytest.approx(0.0, abs=1e-6), name
        # ... but the length is off by one whole target length, i.e. 100 %.
        assert row["duration_error_frames"] == pytest.approx(mean_length), name
        assert row["duration_error_relative"] == pytest.approx(1.0), name
        # The reader knows only the true sequences: every gloss is deleted.
        assert (row["bt_wer"], row["bt_bleu4"]) == (1.0, 0.0), name
    assert rows["ground-truth poses"] == {"bt_wer": 0.0, "bt_bleu4": 100.0}
    assert rows["mean pose"]["bt_wer"] == 1.0 and rows["lexicon (T2G glosses)"]["bt_wer"] == 1.0
    lexicon = rows["lexicon (gold glosses)"]["dtw_mje"]
    assert 0 < lexicon < rows["mean pose"]["dtw_mje"]  # the lexicon knows the signs


def test_known_case_markdown(known_case, tmp_path: Path) -> None:
    result, _ = known_case
    ev.write(result, tmp_path)
    table = (tmp_path / "text2pose_eval.md").read_text(encoding="utf-8")
    assert "**de test** (3 sentences)" in table
    t2g = result["rows"]["T2G"]
    assert f"| ours | {t2g['bleu1']} | {t2g['bleu2']} | {t2g['bleu3']} | {t2g['bleu4']} " in table
    assert "| ground-truth poses | – | – | – | – | 0.000 | 100.00 |" in table
    line = next(x for x in table.splitlines() if x.startswith("| G2P (gold glosses) |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:3] == ["0.0000", "0.0000"] and cells[5:] == ["1.000", "0.00"]


def test_recognizer_of_another_language_is_refused(monkeypatch, shared_data: Path) -> None:
    class Chinese:
        class config:  # noqa: N801 - mirrors RecognizerConfig's attribute
            language = "zh"

    class Model:
        language = "de"

    monkeypatch.setattr(ev.TextToPose, "from_pretrained", lambda _: Model())
    monkeypatch.setattr(recognizer_module.PoseCTCRecognizer, "from_pretrained", lambda _: Chinese)
    with pytest.raises(ValueError, match="reads 'zh' glosses but the model signs 'de'"):
        ev.evaluate_text2pose("stub", recognizer_dir="stub")
