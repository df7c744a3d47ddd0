"""Input text → the form the corpora were written in, with clear errors for what cannot be signed.

Models are trained on PHOENIX-2014T (German: lower-case, punctuation split off as its own token,
e.g. ``"... im norden ."``) and CSL-Daily (Chinese: no spaces). User text arrives in every
other form -- capitals, glued punctuation, full-width characters, emoji, several sentences --
so each language gets one normalisation that maps it onto the training form. Behaviour for odd
input (documented in docs/text2pose.md):

* empty / whitespace-only text, an unsupported language code -> :class:`TextInputError`;
* emoji, symbols and control characters are dropped (they carry no signable content);
* German text with Chinese characters (or Chinese text without any) -> :class:`TextInputError`
  naming the other language, since the model of the wrong language would produce nonsense;
* text longer than ``max_chars`` is split on sentence boundaries; a single sentence that is still
  too long is an error rather than a silently truncated video.
"""

from __future__ import annotations

import re
import unicodedata

LANGUAGES = ("de", "zh")
MAX_SENTENCE_CHARS = {"de": 300, "zh": 120}
MAX_TEXT_CHARS = 5000

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_DE_KEEP = re.compile(r"[^0-9a-zäöüß.,?!:;'\-\s]")
_DE_PUNCT = re.compile(r"\s*([.,?!:;])\s*")
_SENTENCE_END = {"de": re.compile(r"(?<=[.?!])\s+"), "zh": re.compile(r"(?<=[。？！.?!])")}


class TextInputError(ValueError):
    """Text the system cannot turn into signing; the message says why and what to do."""


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise TextInputError(
            f"unsupported language {language!r}: use one of {', '.join(LANGUAGES)}"
        )
    return language


def _drop_symbols(text: str) -> str:
    """Remove emoji, symbols, control characters (Unicode categories S*, C*) and the variation
    selectors that follow emoji."""
    return "".join(" " if _is_symbol(c) else c for c in text)


def _is_symbol(c: str) -> bool:
    return unicodedata.category(c).startswith(("S", "C")) or "\ufe00" <= c <= "\ufe0f"


def normalize_sentence(text: str, language: str) -> str:
    """One sentence -> training form. Raises :class:`TextInputError` on unusable text."""
    check_language(language)
    if not isinstance(text, str):
        raise TextInputError(f"text must be a string, got {type(text).__name__}")
    text = _drop_symbols(unicodedata.normalize("NFKC", text))
    if language == "de":
        if _HAN.search(text):
            raise TextInputError("the text contains Chinese characters: use language 'zh'")
        text = _DE_KEEP.sub(" ", text.lower())
        text = _DE_PUNCT.sub(r" \1 ", text)
        text = re.sub(r"([.,?!:;])(\s+[.,?!:;])+", r"\1", text)  # "!!!" -> "!"
        text = " ".join(text.split())
        if not re.search(r"[0-9a-zäöüß]", text):
            raise TextInputError("the text has no German words to sign")
    else:
        text = "".join(text.split())
        if not _HAN.search(text):
            raise TextInputError("the text has no Chinese characters: use language 'de'?")
    return text


def split_sentences(text: str, language: str) -> list[str]:
    """Split raw text into normalised sentences, each within the model's length limit."""
    check_language(language)
    if not isinstance(text, str) or not text.strip():
        raise TextInputError("the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TextInputError(
            f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS} per request"
        )
    limit = MAX_SENTENCE_CHARS[language]
    out = []
    for part in _SENTENCE_END[language].split(unicodedata.normalize("NFKC", text)):
        if not part.strip() or not _drop_symbols(part).strip(" .,?!:;。？！，"):
            continue
        sentence = normalize_sentence(part, language)
        if len(sentence) > limit:
            raise TextInputError(
                f"a sentence has {len(sentence)} characters; the limit is {limit}: "
                "split it into shorter sentences"
            )
        out.append(sentence)
    if not out:
        raise TextInputError("the text has nothing to sign (only punctuation or symbols)")
    return out
