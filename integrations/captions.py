"""Caption files (SRT, WebVTT) -> a clean, ordered list of :class:`Cue` to be signed.

Captions come from editors, ASR systems and broadcast archives, so the parser is strict about
what would silently desynchronise the sign track and lenient about what merely looks odd:

* **Errors** (:class:`CaptionError`, a ``ValueError`` so the ``slp`` CLI prints one line):
  unknown file extension, bytes that are not UTF-8, a file that is not SRT/WebVTT at all,
  unparsable timestamps, a cue whose end is not after its start, a file without any cue.
  A wrong timestamp is never "fixed": a guess would move every later sign.
* **Warnings** (:class:`CaptionWarning`): cues whose text is empty once styling is removed are
  skipped (they would only produce idle frames, which the gaps produce anyway); overlapping
  cues are **truncated**: the earlier cue ends where the later one starts.  Truncating (rather
  than delaying the later cue) keeps every cue's *start* exact, so each sign starts when its
  caption appears.  Cues that start at the same instant (two speakers on screen at once) are
  merged into one cue, their texts joined with a space in file order.

Text is cleaned the same way for both formats: the lines of a cue are joined with spaces, and
HTML-like tags (``<i>``, ``<b>``, ``<font ...>``, ``<c.yellow>``, ``<v Anna>``, ``<00:01.000>``
karaoke timestamps), ASS/SSA overrides (``{\\an8}``) and entities (``&amp;``) are removed.

Language is either given or detected per cue from the script: any Han character -> ``zh``,
otherwise any Latin letter -> ``de`` (the project signs German and Chinese only); a cue with
neither (``♪♪``, ``123``) takes the language most cues of the file have.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import srt
import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

__all__ = [
    "CAPTION_SUFFIXES",
    "CaptionError",
    "CaptionWarning",
    "Cue",
    "detect_language",
    "load_captions",
    "parse_srt",
    "parse_vtt",
]

CAPTION_SUFFIXES = (".srt", ".vtt")
"""File extensions :func:`load_captions` accepts (case-insensitive)."""

LANGUAGES = ("de", "zh")

_TAG = re.compile(r"<[^>]*>")
_ASS_OVERRIDE = re.compile(r"\{\\[^}]*\}")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
# The srt library accepts "00:00:0x,000" as 0 s (the regex stops at the "x" and the rest of the
# line is taken as cue settings), so SRT timing lines are checked against the strict form first.
_SRT_TIME = r"\d+:\d{2}:\d{2}[,.]\d{1,3}"
_SRT_TIMING = re.compile(rf"\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(\s.*)?")


class CaptionError(ValueError):
    """A caption file that cannot be turned into a trustworthy sign track; says where and why."""


class CaptionWarning(UserWarning):
    """A caption problem that was worked around (skipped empty cue, truncated overlap, ...)."""


@dataclass(frozen=True)
class Cue:
    """One caption to sign: ``index`` is the cue's number in its file (1-based)."""

    index: int
    start_s: float
    end_s: float
    text: str
    language: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def detect_language(text: str) -> str | None:
    """``zh`` if ``text`` has a Han character, ``de`` if it has a Latin letter, else ``None``."""
    if _HAN.search(text):
        return "zh"
    if _LATIN.search(text):
        return "de"
    return None


def clean_text(raw: str) -> str:
    """Strip styling, decode entities and join the cue's lines into one line of plain text."""
    text = _ASS_OVERRIDE.sub("", _TAG.sub("", raw))
    return " ".join(html.unescape(text).split())


