"""``slp eval --task text``: the end-to-end legibility table, on two short sentences with tiny
models (random tiny PGMM, tiny evaluator and recogniser, a text2pose double), in seconds.

What must hold whatever the models learnt: the rows, files and resume behaviour; and, with a
recogniser that knows the answer only for the exact ground-truth driving poses, that the
ground-truth pose row scores WER 0 while rows the recogniser cannot read score WER 1.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from standins import SynthTextToPose, tiny_pipeline

from pgmm.data.synth.signer import SynthSigner
from pgmm.metrics.recognizer import PoseCTCRecognizer, RecognizerConfig, build_vocabulary
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.pose.sequence import PoseSequence
from pgmm.video import probe
from slp_pipeline import evaluate_text as et
from slp_pipeline.cli import main
from slp_pipeline.config import PipelineConfig, load_serve_config
from text2pose.baselines import LexiconBaseline
from text2pose.data import build_g2p_data

REPO = Path(__file__).resolve().parents[1]
LANG, SPLIT = "de", "dev"  # the first two German dev sentences: 42 and 111 frames


class GlossingTextToPose(SynthTextToPose):
    """The serving stand-in plus the T2G glosses the lexicon row needs (the first three words),
    signing fast so the test stays short."""

    FRAMES_PER_WORD = 4

    def glosses(self, text: str) -> list[list[str]]:
        return [[w.upper() for w in text.split()[:3]]]


@pytest.fixture(scope="module")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny models on disk, the serve config that names them, and the SynthSigner corpus."""
    root = tmp_path_factory.mktemp("e2e")
    serve = copy.deepcopy(load_serve_config(REPO / "configs/serve/cpu.yaml"))
    pipeline = tiny_pipeline(root / "models", serve)
    args = serve["applications"][0]["args"]
    args.update(
        text2pose=pipeline.text2pose,
        renderers={"tpsmm": pipeline.renderers["tpsmm"], "skeleton": "skeleton"},
        default_renderer="tpsmm",
        pose_estimator=None,
        signers_dir=str(root / "signers"),
    )
    (root / "serve.yaml").write_text(yaml.safe_dump(serve))
    signer = SynthSigner(data_dir=shared_data, languages=[LANG])
    torch.manual_seed(1)
    HRNetLite(HRNetLiteConfig(widths=(4, 8), stem_width=8)).save_pretrained(root / "evaluator")
    vocab = build_vocabulary(signer.sentences(None, LANG))
    config = RecognizerConfig(LANG, vocab, hidden=8, rnn_hidden=8, rnn_layers=1)
    PoseCTCRecognizer(config).save_pretrained(root / "recognizer")
    train = build_g2p_data(signer, "train", LANG, max_sentences=30, progress=False)
    return {
        "root": root,
        "signer": signer,
        "lexicon": LexiconBaseline(signer, train),
        "pipeline": PipelineConfig.from_dict(args),
    }


def settings(world: dict, out: Path, renderers: tuple[str, ...]) -> et.TextEvalSettings:
    root = world["root"]
    return et.TextEvalSettings(
        language=LANG, out=out, split=SPLIT, max_sentences=2, renderers=renderers,
        evaluator=root / "evaluator", recognizer=root / "recognizer",
    )  # fmt: skip


def chain(world: dict, out: Path, renderers: tuple[str, ...]) -> et.Chain:
    pipeline = dataclasses.replace(
        world["pipeline"], text2pose_loader=GlossingTextToPose.from_pretrained
    )
    return et.load_chain(
        settings(world, out, renderers), pipeline, world["signer"], world["lexicon"]
    )


