"""SentencePiece tokenizers for the text side and the gloss side of each language.

Ids are fixed across all our models (pad 0, bos 1, eos 2, unk 3) so that the transformers
configs can name them without looking at the model file. Glosses are trained as a ``word``
model: a gloss is one sign, and splitting it into sub-word pieces would let the decoder emit
glosses that do not exist.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import torch

from pgmm.checkpoint import atomic_write

PAD, BOS, EOS, UNK = 0, 1, 2, 3


class Tokenizer:
    """A loaded SentencePiece model with the project's special ids."""

    def __init__(self, model_proto: bytes) -> None:
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        specials = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if specials != (PAD, BOS, EOS, UNK):
            raise ValueError("tokenizer was not trained with pad/bos/eos/unk = 0/1/2/3")

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
    ) -> Tokenizer:
        """Train in memory; ``vocab_size`` is an upper bound for ``word`` models (clipped to the
        number of distinct words so small corpora do not fail)."""
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise ValueError("no training text for the tokenizer")
        if model_type == "word":
            vocab_size = min(vocab_size, len({w for line in lines for w in line.split()}) + 4)
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD,
            bos_id=BOS,
            eos_id=EOS,
            unk_id=UNK,
            hard_vocab_limit=False,  # small corpora: vocab_size is an upper bound
            split_digits=True,
            minloglevel=2,
        )
        return cls(proto.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model missing: {path}")
        try:
            return cls(path.read_bytes())
        except RuntimeError as e:  # sentencepiece's error for bytes that are not a model
            raise ValueError(f"{path}: not a SentencePiece model ({e})") from e

    def save(self, path: str | Path) -> None:
        atomic_write(path, self.proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return ids + [EOS] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i > UNK or i == UNK])


def pad_ids(rows: list[list[int]], fill: int = PAD) -> torch.Tensor:
    """Token id rows as one ``(rows, longest)`` tensor, padded with ``fill``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
