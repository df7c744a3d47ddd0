"""The real text-side corpora: PHOENIX-2014T (German) and CSL-Daily (Chinese) sentences.

Each line of ``corpora/<corpus>.<split>.jsonl`` holds a sentence, its gloss sequence, the
signer id and the real video length (``num_frames`` at 25 fps). SynthSigner signs exactly these
sentences, so text2pose trains on real text with realistic sign structure and timing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CORPUS_FILES = {"de": "phoenix-2014t", "zh": "csl-daily"}
SPLITS = ("train", "dev", "test")
LANGUAGES = tuple(CORPUS_FILES)
T = TypeVar("T")


@dataclass(frozen=True)
class CorpusSentence:
    """One corpus sentence. ``id`` is unique across both corpora and safe as a file name."""

    id: str
    name: str
    split: str
    language: str
    signer: str
    glosses: tuple[str, ...]
    text: str
    num_frames: int


def default_data_dir() -> Path:
    """Where the shared data lives: ``$SLP_SHARED_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SLP_SHARED_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


def corpus_path(language: str, split: str, data_dir: str | Path | None = None) -> Path:
    if language not in CORPUS_FILES:
        raise ValueError(f"unknown language {language!r}; choose from {list(CORPUS_FILES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    root = Path(data_dir) if data_dir else default_data_dir()
    return root / "corpora" / f"{CORPUS_FILES[language]}.{split}.jsonl"


def load_corpus(
    language: str, split: str, data_dir: str | Path | None = None
) -> list[CorpusSentence]:
    """Read one corpus split; a missing file or a malformed line is a one-line error."""
    path = corpus_path(language, split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus file not found: {path} (set SLP_SHARED_DATA or --data-dir to the folder "
            "that holds corpora/phoenix-2014t.*.jsonl and corpora/csl-daily.*.jsonl)"
        )
    sentences = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name = str(row["name"])
                glosses = tuple(str(row["gloss"]).split())
                num_frames = int(row["num_frames"])
                text, signer = str(row["text"]), str(row["signer"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: malformed corpus line ({e})") from e
            base = name.split("/")[-1]
            sentences.append(
                CorpusSentence(
                    id=f"{language}_{base}",
                    name=name,
                    split=split,
                    language=language,
                    signer=signer,
                    glosses=glosses,
                    text=text,
                    num_frames=num_frames,
                )
            )
    return sentences


def round_robin(queues: Sequence[Sequence[T]], n: int) -> list[T]:
    """The first ``n`` of: every queue's first item, then every queue's second, ... (a queue
    that has run out is passed over), so each queue gets a fair share in its own order."""
    depth = max((len(q) for q in queues), default=0)
    return [q[k] for k in range(depth) for q in queues if k < len(q)][:n]