def load_captions(path: str | os.PathLike[str], language: str | None = None) -> list[Cue]:
    """Read an ``.srt`` or ``.vtt`` file (UTF-8, BOM allowed) into cleaned, ordered cues."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CAPTION_SUFFIXES:
        raise CaptionError(
            f"{path}: unknown caption format {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(CAPTION_SUFFIXES)}"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaptionError(
            f"{path}: not UTF-8 (invalid byte at offset {exc.start}); re-save the captions as "
            "UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from exc
    parse = parse_srt if suffix == ".srt" else parse_vtt
    try:
        return parse(text, language)
    except CaptionError as exc:
        raise CaptionError(f"{path}: {exc}") from exc


def parse_srt(text: str, language: str | None = None) -> list[Cue]:
    """Parse SubRip text; see the module docstring for the cleaning and error rules."""
    for number, line in enumerate(text.splitlines(), start=1):
        if "-->" in line and line.lstrip()[:1].isdigit() and not _SRT_TIMING.fullmatch(line):
            raise CaptionError(f"line {number}: unparsable SRT timestamp {line.strip()!r}")
    try:
        subtitles = list(srt.parse(text))
    except srt.SRTParseError as exc:
        bad = next((ln for ln in exc.unmatched_content.splitlines() if ln.strip()), "")
        raise CaptionError(f"malformed SRT near {bad.strip()!r}") from exc
    raw = [
        (sub.index, sub.start.total_seconds(), sub.end.total_seconds(), sub.content)
        for sub in subtitles
    ]
    return _finish(raw, language, "SRT")


def parse_vtt(text: str, language: str | None = None) -> list[Cue]:
    """Parse WebVTT text; see the module docstring for the cleaning and error rules."""
    try:
        captions = webvtt.from_string(text, strict=True)
    except MalformedFileError as exc:
        raise CaptionError(f"not a WebVTT file ({exc}); it must start with 'WEBVTT'") from exc
    except MalformedCaptionError as exc:
        raise CaptionError(f"malformed WebVTT cue: {exc}") from exc
    raw = [
        (i, _timestamp_s(cap.start_time), _timestamp_s(cap.end_time), cap.raw_text)
        for i, cap in enumerate(captions.captions, start=1)
    ]
    return _finish(raw, language, "WebVTT")


def _timestamp_s(stamp: webvtt.models.Timestamp) -> float:
    # Caption.start_in_seconds truncates to whole seconds, so go through the exact fields.
    hours, minutes, seconds, millis = stamp.to_tuple()
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _finish(
    raw: Iterable[tuple[int, float, float, str]], language: str | None, kind: str
) -> list[Cue]:
    """Validate times, clean text, assign languages, then order and de-overlap the cues."""
    if language is not None and language not in LANGUAGES:
        raise CaptionError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    cues: list[Cue] = []
    for index, start, end, content in raw:
        if start < 0 or end <= start:
            raise CaptionError(
                f"cue {index}: end ({end:.3f} s) must be after start ({start:.3f} s)"
            )
        text = clean_text(content)
        if not text:
            warnings.warn(f"cue {index}: empty text, skipped", CaptionWarning, stacklevel=2)
            continue
        cues.append(Cue(index, start, end, text, language or detect_language(text) or ""))
    if not cues:
        raise CaptionError(f"no {kind} cues with text found")
    if language is None:
        counts = Counter(c.language for c in cues if c.language)
        default = counts.most_common(1)[0][0] if counts else LANGUAGES[0]
        cues = [c if c.language else replace(c, language=default) for c in cues]
    # Stable sort: cues with equal starts keep their file order when merged below.
    cues.sort(key=lambda c: c.start_s)
    return _resolve_overlaps(cues)


def _resolve_overlaps(cues: list[Cue]) -> list[Cue]:
    out: list[Cue] = []
    for cue in cues:
        prev = out[-1] if out else None
        if prev is not None and cue.start_s == prev.start_s:
            warnings.warn(
                f"cues {prev.index} and {cue.index} start together at {cue.start_s:.3f} s; merged",
                CaptionWarning,
                stacklevel=2,
            )
            out[-1] = replace(
                prev, end_s=max(prev.end_s, cue.end_s), text=f"{prev.text} {cue.text}"
            )
            continue
        if prev is not None and prev.end_s > cue.start_s:
            warnings.warn(
                f"cue {prev.index} overlaps cue {cue.index}; it now ends at {cue.start_s:.3f} s "
                f"instead of {prev.end_s:.3f} s",
                CaptionWarning,
                stacklevel=2,
            )
            out[-1] = replace(prev, end_s=cue.start_s)
        out.append(cue)
    return out
