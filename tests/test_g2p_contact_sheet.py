"""scripts/g2p_contact_sheet.py: the sheet has one labelled row per model plus the target, at the
size its cells promise, for a tiny cached test split (two sentences) so no corpus is rendered."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text2pose.data import GlossVocab, g2p_data_from_sentences
from text2pose.g2p import G2PConfig, GlossToPose

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models/text2pose/de/g2p"


def _script():
    spec = importlib.util.spec_from_file_location(
        "g2p_contact_sheet", REPO / "scripts/g2p_contact_sheet.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A cache with the two shortest German test sentences (one of 4-8 glosses) and an untrained
    NAR G2P (the sheet's drawing, not the model's quality, is under test)."""
    from pgmm.data.synth.signer import SynthSigner

    if not (SHIPPED / "config.json").is_file():
        pytest.skip(f"no shipped G2P in {SHIPPED}")
    signer = SynthSigner(data_dir=shared_data, languages=["de"])
    sentences = signer.sentences("test", "de")
    short = sorted(sentences, key=lambda s: (s.num_frames, s.id))
    first = next(s for s in short if not 4 <= len(s.glosses) <= 8)
    readable = next(s for s in short if 4 <= len(s.glosses) <= 8)
    data = g2p_data_from_sentences(signer, [first, readable])
    root = tmp_path_factory.mktemp("sheet")
    data.save(root / "cache" / f"g2p_de_test_all_seed{signer.seed}.npz")
    vocab = GlossVocab.build(data.glosses)
    model = GlossToPose(G2PConfig(mode="nar", vocab_size=len(vocab), language="de"), vocab)
    model.set_normalisation(data)
    model.save_pretrained(root / "nar")
    return root, root / "nar"


def test_sheet_has_three_rows_of_cells(folders, tmp_path: Path, capsys) -> None:
    root, nar = folders
    sheet = _script()
    out = tmp_path / "sheet.png"
    argv = ["--lang", "de", "--columns", "3", "--cell-width", "128", "--old", str(nar),
            "--new", str(SHIPPED), "--cache", str(root / "cache"), "--out", str(out)]  # fmt: skip
    assert sheet.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    glosses = printed.split(": ", 1)[1].split()
    assert 4 <= len(glosses) <= 8  # the default sentence is the readable one, not the first

    cell_h, cell_w = sheet.cell_size(128)
    row_h = cell_h + sheet.CAPTION_H
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (sheet.TITLE_H + 3 * row_h, sheet.MARGIN + 3 * cell_w, 3)
    for row in range(3):
        top = sheet.TITLE_H + row * row_h
        label = image[top : top + cell_h, : sheet.MARGIN]
        cells = image[top : top + cell_h, sheet.MARGIN :]
        assert label.any() and cells.any(), f"row {row} lacks its label or its skeletons"


def test_bad_index_is_a_one_line_error(folders, tmp_path: Path, capsys) -> None:
    root, nar = folders
    argv = ["--lang", "de", "--sentence-index", "5", "--old", str(nar), "--new", str(SHIPPED),
            "--cache", str(root / "cache"), "--out", str(tmp_path / "x.png")]  # fmt: skip
    assert _script().main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: sentence index 5 outside 0..1"
    assert not (tmp_path / "x.png").exists()
