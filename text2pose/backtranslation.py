"""Back-translation loss for the G2P: a frozen gloss recognizer reads the generated poses.

Issue 15's control for the legible-G2P families: the NAR :class:`~text2pose.g2p.GlossToPose`
keeps its L1 frame loss and adds the CTC loss of a frozen
:class:`~pgmm.metrics.recognizer.PoseCTCRecognizer` on its teacher-forced output (the frames
decoded at the true per-gloss durations), so gradients push every sign towards what a reader
recognises as that gloss instead of the average of all signs (Saunders et al., 2020, use the
same idea with an adversarial discriminator).

A model trained this way can learn patterns only *that* recognizer reads; the fine-tuning run
records which recognizer it was trained against (:data:`TRAINING_NAME` in the model folder),
and model selection and reporting must score it with another one (``slp text2pose compare``
marks a score by the training recognizer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pgmm.metrics.recognizer import PoseCTCRecognizer
from pgmm.pose.layout import NUM_WHOLEBODY, PGMM36_FROM_WHOLEBODY

if TYPE_CHECKING:
    from text2pose.g2p import GlossToPose

#: Written into a fine-tuned G2P's model folder: what it was trained against.
TRAINING_NAME = "back_translation.json"


@dataclass(frozen=True)
class BackTranslationRecord:
    """How a G2P was trained against a recognizer (read back by the comparison table)."""

    recognizer: str
    weight: float
    init_from: str | None
    noise: float = 0.0

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TRAINING_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> BackTranslationRecord | None:
        """The record in ``directory``, or ``None`` for a model trained without the loss."""
        path = Path(directory) / TRAINING_NAME
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a back-translation record ({e})") from e


class BackTranslationLoss:
    """``weight`` x the frozen recognizer's CTC loss (mean per target gloss) on G2P frames.

    The recognizer stays in eval mode (no dropout: the loss must be a fixed function of the
    poses) with ``requires_grad`` off, so only the G2P learns; gradients flow through the
    recognizer's shoulder-normalised features back to the generated coordinates.

    ``noise``: while the G2P trains, each sequence's keypoints get Gaussian noise with a std
    drawn from ``[0, noise]`` (frame units, as the recognizer's own training augmentation)
    before they are read. Signs that stay legible under noise cannot rest on the tiny
    coordinate patterns one particular network happens to read (an expectation over
    perturbations, the usual defence against adversarial solutions).
    """

    def __init__(
        self, recognizer: PoseCTCRecognizer, weight: float, source: str = "", noise: float = 0.0
    ) -> None:
        if weight <= 0 or noise < 0:
            raise ValueError(
                f"the back-translation weight must be > 0 and noise >= 0, got {weight}, {noise}"
            )
        self.recognizer = recognizer.eval().requires_grad_(False)
        self.weight, self.source, self.noise = float(weight), source, float(noise)
        self._index = torch.from_numpy(PGMM36_FROM_WHOLEBODY)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        weight: float,
        device: str | torch.device = "cpu",
        noise: float = 0.0,
    ) -> BackTranslationLoss:
        recognizer = PoseCTCRecognizer.from_pretrained(directory, device)
        return cls(recognizer, weight, str(directory), noise)

    def check_language(self, language: str) -> None:
        """A German G2P cannot learn from a Chinese reader (the glosses would not encode)."""
        if self.recognizer.config.language != language:
            raise ValueError(
                f"the recognizer {self.source or ''} reads {self.recognizer.config.language!r} "
                f"glosses but the G2P signs {language!r}"
            )

    def keypoints(self, model: GlossToPose, frames: torch.Tensor) -> torch.Tensor:
        """Standardised ``(B, T, 266)`` G2P frames -> ``(B, T, 36, 3)`` PGMM36 keypoints with
        the confidence the evaluation gives them (1 where SynthSigner labels the joint and the
        point lies in the frame: :func:`text2pose.metrics.camera_view`), xy kept
        differentiable -- the same conversion as ``PoseSequence.to_layout("pgmm36")``."""
        b, t = frames.shape[:2]
        xy = (frames * model.pose_scale + model.pose_mean).reshape(b, t, NUM_WHOLEBODY, 2)
        index = self._index.to(frames.device)
        xy = xy[:, :, index]
        inside = ((xy >= 0.0) & (xy <= 1.0)).all(-1)
        conf = model.labelled[index].expand(b, t, -1) * inside
        return torch.cat([xy, conf[..., None].to(xy.dtype)], -1)

    def __call__(
        self,
        model: GlossToPose,
        frames: torch.Tensor,
        lengths: torch.Tensor,
        gloss_lists: Sequence[Sequence[str]],
    ) -> torch.Tensor:
        """Unweighted CTC loss of ``frames`` (valid ``lengths``) read as ``gloss_lists``;
        noisy (``noise``) while ``model`` is training, exact in eval mode (dev loss)."""
        device = self.recognizer.device
        keypoints = self.keypoints(model, frames).to(device)
        if model.training and self.noise > 0:
            std = torch.rand(len(keypoints), 1, 1, 1, device=device) * self.noise
            jitter = torch.randn_like(keypoints[..., :2]) * std
            keypoints = torch.cat([keypoints[..., :2] + jitter, keypoints[..., 2:]], -1)
        targets = [self.recognizer.encode_glosses(g) for g in gloss_lists]
        return self.recognizer.ctc_loss(keypoints, lengths.to(device), targets).to(frames.device)

    def record(self, init_from: str | Path | None) -> BackTranslationRecord:
        return BackTranslationRecord(
            self.source, self.weight, None if init_from is None else str(init_from), self.noise
        )
