"""Reference points for G2P models, with the same ``generate`` interface as ``GlossToPose``.

* :class:`LexiconBaseline` -- dictionary lookup: one canonical clip per gloss (SynthSigner's
  own rendering of that sign alone), concatenated with linear transitions. On SynthSigner data
  this is a strong, almost oracle baseline for the hands (the clips are the true signs); what it
  lacks is co-articulation, the sentence's timing and the idle motion of a real sentence.
* :class:`MeanPoseBaseline` -- the training mean canonical frame, held for the mean number of
  frames per gloss times the number of glosses: the error any model must beat to have learnt
  anything at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pgmm.data.corpus import CorpusSentence
from pgmm.data.synth.motion import timeline
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose.sequence import PoseSequence
from text2pose.canonical import as_sequence, to_canonical
from text2pose.data import G2PData

TRANSITION_UNITS = 0.35  # SynthSigner's transition length in sign units (motion.timeline)


def canonical_sequence(xy: np.ndarray, labelled: np.ndarray) -> PoseSequence:
    """Canonical xy ``(T, 133, 2)`` as a sequence; confidence 1 where SynthSigner labels."""
    conf = np.broadcast_to(labelled.astype(np.float32), xy.shape[:2])[..., None]
    return as_sequence(np.concatenate([xy.astype(np.float32), conf], -1))


class MeanPoseBaseline:
    """The training mean frame for ``round(len(glosses) * frames_per_gloss)`` frames."""

    def __init__(self, train_data: G2PData) -> None:
        total = sum(p.astype(np.float64).sum(0) for p in train_data.poses)
        self.mean_pose = (total / train_data.num_frames.sum()).astype(np.float32)
        num_glosses = sum(len(g) for g in train_data.glosses)
        self.frames_per_gloss = float(train_data.num_frames.sum() / num_glosses)
        self.labelled = train_data.labelled

    def generate(self, gloss_lists: Sequence[Sequence[str]]) -> list[PoseSequence]:
        return [
            canonical_sequence(
                np.repeat(self.mean_pose[None], max(1, round(len(g) * self.frames_per_gloss)), 0),
                self.labelled,
            )
            for g in gloss_lists
        ]


class LexiconBaseline:
    """Concatenated per-gloss clips with linear transitions, timed by training statistics.

    Each gloss gets its mean training duration ``d`` (:func:`text2pose.data.gloss_durations`,
    which counts a gloss's incoming transition with it). Of these frames, ``d * w / (w + 0.35)``
    show the sign itself -- the clip cut from SynthSigner's one-gloss rendering, ``w`` the
    sign's duration weight -- and the rest interpolate linearly from the previous pose (the
    rest pose before the first gloss). Clips are rendered on first use and kept. A gloss never
    seen in training holds the previous pose for the mean gloss duration.
    """

    def __init__(self, signer: SynthSigner, train_data: G2PData, identity: int = 0) -> None:
        self.signer, self.language, self.identity = signer, train_data.language, identity
        self.labelled = train_data.labelled
        totals: dict[str, list[int]] = defaultdict(list)
        for glosses, durations in zip(train_data.glosses, train_data.durations, strict=True):
            for g, d in zip(glosses, durations, strict=True):
                totals[g].append(int(d))
        self.durations = {g: float(np.mean(v)) for g, v in totals.items()}
        self.mean_duration = float(np.mean(np.concatenate(train_data.durations)))
        self.rest = self._render((), 10)[0]
        self.clips: dict[str, np.ndarray] = {}

    def _render(self, glosses: tuple[str, ...], num_frames: int) -> np.ndarray:
        sentence = CorpusSentence(
            id=f"lexicon_{'_'.join(glosses)}_{num_frames}", name="", split="train",
            language=self.language, signer="", glosses=glosses, text="", num_frames=num_frames,
        )  # fmt: skip
        return to_canonical(to_pose_sequence(self.signer.pose(sentence, self.identity))).xy

    def clip(self, gloss: str, frames: int) -> np.ndarray:
        """``(frames, 133, 2)`` canonical xy of ``gloss``'s sign segment alone."""
        key = f"{gloss}\n{frames}"
        if key not in self.clips:
            weight = self.signer.signs(self.language, [gloss])[0].duration
            # The shortest one-gloss sentence whose sign segment spans >= ``frames`` frames.
            for total in range(frames, 20 * frames + 100):
                segments = timeline([weight], total)
                _, _, start, end = next(s for s in segments if s[0] == "sign")
                if end - start >= frames:
                    break
            xy = self._render((gloss,), total)
            centres = np.arange(total) + 0.5
            inside = np.flatnonzero((centres >= start) & (centres < end))
            pick = np.round(np.linspace(inside[0], inside[-1], frames)).astype(np.int64)
            self.clips[key] = xy[pick]
        return self.clips[key]

    def generate(self, gloss_lists: Sequence[Sequence[str]]) -> list[PoseSequence]:
        return [self._generate_one(g) for g in gloss_lists]

    def _generate_one(self, glosses: Sequence[str]) -> PoseSequence:
        if not glosses:
            raise ValueError("cannot generate a pose for an empty gloss sequence")
        parts, current = [], self.rest
        for gloss in glosses:
            if gloss not in self.durations or (self.language, gloss) not in self.signer.lexicon:
                hold = max(1, round(self.mean_duration))
                parts.append(np.repeat(current[None], hold, 0))
                continue
            total = max(1, round(self.durations[gloss]))
            weight = self.signer.signs(self.language, [gloss])[0].duration
            sign = max(1, round(total * weight / (weight + TRANSITION_UNITS)))
            clip = self.clip(gloss, sign)
            steps = total - sign
            u = (np.arange(1, steps + 1) / (steps + 1))[:, None, None]
            parts += [(1 - u) * current + u * clip[0], clip]
            current = clip[-1]
        return canonical_sequence(np.concatenate(parts), self.labelled)
