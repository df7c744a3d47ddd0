"""A pose-based CTC gloss recogniser: the default :class:`GlossRecognizer` for WER.

The PGMM paper measures intelligibility as the WER of CorrNet (a video-based continuous sign
recogniser trained on PHOENIX-2014T / CSL-Daily) on generated videos. No CorrNet weights are
available here, so this module provides a *proxy*: the frozen pose estimator ``P_e`` reads the
36 PGMM keypoints from every generated frame and :class:`PoseCTCRecognizer` -- trained on
SynthSigner's ground-truth poses of the same corpora by :mod:`pgmm.training.recognizer` --
reads glosses from those keypoints. Its numbers answer the same question (can the signing be
read back?) but are not comparable to the paper's CorrNet WER: they also include ``P_e``'s own
errors and only "see" what the 36 keypoints carry.

Pipeline: keypoints ``(B, T, 36, 3)`` -> signer-invariant features (coordinates centred on the
shoulders' midpoint and scaled by shoulder width, velocities, confidence) -> two
conv + 2x temporal max-pool blocks (4x shorter, as in VAC/CorrNet's K5-P2-K5-P2 front end)
-> BiGRU -> linear to ``vocab + blank`` -> CTC. Decoding is greedy (collapse repeats, drop
blanks) or a small prefix beam search.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pgmm.checkpoint import DictConfig, check_positive, load_folder, save_folder
from pgmm.metrics.wer import word_error_rate
from pgmm.pose.layout import NUM_PGMM, PGMM36
from pgmm.pose.sequence import PoseSequence

if TYPE_CHECKING:  # imported lazily at run time: the renderer pulls in PIL
    from pgmm.data.corpus import CorpusSentence
    from pgmm.data.synth.signer import SynthSigner
    from pgmm.models.pose_estimator import PoseEstimator

__all__ = [
    "BLANK",
    "PoseCTCRecognizer",
    "RecognizerConfig",
    "VideoGlossRecognizer",
    "build_vocabulary",
    "ctc_beam_search",
    "ctc_greedy_decode",
    "evaluate_recognizer",
    "pose_features",
    "sentence_keypoints",
    "video_keypoints",
]

#: CTC blank token (output index 0); gloss ``i`` of the vocabulary is output ``i + 1``.
BLANK = "<blank>"
#: Two 2x max-pools: one output step per 4 input frames.
TEMPORAL_STRIDE = 4
_LEFT_SHOULDER, _RIGHT_SHOULDER = PGMM36.index("left_shoulder"), PGMM36.index("right_shoulder")
#: Velocities (shoulder widths per frame) are a few hundredths; this brings them to ~unit scale
#: like the coordinates, so no feature group dominates the first layer at initialisation.
_VELOCITY_SCALE = 10.0
#: Shoulder width as a share of the frame in SynthSigner's framing; only used when a sequence
#: shows no frame with both shoulders (then any scale is a guess).
_FALLBACK_SCALE = 0.36
FEATURES_PER_POINT = 5  # x, y, dx, dy, confidence


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RecognizerConfig(DictConfig):
    """Architecture, vocabulary and input convention of :class:`PoseCTCRecognizer`.

    ``vocab`` holds the glosses (without the blank) in output order; it is part of the config so
    that a saved model can never be paired with the wrong gloss list. ``min_confidence``: points
    below it count as missing (their features are zeroed) -- ``P_e``'s peak heights of a
    clearly visible point are well above it, an absent hand's maps are near 0.
    """

    language: str
    vocab: tuple[str, ...]
    hidden: int = 192
    rnn_hidden: int = 192
    rnn_layers: int = 2
    kernel_size: int = 5
    dropout: float = 0.2
    min_confidence: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab", tuple(str(g) for g in self.vocab))
        if not self.vocab:
            raise ValueError("RecognizerConfig.vocab is empty: build it with build_vocabulary()")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("RecognizerConfig.vocab contains duplicate glosses")
        if BLANK in self.vocab:
            raise ValueError(f"{BLANK!r} is reserved for the CTC blank and cannot be a gloss")
        sizes = ("hidden", "rnn_hidden", "rnn_layers", "kernel_size")
        check_positive("RecognizerConfig", {k: getattr(self, k) for k in sizes})
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length conv), got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {self.min_confidence}")

    @property
    def num_classes(self) -> int:
        return len(self.vocab) + 1

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "vocab": list(self.vocab)}


def build_vocabulary(sentences: Iterable[CorpusSentence]) -> tuple[str, ...]:
    """Sorted unique glosses of ``sentences``.

    Built from *all* splits of a language by
    :func:`~pgmm.training.recognizer.train_recognizer`: glosses that only occur in dev/test are
    never predicted (they get no training signal) but keep the output space equal to the corpus
    lexicon, so models trained on different subsets stay comparable.
    """
    return tuple(sorted({g for s in sentences for g in s.glosses}))


# --------------------------------------------------------------------------- features
def pose_features(
    keypoints: torch.Tensor, lengths: torch.Tensor, min_confidence: float = 0.1
) -> torch.Tensor:
    """``(B, T, 36, 3)`` keypoints -> ``(B, T, 36 * 5)`` signer-invariant frame features.

    Coordinates are centred on the shoulders' midpoint and divided by the shoulder width, both
    taken as the *median over the sequence's frames* rather than per frame: a different body
    size or framing then disappears, while a per-frame estimate would pass every jitter of
    ``P_e``'s shoulder points on to all 36 points. Velocities are frame differences of these
    coordinates. Missing points (confidence < ``min_confidence``) and padded frames get all-zero
    features, so the network learns "not seen" from the zero confidence instead of from
    meaningless coordinates.
    """
    b, t = keypoints.shape[:2]
    xy, conf = keypoints[..., :2].float(), keypoints[..., 2].float()
    in_time = torch.arange(t, device=keypoints.device)[None, :] < lengths[:, None]  # (B, T)
    visible = (conf >= min_confidence) & in_time[..., None]  # (B, T, K)
    both = visible[..., _LEFT_SHOULDER] & visible[..., _RIGHT_SHOULDER]  # (B, T)
    left, right = xy[:, :, _LEFT_SHOULDER], xy[:, :, _RIGHT_SHOULDER]
    centre = _masked_median((left + right) / 2, both)  # (B, 2); NaN where no frame has both
    scale = _masked_median((left - right).norm(dim=-1, keepdim=True), both)[:, 0]  # (B,)
    # Fallback for sequences without shoulders: centre of all visible points, a typical scale.
    weight = visible.float()[..., None]
    mean_visible = (xy * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2)).clamp_min(1.0)
    centre = torch.where(centre.isnan(), mean_visible, centre)
    scale = torch.where(scale.isnan(), torch.full_like(scale, _FALLBACK_SCALE), scale)
    scale = scale.clamp_min(1e-3)

    coords = (xy - centre[:, None, None, :]) / scale[:, None, None, None]
    coords = coords * visible[..., None]
    velocity = torch.zeros_like(coords)
    both_t = (visible[:, 1:] & visible[:, :-1])[..., None]
    velocity[:, 1:] = (coords[:, 1:] - coords[:, :-1]) * both_t * _VELOCITY_SCALE
    confidence = (conf.clamp(0.0, 1.0) * visible)[..., None]
    features = torch.cat([coords, velocity, confidence], dim=-1)  # (B, T, K, 5)
    return features.reshape(b, t, -1)


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Lower median over dim 1 of ``(B, T, C)`` values where ``mask`` ``(B, T)`` is true.

    NaN for a row without any valid entry. (Sorting with invalid entries pushed to +inf is
    several times faster on CPU than ``torch.nanmedian``.)
    """
    filled = values.masked_fill(~mask[..., None], float("inf"))
    ordered = filled.sort(dim=1).values
    count = mask.sum(dim=1)  # (B,)
    index = ((count - 1).clamp_min(0) // 2)[:, None, None].expand(-1, 1, values.shape[-1])
    median = ordered.gather(1, index)[:, 0]
    return median.masked_fill((count == 0)[:, None], float("nan"))


# --------------------------------------------------------------------------- decoding
def ctc_greedy_decode(ids: Sequence[int] | torch.Tensor | np.ndarray, blank: int = 0) -> list[int]:
    """Best-path decoding of per-frame argmax ids: collapse repeats, then drop blanks.

    ``[a, a, blank, a, b, b]`` -> ``[a, a, b]``: a blank between two equal ids separates two
    occurrences of the same gloss, which is why repeats are collapsed *before* blanks go.
    """
    out: list[int] = []
    previous: int | None = None
    for value in np.asarray(ids).reshape(-1).tolist():
        if value != previous and value != blank:
            out.append(int(value))
        previous = value
    return out


def ctc_beam_search(
    log_probs: torch.Tensor | np.ndarray, beam_width: int = 5, blank: int = 0
) -> list[int]:
    """CTC prefix beam search over ``(T, C)`` log-probabilities; returns the best id sequence.

    Sums the probability of all alignments of a prefix (greedy decoding keeps one alignment
    only), which helps where a gloss is split over frames with blanks of similar probability.
    Only the ``beam_width + 1`` most likely ids of each frame (plus the blank) are expanded, so
    the cost stays ``O(T * beam_width^2)`` for a vocabulary of a thousand glosses.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    lp = np.asarray(
        log_probs.detach().cpu().float() if isinstance(log_probs, torch.Tensor) else log_probs,
        dtype=np.float64,
    )
    if lp.ndim != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {lp.shape}")
    neg_inf = -math.inf

    def add(
        table: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], slot: int, value: float
    ) -> None:
        entry = table.setdefault(prefix, [neg_inf, neg_inf])
        entry[slot] = float(np.logaddexp(entry[slot], value))

    def total(item: tuple[tuple[int, ...], Sequence[float]]) -> float:
        return float(np.logaddexp(item[1][0], item[1][1]))  # log P(prefix), any last token

    # prefix -> (log P(prefix, ends in blank), log P(prefix, ends in its last id))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}
    k = min(lp.shape[1], beam_width + 1)
    for frame in lp:
        candidates = set(np.argpartition(-frame, k - 1)[:k].tolist()) | {blank}
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_last) in beams.items():
            p_total = np.logaddexp(p_blank, p_last)
            for c in candidates:
                p = frame[c]
                if c == blank:
                    add(nxt, prefix, 0, p_total + p)
                elif prefix and prefix[-1] == c:
                    # A new occurrence of the same id needs a blank in between; without one
                    # the frame continues the current occurrence.
                    add(nxt, prefix + (c,), 1, p_blank + p)
                    add(nxt, prefix, 1, p_last + p)
                else:
                    add(nxt, prefix + (c,), 1, p_total + p)
        ranked = sorted(nxt.items(), key=total, reverse=True)[:beam_width]  # stable for ties
        beams = {prefix: (pb, pl) for prefix, (pb, pl) in ranked}
    return list(max(beams.items(), key=total)[0])


# --------------------------------------------------------------------------- model
class _ChannelNorm(nn.Module):
    """LayerNorm over channels of ``(B, C, T)``: unlike BatchNorm it never mixes padded frames
    of other sequences into its statistics, so batched and single-sequence outputs agree."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class PoseCTCRecognizer(nn.Module):
    """PGMM36 keypoint sequences -> per-frame gloss log-probabilities (CTC, blank = 0).

    Implements :class:`pgmm.metrics.wer.GlossRecognizer`: :meth:`recognize` reads one keypoint
    sequence; :meth:`recognize_video` first runs ``P_e`` on video frames -- that is the
    WER-on-generated-video path, a pose-based proxy for the paper's CorrNet WER (see the module
    docstring).
    """

    def __init__(self, config: RecognizerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.gloss_to_id = {g: i + 1 for i, g in enumerate(cfg.vocab)}
        pad = cfg.kernel_size // 2
        self.embed = nn.Sequential(
            nn.Linear(NUM_PGMM * FEATURES_PER_POINT, cfg.hidden),
            nn.LayerNorm(cfg.hidden),
            nn.GELU(),
        )
        self.temporal = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(cfg.hidden, cfg.hidden, cfg.kernel_size, padding=pad),
                _ChannelNorm(cfg.hidden),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.MaxPool1d(2),
            )
            for _ in range(2)
        )
        self.rnn = nn.GRU(
            cfg.hidden,
            cfg.rnn_hidden,
            num_layers=cfg.rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.rnn_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.rnn_hidden, cfg.num_classes)

    # ------------------------------------------------------------------ core
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Output steps for input lengths: two floor-halvings (what ``MaxPool1d(2)`` keeps)."""
        return lengths // 2 // 2

    def forward(
        self, keypoints: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 36, 3)`` keypoints (+ valid lengths) -> ``(B, T // 4, vocab + 1)`` log-probs
        and the valid output lengths. Every length must be at least 4 frames."""
        self._check_keypoints(keypoints, batched=True)
        b, t = keypoints.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=keypoints.device)
        lengths = lengths.to(device=keypoints.device, dtype=torch.long)
        if lengths.shape != (b,) or int(lengths.min()) < TEMPORAL_STRIDE or int(lengths.max()) > t:
            raise ValueError(
                f"lengths must be {b} values in [{TEMPORAL_STRIDE}, {t}], got {lengths.tolist()}"
            )
        x = self.embed(pose_features(keypoints, lengths, self.config.min_confidence))
        x = x.transpose(1, 2)  # (B, H, T)
        valid = lengths
        for block in self.temporal:
            # Zero the padded frames before every conv, exactly as the conv's own zero padding
            # does at a sequence's end, so a sequence gives the same output batched or alone.
            x = x * (torch.arange(x.shape[-1], device=x.device) < valid[:, None])[:, None]
            x = block(x)
            valid = valid // 2
        x = x.transpose(1, 2)  # (B, T // 4, H)
        out_lengths = self.output_lengths(lengths)
        packed = pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        logits = self.head(self.dropout(y))
        return logits.log_softmax(dim=-1), out_lengths

    def ctc_loss(
        self, keypoints: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Mean CTC loss (per target gloss) of a padded batch; ``targets`` are gloss ids.

        ``zero_infinity``: a rare sentence with more glosses than output steps (after a strong
        time-compression augmentation) contributes nothing instead of an infinite loss.
        """
        log_probs, out_lengths = self(keypoints, lengths)
        flat = torch.tensor([i for seq in targets for i in seq], dtype=torch.long)
        target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
        return F.ctc_loss(
            log_probs.transpose(0, 1).float(),
            flat,
            out_lengths.cpu(),
            target_lengths,
            blank=0,
            reduction="mean",
            zero_infinity=True,
        )

    # ------------------------------------------------------------------ vocabulary
    def encode_glosses(self, glosses: Sequence[str]) -> list[int]:
        """Gloss strings -> output ids; an out-of-vocabulary gloss is a clear error."""
        unknown = [g for g in glosses if g not in self.gloss_to_id]
        if unknown:
            raise ValueError(
                f"glosses not in the {self.config.language} recogniser vocabulary: {unknown[:5]}"
            )
        return [self.gloss_to_id[g] for g in glosses]

    def decode_ids(self, ids: Sequence[int]) -> list[str]:
        """Output ids (no blanks) -> gloss strings."""
        return [self.config.vocab[i - 1] for i in ids]

    # ------------------------------------------------------------------ inference
    def _check_keypoints(self, keypoints: torch.Tensor, batched: bool) -> None:
        want = "(B, T, 36, 3)" if batched else "(T, 36, 3)"
        ndim = 4 if batched else 3
        if keypoints.ndim != ndim or tuple(keypoints.shape[-2:]) != (NUM_PGMM, 3):
            raise ValueError(
                f"keypoints must be {want} PGMM36 (x, y, confidence), "
                f"got shape {tuple(keypoints.shape)}"
            )
        if not torch.isfinite(keypoints).all():
            raise ValueError("keypoints contain NaN or infinity")

    def _as_keypoints(self, sample: Any) -> torch.Tensor:
        """One sample -> float32 ``(T, 36, 3)`` on the model's device, at least
        ``TEMPORAL_STRIDE`` frames long (see :meth:`log_probs`).

        Accepts a :class:`PoseSequence` (whole-body sequences are reduced to PGMM36, and x is
        put on the scale of y by the frame's aspect ratio so shoulder-width scaling stays
        isotropic) or a tensor/array of PGMM36 keypoints in normalised coordinates.
        """
        if isinstance(sample, PoseSequence):
            data = sample.to_layout("pgmm36").data.copy()
            data[..., 0] *= sample.width / sample.height
            sample = data
        if isinstance(sample, np.ndarray):
            if not (
                np.issubdtype(sample.dtype, np.floating) or np.issubdtype(sample.dtype, np.integer)
            ):
                raise TypeError(f"keypoints must be a numeric array, got dtype {sample.dtype}")
            sample = torch.from_numpy(np.ascontiguousarray(sample))
        if not isinstance(sample, torch.Tensor):
            raise TypeError(
                "sample must be a (T, 36, 3) torch.Tensor / numpy array or a PoseSequence, "
                f"got {type(sample).__name__}"
            )
        keypoints = sample.detach().to(self.device, torch.float32)
        self._check_keypoints(keypoints, batched=False)
        if keypoints.shape[0] == 0:
            raise ValueError("cannot recognise an empty sequence (0 frames)")
        missing = TEMPORAL_STRIDE - len(keypoints)
        if missing > 0:
            keypoints = torch.cat([keypoints, keypoints[-1:].expand(missing, -1, -1)])
        return keypoints

    @torch.no_grad()
    def log_probs(self, samples: Sequence[Any]) -> list[torch.Tensor]:
        """Per-sample ``(T // 4, vocab + 1)`` log-probabilities of a list of samples.

        Sequences shorter than 4 frames are padded by repeating their last frame: a 1-3 frame
        clip has no readable signing, but it should yield a (probably empty) answer rather than
        abort a corpus-wide WER run.
        """
        keypoints = [self._as_keypoints(s) for s in samples]
        if not keypoints:
            return []
        was_training = self.training
        self.eval()
        try:
            lengths = torch.tensor([len(k) for k in keypoints], device=self.device)
            batch = nn.utils.rnn.pad_sequence(keypoints, batch_first=True)
            log_probs, out_lengths = self(batch, lengths)
        finally:
            self.train(was_training)
        return [lp[:n].cpu() for lp, n in zip(log_probs, out_lengths.tolist(), strict=True)]

    def decode(self, log_probs: torch.Tensor, beam_width: int = 1) -> list[str]:
        """``(T', vocab + 1)`` log-probabilities -> glosses (greedy if ``beam_width == 1``)."""
        if beam_width == 1:
            return self.decode_ids(ctc_greedy_decode(log_probs.argmax(dim=-1)))
        return self.decode_ids(ctc_beam_search(log_probs, beam_width))

    def recognize_batch(
        self, samples: Sequence[Any], beam_width: int = 1, batch_size: int = 32
    ) -> list[list[str]]:
        """:meth:`recognize` for many samples, run ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[list[str]] = []
        for start in range(0, len(samples), batch_size):
            for lp in self.log_probs(samples[start : start + batch_size]):
                out.append(self.decode(lp, beam_width))
        return out

    def recognize(
        self, sample: torch.Tensor | np.ndarray | PoseSequence, beam_width: int = 1
    ) -> list[str]:
        """Glosses read from one ``(T, 36, 3)`` keypoint sequence or :class:`PoseSequence`."""
        return self.recognize_batch([sample], beam_width)[0]

    @torch.no_grad()
    def recognize_video(
        self,
        frames: torch.Tensor | np.ndarray | Iterable[np.ndarray],
        estimator: PoseEstimator,
        batch_size: int = 32,
        size: int | None = None,
        beam_width: int = 1,
    ) -> list[str]:
        """Glosses of a video: ``P_e`` keypoints of every frame, then :meth:`recognize`.

        This is the WER-on-generated-video path. It is a *pose-based proxy* for the PGMM
        paper's CorrNet WER: the score includes ``P_e``'s errors and only reflects what the 36
        keypoints show (hands, arms, mouth), not appearance. See :func:`video_keypoints` for
        the accepted frame formats.
        """
        keypoints = video_keypoints(frames, estimator, batch_size, size)
        return self.recognize(keypoints, beam_width)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (architecture + vocabulary) and ``model.safetensors``."""
        return save_folder(directory, self, self.config.to_dict())

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> PoseCTCRecognizer:
        """Load a model written by :meth:`save_pretrained`, in eval mode.

        Raises ``FileNotFoundError`` for a missing directory or file and ``ValueError`` for an
        unreadable config or weights that do not fit it, always naming the directory.
        """
        return load_folder(cls, RecognizerConfig, directory, "recogniser").to(device).eval()


# --------------------------------------------------------------------------- video path
def _frames_to_tensor(frames: torch.Tensor | np.ndarray | Iterable[np.ndarray]) -> torch.Tensor:
    """Video frames -> float ``(T, 3, H, W)`` in [0, 1].

    Conventions follow the rest of the project: numpy frames are ``(H, W, 3)`` (uint8, or float
    in [0, 1]) -- a ``(T, H, W, 3)`` array or an iterable of frames such as
    :meth:`SynthSigner.render`; torch tensors are ``(T, 3, H, W)`` as generators emit them.
    """
    if isinstance(frames, torch.Tensor):
        video = frames.detach()
        if video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"a video tensor must be (T, 3, H, W), got {tuple(video.shape)}")
    else:
        if isinstance(frames, np.ndarray):
            array = frames
        else:
            if isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
                raise TypeError(
                    "frames must be a (T, 3, H, W) tensor, a (T, H, W, 3) array or an iterable "
                    f"of (H, W, 3) frames, got {type(frames).__name__}"
                )
            items = [np.asarray(f) for f in frames]
            if not items:
                raise ValueError("cannot recognise an empty video (0 frames)")
            array = np.stack(items)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"video frames must be (T, H, W, 3), got {array.shape}")
        video = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    if video.shape[0] == 0:
        raise ValueError("cannot recognise an empty video (0 frames)")
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    if not video.is_floating_point():
        raise TypeError(f"video frames must be uint8 or float in [0, 1], got {video.dtype}")
    if not torch.isfinite(video).all():
        raise ValueError("video frames contain NaN or infinity")
    return video.float()


@torch.no_grad()
def video_keypoints(
    frames: torch.Tensor | np.ndarray | Iterable[np.ndarray],
    estimator: PoseEstimator,
    batch_size: int = 32,
    size: int | None = None,
) -> torch.Tensor:
    """``(T, 36, 3)`` keypoints read by ``P_e`` from video frames, ``batch_size`` at a time.

    ``size`` resizes frames (antialiased) to ``size x size`` first -- for videos whose
    resolution differs from the one ``P_e`` was trained at. The estimator runs in eval mode
    (BatchNorm must use its running statistics) and its previous mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    video = _frames_to_tensor(frames)
    device = next(estimator.parameters()).device
    was_training = estimator.training
    estimator.eval()
    try:
        out = []
        for start in range(0, video.shape[0], batch_size):
            batch = video[start : start + batch_size].to(device)
            if size is not None and tuple(batch.shape[-2:]) != (size, size):
                batch = F.interpolate(
                    batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                ).clamp(0.0, 1.0)
            out.append(estimator.keypoints(batch).float().cpu())
    finally:
        estimator.train(was_training)
    return torch.cat(out)


@dataclass
class VideoGlossRecognizer:
    """:class:`GlossRecognizer` over *videos*: ``P_e`` + :class:`PoseCTCRecognizer`.

    Pass it to :func:`pgmm.metrics.wer.wer_for_videos` to score generated videos -- the
    project's pose-based proxy for the paper's CorrNet WER.
    """

    recognizer: PoseCTCRecognizer
    estimator: PoseEstimator
    batch_size: int = 32
    size: int | None = None
    beam_width: int = 1

    def recognize(self, sample: torch.Tensor | np.ndarray) -> list[str]:
        return self.recognizer.recognize_video(
            sample, self.estimator, self.batch_size, self.size, self.beam_width
        )


# --------------------------------------------------------------------------- evaluation
def sentence_keypoints(signer: SynthSigner, sentence: CorpusSentence) -> np.ndarray:
    """SynthSigner's ground-truth PGMM36 keypoints ``(T, 36, 3)`` of one sentence.

    The recogniser's reference input: it is evaluated on these here and trained on them by
    :mod:`pgmm.training.recognizer`, so both read the same poses.
    """
    from pgmm.data.synth.signer import to_pose_sequence

    return to_pose_sequence(signer.pose(sentence)).to_layout("pgmm36").data


@torch.no_grad()
def read_keypoints(
    signer: SynthSigner, sentence: CorpusSentence, estimator: PoseEstimator, size: int = 128
) -> np.ndarray:
    """PGMM36 keypoints ``(T, 36, 3)`` that ``estimator`` reads from SynthSigner's own video of
    one sentence (its corpus signer, drawn at ``size``).

    SynthSigner's drawing is the perfect renderer of its poses, so this is what a video reader
    (the end-to-end evaluation's evaluator) hands the recogniser at best: exact poses seen
    through the estimator's errors. A recogniser trained on it learns to read videos through
    that estimator; no renderer's output is involved, so no renderer can be favoured by it.
    """
    pose = signer.pose(sentence)
    frames = np.stack(list(signer.render(pose, signer.identity_for(sentence), size)))
    return video_keypoints(frames, estimator).numpy()


@torch.no_grad()
def evaluate_recognizer(
    model: PoseCTCRecognizer,
    signer: SynthSigner,
    split: str = "dev",
    language: str | None = None,
    max_sentences: int | None = None,
    beam_width: int = 1,
    batch_size: int = 32,
    samples: Sequence[np.ndarray] | None = None,
) -> float:
    """Corpus WER of ``model`` on SynthSigner's *ground-truth* poses of a split.

    This is the recogniser's ceiling: WER on ``P_e`` keypoints of generated videos can only be
    worse, and the gap between the two is what the generated videos lose. ``samples``: the
    keypoints to read instead, one per sentence of the split (e.g. :func:`read_keypoints`).
    """
    language = language or model.config.language
    sentences = signer.sentences(split, language)[:max_sentences]
    if not sentences:
        raise ValueError(f"no {language}/{split} sentences in the SynthSigner corpus")
    if samples is not None and len(samples) != len(sentences):
        raise ValueError(f"{len(samples)} keypoint samples for {len(sentences)} sentences")
    hypotheses: list[list[str]] = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        if samples is None:
            batch = [sentence_keypoints(signer, s) for s in chunk]
        else:
            batch = list(samples[start : start + batch_size])
        hypotheses += model.recognize_batch(batch, beam_width, batch_size)
    return word_error_rate([s.glosses for s in sentences], hypotheses)
