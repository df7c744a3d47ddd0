"""Word (gloss) error rate of a sign recogniser run on generated videos.

WER asks whether generated signing is still *intelligible*: a continuous sign-language
recogniser reads the glosses back and its output is compared with the reference glosses,
``WER = (S + D + I) / N`` summed over the corpus (substitutions, deletions, insertions of a
minimum-edit alignment; N reference glosses). The recogniser is pluggable through the
:class:`GlossRecognizer` protocol so the metric does not depend on a particular model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class GlossRecognizer(Protocol):
    """Anything that turns one sample (a pose sequence or a video) into a gloss sequence."""

    def recognize(self, sample: torch.Tensor | np.ndarray) -> list[str]:
        """Glosses recognised in ``sample``, in signing order."""
        ...


@dataclass(frozen=True)
class EditCounts:
    """Edit operations of one minimum-cost alignment, and the reference length."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Levenshtein alignment of two token sequences, split into S, D and I.

    ``S + D + I`` is always the edit distance. When several alignments are minimal, the
    backtrace prefers match/substitution, then deletion, then insertion, so the split (not the
    total) follows that convention, which papers report as "del/ins".
    """
    n, m = len(reference), len(hypothesis)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1])
            cost[i, j] = min(diagonal, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    s = d = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            mismatch = reference[i - 1] != hypothesis[j - 1]
            if cost[i, j] == cost[i - 1, j - 1] + mismatch:
                s += int(mismatch)
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            d += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return EditCounts(s, d, ins, n)


def word_error_rate(
    references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]
) -> float:
    """Corpus WER: total edits over total reference glosses (not a mean of sentence WERs)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = EditCounts(0, 0, 0, 0)
    for ref, hyp in zip(references, hypotheses, strict=True):
        total = total + edit_counts(ref, hyp)
    if total.reference_length == 0:
        raise ValueError("WER is undefined for references without any gloss")
    return total.errors / total.reference_length


def wer_for_videos(
    recognizer: GlossRecognizer,
    videos: Iterable[torch.Tensor | np.ndarray],
    references: Sequence[Sequence[str]],
) -> float:
    """Run ``recognizer`` on every generated video (or pose sequence) and score it by WER."""
    hypotheses = [recognizer.recognize(video) for video in videos]
    return word_error_rate(references, hypotheses)
