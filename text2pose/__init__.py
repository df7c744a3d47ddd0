"""text2pose: German / Chinese text → glosses → body-normalised whole-body pose frames.

``TextToPose`` is imported lazily (PEP 562): it pulls in ``transformers`` (seconds), which the
many modules that only need :mod:`text2pose.canonical` or :mod:`text2pose.normalize` should
not pay for.
"""

from typing import Any

from text2pose.normalize import TextInputError

__all__ = ["TextInputError", "TextToPose"]


def __getattr__(name: str) -> Any:
    if name == "TextToPose":
        from text2pose.pipeline import TextToPose

        return TextToPose
    raise AttributeError(f"module 'text2pose' has no attribute {name!r}")