def test_cli_writes_the_table_media_and_docs_and_resumes(
    world: dict, shared_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import slp_pipeline.stages

    monkeypatch.setenv("SLP_SHARED_DATA", str(shared_data))
    monkeypatch.setattr(
        slp_pipeline.stages, "load_text_to_pose", GlossingTextToPose.from_pretrained
    )
    monkeypatch.setattr(et, "load_lexicon", lambda signer, language: world["lexicon"])
    monkeypatch.setattr(et, "SynthSigner", lambda languages: world["signer"])
    root, out, doc = world["root"], tmp_path / "out", tmp_path / "results.md"
    doc.write_text("# Results\n\nhand-written\n")
    args = [
        "eval", "--task", "text", "--language", LANG, "--split", SPLIT, "--max-sentences", "2",
        "--renderers", "synth", "skeleton", "tpsmm", "--evaluator", str(root / "evaluator"),
        "--recognizer", str(root / "recognizer"), "--config", str(root / "serve.yaml"),
        "--out", str(out), "--docs", str(doc),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    first = json.loads((out / "e2e.json").read_text(), parse_constant=pytest.fail)

    rows = first["rows"]
    want = [(p, None) for p in et.POSE_SOURCES]
    want += [(p, r) for r in ("synth", "skeleton", "tpsmm") for p in et.POSE_SOURCES]
    assert [(r["poses"], r["renderer"]) for r in rows] == want
    assert [r["chain"] for r in rows if r["product"]] == [
        "text2pose poses → tpsmm → evaluator → recogniser"
    ]
    assert (first["language"], first["split"], first["sentences"]) == (LANG, SPLIT, 2)
    assert (first["signer"], first["identity"]) == ("default", 10)
    assert set(first["models"]) == {"evaluator", "recognizer", "text2pose", "renderer tpsmm"}
    lengths = [s.num_frames for s in world["signer"].sentences(SPLIT, LANG)[:2]]
    for row in rows:
        assert row["sentences"] == 2 and row["failed"] == 0
        lo, hi = row["wer_interval"]
        assert lo <= row["wer"] <= hi and len(row["wer_halves"]) == 2
        assert 0.0 <= row["bleu4"] <= 100.0 and row["seconds_per_sentence"] > 0
        if row["poses"] == "ground truth":
            assert row["frames"] == sum(lengths)  # the corpus sentences' real lengths
        lines = (out / "rows" / f"{row['key']}.jsonl").read_text().splitlines()
        assert len(lines) == 2
    assert f"results: {out / 'e2e.md'}" in printed and "| **text2pose** | **tpsmm** |" in printed

    # Media: the product's poses drawn by each renderer, tiles of 128 px side by side.
    info = probe(out / "side_by_side.mp4")
    t2p_frames = next(r["frames"] for r in rows if r["key"] == "text2pose.poses")
    assert (info.width, info.num_frames) == (3 * 128, t2p_frames)
    assert (out / "contact_sheet.png").stat().st_size > 0
    assert len(list((out / "media").glob("*.mp4"))) == 2  # kept for a resumed run

    text = doc.read_text()
    assert text.startswith("# Results\n\nhand-written\n\n<!-- e2e:de:begin -->")
    assert "slp eval --task text --language de --split dev --max-sentences 2" in text

    # Re-run: every row comes from the cache (nothing appended), the docs block is replaced.
    assert main(args) == 0
    again = json.loads((out / "e2e.json").read_text())
    assert [{**r, "seconds_per_sentence": 0} for r in again["rows"]] == [
        {**r, "seconds_per_sentence": 0} for r in rows
    ]
    assert all(
        len((out / "rows" / f"{r['key']}.jsonl").read_text().splitlines()) == 2 for r in rows
    )
    assert doc.read_text().count("<!-- e2e:de:begin -->") == 1

    # A run folder is tied to its models; missing models are one line naming the command.
    torch.manual_seed(5)
    HRNetLite(HRNetLiteConfig(widths=(4, 8), stem_width=8)).save_pretrained(tmp_path / "other")
    swap = [*args]
    swap[swap.index(str(root / "evaluator"))] = str(tmp_path / "other")
    assert main(swap) == 2
    assert "holds results of other models (evaluator)" in capsys.readouterr().err
    swap[swap.index("--recognizer") + 1] = str(tmp_path / "nope")
    assert main(swap) == 2
    err = capsys.readouterr().err
    assert f"recognizer model not found: {tmp_path / 'nope'}" in err
    assert "slp train recognizer --language de" in err


class GroundTruthReader:
    """A recogniser that knows each sentence's glosses only for its exact ground-truth driving
    poses, and reads nothing from anything else."""

    def __init__(self, known: list[tuple[torch.Tensor, list[str]]]) -> None:
        self.known = known

    def recognize(self, sample: torch.Tensor) -> list[str]:
        for keypoints, glosses in self.known:
            if keypoints.shape == sample.shape and torch.equal(keypoints, sample):
                return glosses
        return []


def test_known_perfect_and_known_bad_rows(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    loaded = chain(world, out, ("synth",))
    sources = et.PoseSources(loaded, LANG, "default", 10)
    sentences = world["signer"].sentences(SPLIT, LANG)[:2]
    known = [
        (et.pose_keypoints(sources.make(et.GROUND_TRUTH, s).pose), list(s.glosses))
        for s in sentences
    ]
    loaded = dataclasses.replace(loaded, recognizer=GroundTruthReader(known))
    result = et.run_text_eval(settings(world, out, ("synth",)), loaded, progress=False)
    rows = {r.key: r for r in result.rows}
    perfect = rows["ground_truth.poses"]
    assert (perfect.wer, perfect.wer_interval, perfect.wer_halves) == (0.0, (0.0, 0.0), (0.0, 0.0))
    assert perfect.bleu4 == pytest.approx(100.0)
    # The same poses drawn and read back by a random evaluator, and other pose sources: unread.
    for key in ("ground_truth.synth", "text2pose.poses", "lexicon.poses", "text2pose.synth"):
        assert rows[key].wer == 1.0 and rows[key].wer_interval == (1.0, 1.0), key
        assert rows[key].bleu4 == 0.0
    table = et.markdown_table(result)
    assert "| ground truth | — (recogniser reads the poses) | 0.000 | 0.000–0.000 |" in table


def test_bootstrap_interval_and_halves() -> None:
    scores = [
        et.SentenceScore(f"s{i}", ["A", "B"], hyp, 10, 1.0, 0.5)
        for i, hyp in enumerate([["A", "B"], ["A", "B"], ["A"], []])
    ]
    row = et.summarize(et.RowSpec("text2pose", "full"), scores)
    assert row.wer == pytest.approx(3 / 8)  # corpus WER: 0 + 0 + 1 + 2 errors over 8 glosses
    assert row.wer_halves == (0.0, 0.75)
    lo, hi = row.wer_interval
    assert 0.0 <= lo < row.wer < hi <= 1.0
    assert row.product and row.seconds_per_sentence == 1.5 and row.frames == 40
    assert et.summarize(et.RowSpec("text2pose", "full"), scores).wer_interval == (lo, hi)  # seeded


def test_settings_and_renderers_are_checked(world: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a built-in SynthSigner identity"):
        et.TextEvalSettings(language=LANG, out=tmp_path, signer="alice")
    with pytest.raises(ValueError, match="max-sentences must be >= 1"):
        et.TextEvalSettings(language=LANG, out=tmp_path, max_sentences=0)
    with pytest.raises(ValueError, match="unknown renderer 'nope'"):
        chain(world, tmp_path, ("synth", "nope"))
    with pytest.raises(ValueError, match="given twice"):
        chain(world, tmp_path, ("tpsmm", "tpsmm"))
    bad = dataclasses.replace(
        settings(world, tmp_path, ("synth",)), evaluator=tmp_path / "x", recognizer=tmp_path / "y"
    )
    with pytest.raises(FileNotFoundError) as missing:  # every missing model in one line
        et.load_chain(bad, world["pipeline"], world["signer"], world["lexicon"])
    message = str(missing.value)
    assert f"evaluator model not found: {tmp_path / 'x'}" in message and "\n" not in message
    assert f"; recognizer model not found: {tmp_path / 'y'}" in message
    outside = PoseSequence(np.array([[[1.2, 0.5, 1.0]] * 133], np.float32))  # x > 1
    keypoints = et.pose_keypoints(outside)
    assert float(keypoints[..., 2].max()) == 0.0
