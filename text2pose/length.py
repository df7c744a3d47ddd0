"""``SentenceLength``: how many frames a sentence is signed in, read from its text as well.

The dictionary G2P times a sentence from its glosses alone
(:meth:`text2pose.dictionary.GlossDictionary.predicted_frames`). On the text path those glosses
come from the T2G, which leaves out the glosses it doubts -- its minimum-Bayes-risk output has
~7 % fewer glosses than the gold sequence -- and every gloss left out makes the signed sentence
shorter than the sentence the text describes. The corpus length a sentence is measured
against (``num_frames``: the length of the real video) also shows in the text itself: longer
sentences and some words (numbers, place names) take longer to sign. This model reads it:

* a ridge regression ``log T = a + b log n + sum of the tokens' terms`` over the training
  sentences (``n``: the tokens of the normalised text -- words for German, characters for
  Chinese -- as :func:`text2pose.data.text_tokens` makes them; only the token terms are
  penalised, by ``ridge``);
* joined with the gloss estimate in log space,
  ``log T = w log T_gloss + (1 - w) log T_text`` (``w`` = ``gloss_weight``), so that neither a
  dropped gloss nor an unusual wording alone sets the length. ``ridge`` and ``w`` are chosen
  on dev by length error with the shipped T2G's glosses (docs/text2pose.md).

The model changes only how long the sentence's signs and transitions last, never which signs
are made: :class:`text2pose.pipeline.TextToPose` hands the joined length to the dictionary as
its target (:class:`text2pose.dictionary.SentenceTarget`): either every segment is rescaled,
as its own length model does, or (``keep_signs``) the signs keep the speed the glosses give
them and the holds and movements between them take up the difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from pgmm.checkpoint import (
    WEIGHTS_NAME,
    atomic_write,
    dataclass_from_dict,
    read_config,
    write_config,
)
from text2pose.data import text_tokens

VOCAB_NAME = "tokens.json"


@dataclass(frozen=True)
class SentenceLengthConfig:
    """Every setting the fitted weights depend on."""

    language: str
    ridge: float = 10.0  # L2 penalty on the per-token terms
    gloss_weight: float = 0.3  # w: the gloss estimate's share of log T
    keep_signs: bool = False  # reach the length by pausing between signs, not slowing them

    def __post_init__(self) -> None:
        if self.language not in ("de", "zh"):
            raise ValueError(f"language must be de or zh, got {self.language!r}")
        if self.ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if not 0.0 <= self.gloss_weight <= 1.0:
            raise ValueError(f"gloss_weight must be in [0, 1], got {self.gloss_weight}")


class SentenceLength:
    """The fitted text length model and its join with a gloss-based estimate."""

    def __init__(
        self,
        config: SentenceLengthConfig,
        tokens: Sequence[str],
        intercept: float,
        slope: float,
        terms: np.ndarray,
    ) -> None:
        if len(tokens) != len(terms):
            raise ValueError(f"{len(tokens)} tokens but {len(terms)} token terms")
        self.config = config
        self.tokens = tuple(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.intercept, self.slope = float(intercept), float(slope)
        self.terms = np.asarray(terms, np.float64)

    @classmethod
    def fit(
        cls, config: SentenceLengthConfig, texts: Sequence[str], frames: Sequence[float]
    ) -> SentenceLength:
        """Ridge regression of ``log frames`` on ``[1, log n, token counts]`` (normal
        equations: a few thousand tokens, so one dense solve)."""
        if len(texts) != len(frames) or not texts:
            raise ValueError("need equally many (>= 1) texts and frame counts")
        tokenised = [text_tokens(t, config.language) for t in texts]
        vocab = sorted({tok for toks in tokenised for tok in toks})
        model = cls(config, vocab, 0.0, 0.0, np.zeros(len(vocab)))
        x = np.stack([model._features(toks) for toks in tokenised])
        penalty = np.full(x.shape[1], config.ridge)
        penalty[:2] = 0.0
        y = np.log(np.asarray(frames, np.float64))
        coef = np.linalg.lstsq(x.T @ x + np.diag(penalty), x.T @ y, rcond=None)[0]
        model.intercept, model.slope, model.terms = float(coef[0]), float(coef[1]), coef[2:]
        return model

    def _features(self, tokens: Sequence[str]) -> np.ndarray:
        x = np.zeros(2 + len(self.tokens))
        x[:2] = 1.0, np.log(max(len(tokens), 1))
        for tok in tokens:
            row = self.index.get(tok)
            if row is not None:  # a token never seen in training adds nothing
                x[2 + row] += 1.0
        return x

    def text_frames(self, text: str) -> float:
        """``T_text``: the length read from the text alone."""
        x = self._features(text_tokens(text, self.config.language))
        coef = np.concatenate([[self.intercept, self.slope], self.terms])
        return float(np.exp(x @ coef))

    def frames(self, text: str, gloss_frames: float) -> float:
        """The joined length ``exp(w log T_gloss + (1 - w) log T_text)``."""
        if gloss_frames <= 0:
            raise ValueError(f"gloss_frames must be > 0, got {gloss_frames}")
        w = self.config.gloss_weight
        return float(np.exp(w * np.log(gloss_frames) + (1 - w) * np.log(self.text_frames(text))))

    def save_pretrained(self, directory: str | Path) -> Path:
        """``config.json`` (settings, intercept, slope), ``model.safetensors`` (the token
        terms, no pickle) and ``tokens.json``."""
        config = {**asdict(self.config), "intercept": self.intercept, "slope": self.slope}
        directory = write_config(directory, type(self).__name__, config)
        atomic_write(directory / WEIGHTS_NAME, save({"terms": np.ascontiguousarray(self.terms)}))
        atomic_write(directory / VOCAB_NAME, json.dumps(list(self.tokens), ensure_ascii=False))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SentenceLength:
        """Load a folder written by :meth:`save_pretrained`; a missing or corrupt file is a
        ``FileNotFoundError``/``ValueError`` naming the folder."""
        directory = Path(directory)
        meta = read_config(directory, cls.__name__, "sentence length model", files=(VOCAB_NAME,))
        try:
            intercept, slope = float(meta.pop("intercept")), float(meta.pop("slope"))
            config = dataclass_from_dict(SentenceLengthConfig, meta, f"{directory} config")
            tokens = json.loads((directory / VOCAB_NAME).read_text(encoding="utf-8"))
            terms = load_file(str(directory / WEIGHTS_NAME))["terms"]
            return cls(config, [str(t) for t in tokens], intercept, slope, terms)
        except Exception as e:  # bad JSON, a missing key, a corrupt safetensors file
            raise ValueError(f"{directory}: not a sentence length model ({e})") from e
