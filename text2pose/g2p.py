"""``GlossToPose``: gloss sequence -> whole-body canonical pose sequence, AR or NAR.

Both modes share a small ``BertModel`` gloss encoder (no pretrained weights exist for glosses,
so every part is built from a config and trained from scratch) and regress the 133 x 2
canonical xy of :mod:`text2pose.canonical`, standardised by the training mean pose and one
global scale (so the loss weights every joint as the Euclidean metrics do):

* ``mode="ar"`` -- *Progressive Transformers* (Saunders et al., 2020). A causal ``BertModel``
  decoder with cross-attention reads the previous frame plus a *counter* channel (the fraction
  of the sequence already produced) and regresses the next frame and its counter. Decoder
  inputs get Gaussian noise during training, so the model learns to recover from its own
  drifting predictions at inference. Decoding stops at the first frame whose counter rounds the
  implied length ``t / counter`` to ``t`` (i.e. ``counter > t / (t + 0.5)``: the counter is
  nearer 1 than the value the frame before the last would have), or at the hard max length.
  Training continues ``counter_overrun`` frames past the end (last pose held, counter rising
  past 1): without them a model whose counter falls just short of 1 at the last frame has
  never seen what follows and may never stop; with them it stops a frame or two late.
  Decoding is KV-cached through the transformers cache, batched, and streamable.
* ``mode="nar"`` -- a duration predictor regresses ``log(1 + frames)`` per gloss (supervised by
  SynthSigner's exact per-gloss durations, :func:`text2pose.data.gloss_durations`); gloss
  states are repeated for their durations (plus a within-gloss progress feature) and a
  non-causal ``BertModel`` turns them into all frames at once.

Glosses outside the training vocabulary map to ``<unk>`` (one learnt embedding), so generation
never fails on an unseen gloss; the output is a plausible sign-like motion, not that sign.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from pgmm.checkpoint import (
    DictConfig,
    load_weights,
    read_config,
    save_folder,
    target_device,
)
from pgmm.pose.layout import NUM_WHOLEBODY
from pgmm.pose.sequence import PoseSequence
from pgmm.training.common import (
    CHECKPOINT_MINUTES,
    ResumableLoop,
    cosine_schedule,
    find_checkpoint,
    save_step_checkpoint,
)
from text2pose.canonical import as_sequence as _sequence
from text2pose.data import G2PData, GlossVocab, check_glosses, frame_limit, trim_to
from text2pose.tokenizer import pad_ids

if TYPE_CHECKING:
    from text2pose.backtranslation import BackTranslationLoss

VOCAB_NAME = "vocab.json"
POSE_DIM = NUM_WHOLEBODY * 2  # whole-body xy, flattened


@dataclass
class G2PConfig(DictConfig):
    """Architecture and loss settings; the defaults are the small CPU model (~1.5 M parameters,
    ~6 MB as float32 safetensors)."""

    mode: str = "ar"  # "ar" (Progressive Transformers) | "nar" (duration predictor)
    vocab_size: int = len(GlossVocab.SPECIALS)
    hidden_size: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    dropout: float = 0.1
    max_glosses: int = 64  # encoder positions, <bos>/<eos> included
    max_frames: int = 512  # decoder positions = hard max output length
    input_noise: float = 0.1  # AR: std of the noise on decoder input frames (standardised units)
    frame_loss: str = "l1"  # "l1" | "mse" on standardised xy
    counter_weight: float = 1.0  # AR: weight of the L1 counter loss
    counter_overrun: int = 4  # AR: frames trained past the end (see GlossToPose)
    duration_weight: float = 1.0  # NAR: weight of the log-duration MSE
    language: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("ar", "nar"):
            raise ValueError(f"mode must be 'ar' or 'nar', got {self.mode!r}")
        if self.frame_loss not in ("l1", "mse"):
            raise ValueError(f"frame_loss must be 'l1' or 'mse', got {self.frame_loss!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.max_frames < 1 or self.max_glosses < 3:
            raise ValueError("max_frames must be >= 1 and max_glosses >= 3")


def _bert(config: G2PConfig, layers: int, positions: int, vocab: int, **extra: Any) -> BertModel:
    bert = BertConfig(
        vocab_size=vocab,
        hidden_size=config.hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        max_position_embeddings=positions,
        type_vocab_size=1,
        pad_token_id=GlossVocab.pad_id,
        **extra,
    )
    return BertModel(bert, add_pooling_layer=False)


class GlossToPose(nn.Module):
    """Gloss sequences in, canonical whole-body :class:`PoseSequence` s (25 fps) out."""

    # Buffers (registered in __init__), declared for the type checker.
    pose_mean: torch.Tensor
    pose_scale: torch.Tensor
    labelled: torch.Tensor

    def __init__(self, config: G2PConfig, vocab: GlossVocab) -> None:
        super().__init__()
        if config.vocab_size != len(vocab):
            raise ValueError(f"config.vocab_size {config.vocab_size} != vocab size {len(vocab)}")
        self.config, self.vocab = config, vocab
        h = config.hidden_size
        self.encoder = _bert(config, config.encoder_layers, config.max_glosses, len(vocab))
        # The decoders read inputs_embeds only; their one-row word embedding is BERT's minimum.
        if config.mode == "ar":
            self.decoder = _bert(
                config, config.decoder_layers, config.max_frames + config.counter_overrun, 1,
                is_decoder=True, add_cross_attention=True,
            )  # fmt: skip
            self.frame_in = nn.Linear(POSE_DIM + 1, h)
            self.head = nn.Linear(h, POSE_DIM + 1)
        else:
            self.decoder = _bert(config, config.decoder_layers, config.max_frames, 1)
            self.duration_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
            self.progress_in = nn.Linear(2, h)
            self.head = nn.Linear(h, POSE_DIM)
        # Standardisation of the targets and the joints SynthSigner labels, set from the
        # training data (see set_normalisation) and saved with the weights.
        self.register_buffer("pose_mean", torch.zeros(POSE_DIM))
        self.register_buffer("pose_scale", torch.ones(1))
        self.register_buffer("labelled", torch.ones(NUM_WHOLEBODY))

    # ----------------------------------------------------------------------- data plumbing
    @property
    def device(self) -> torch.device:
        return self.pose_mean.device

    def set_normalisation(self, data: G2PData) -> None:
        """Mean pose per coordinate and one global std from ``data`` (the training split)."""
        # Sums per sentence: one float64 copy of a whole training split would take ~2 GB.
        total, total_sq, count = np.zeros(POSE_DIM), np.zeros(POSE_DIM), 0
        for pose in data.poses:
            frames = pose.reshape(len(pose), POSE_DIM).astype(np.float64)
            total += frames.sum(0)
            total_sq += np.square(frames).sum(0)
            count += len(frames)
        mean = total / count
        labelled_coords = np.repeat(data.labelled, 2)
        variance = total_sq[labelled_coords] / count - np.square(mean[labelled_coords])
        scale = np.sqrt(max(variance.mean(), 0.0))
        self.pose_mean.copy_(torch.from_numpy(mean).float())
        self.pose_scale.fill_(float(max(scale, 1e-6)))
        self.labelled.copy_(torch.from_numpy(data.labelled.astype(np.float32)))

    def normalise(self, xy: torch.Tensor) -> torch.Tensor:
        """``(..., 133, 2)`` canonical xy -> ``(..., 266)`` standardised."""
        return (xy.reshape(*xy.shape[:-2], POSE_DIM) - self.pose_mean) / self.pose_scale

    def denormalise(self, frames: torch.Tensor) -> np.ndarray:
        """``(T, 266)`` standardised -> ``(T, 133, 3)`` canonical xy + confidence (numpy)."""
        xy = (frames.float() * self.pose_scale + self.pose_mean).reshape(-1, NUM_WHOLEBODY, 2)
        conf = self.labelled.expand(len(xy), NUM_WHOLEBODY)[..., None]
        return torch.cat([xy, conf], -1).cpu().numpy()

    def encode_ids(self, gloss_lists: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``<bos> glosses <eos>`` ids and their mask; unknown glosses -> ``<unk>``."""
        for glosses in gloss_lists:
            check_glosses(glosses, self.config.max_glosses)
        padded = pad_ids([self.vocab.encode(g) for g in gloss_lists], GlossVocab.pad_id)
        return padded.to(self.device), (padded != GlossVocab.pad_id).long().to(self.device)

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def _frame_error(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean L1/MSE over the valid frames ``mask`` (B, T) and labelled coordinates."""
        diff = pred - target
        err = diff.abs() if self.config.frame_loss == "l1" else diff.square()
        weight = mask[..., None].float() * self.labelled.repeat_interleave(2)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    # ----------------------------------------------------------------------- training loss
    def loss(
        self,
        gloss_lists: Sequence[Sequence[str]],
        poses: Sequence[np.ndarray],
        durations: Sequence[np.ndarray],
        back_translation: BackTranslationLoss | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced training loss of a batch: ``{"loss", "frames", "aux"}`` where aux is
        the counter loss (AR) or the log-duration loss (NAR); with ``back_translation`` also
        ``"bt"``, a frozen recognizer's CTC loss on the same predicted frames, added to
        ``"loss"`` with its weight (issue 15's control)."""
        ids, mask = self.encode_ids(gloss_lists)
        lengths = torch.tensor([len(p) for p in poses], device=self.device)
        if int(lengths.max()) > self.config.max_frames:
            raise ValueError(f"a target has {int(lengths.max())} > max_frames frames")
        overrun = self.config.counter_overrun if self.config.mode == "ar" else 0
        t_max = int(lengths.max()) + overrun
        target = torch.zeros(len(poses), t_max, POSE_DIM, device=self.device)
        for i, p in enumerate(poses):
            frames = self.normalise(torch.from_numpy(p.astype(np.float32)).to(target))
            target[i, : len(p)] = frames
            target[i, len(p) : len(p) + overrun] = frames[-1]  # AR: hold the last pose
        frame_mask = torch.arange(t_max, device=self.device)[None] < lengths[:, None] + overrun
        enc = self._encode(ids, mask)
        if self.config.mode == "ar":
            pred, aux = self._ar_loss_terms(enc, mask, target, lengths, frame_mask)
            weight = self.config.counter_weight
        else:
            pred, aux = self._nar_loss_terms(enc, durations, frame_mask)
            weight = self.config.duration_weight
        frames = self._frame_error(pred, target, frame_mask)
        terms = {"loss": frames + weight * aux, "frames": frames, "aux": aux}
        if back_translation is not None:
            terms["bt"] = back_translation(self, pred, lengths, gloss_lists)
            terms["loss"] = terms["loss"] + back_translation.weight * terms["bt"]
        return terms

    def _ar_loss_terms(
        self,
        enc: torch.Tensor,
        enc_mask: torch.Tensor,
        target: torch.Tensor,
        lengths: torch.Tensor,
        frame_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced frames and the L1 counter loss."""
        b, t_max, _ = target.shape
        counter = (torch.arange(t_max, device=self.device)[None] + 1) / lengths[:, None]
        prev = torch.cat([target.new_zeros(b, 1, POSE_DIM), target[:, :-1]], 1)
        if self.training and self.config.input_noise > 0:
            prev = prev + self.config.input_noise * torch.randn_like(prev)
        prev_counter = torch.cat([counter.new_zeros(b, 1), counter[:, :-1]], 1)
        inputs = self.frame_in(torch.cat([prev, prev_counter[..., None]], -1))
        hidden = self.decoder(
            inputs_embeds=inputs,
            attention_mask=frame_mask.long(),
            encoder_hidden_states=enc,
            encoder_attention_mask=enc_mask,
            use_cache=False,
        ).last_hidden_state
        out = self.head(hidden)
        counter_err = ((out[..., -1] - counter).abs() * frame_mask).sum() / frame_mask.sum()
        return out[..., :POSE_DIM], counter_err

    def _nar_loss_terms(
        self, enc: torch.Tensor, durations: Sequence[np.ndarray], frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames decoded at the true durations and the log-duration MSE."""
        dur = torch.zeros(enc.shape[0], enc.shape[1] - 2, device=self.device)
        gloss_mask = torch.zeros_like(dur, dtype=torch.bool)
        for i, d in enumerate(durations):
            dur[i, : len(d)] = torch.from_numpy(np.asarray(d, np.float32))
            gloss_mask[i, : len(d)] = True
        log_pred = self.duration_head(enc[:, 1:-1]).squeeze(-1)
        aux = ((log_pred - torch.log1p(dur)).square() * gloss_mask).sum() / gloss_mask.sum()
        counts = [np.asarray(d, np.int64) for d in durations]
        pred = self._nar_decode(enc, counts)
        return pred[:, : frame_mask.shape[1]], aux

    # ----------------------------------------------------------------------- NAR core
    def _nar_decode(self, enc: torch.Tensor, durations: Sequence[np.ndarray]) -> torch.Tensor:
        """Standardised frames ``(B, T_max, 266)`` from encoder states (``<bos>`` at 0) and
        integer frames per gloss."""
        totals = [int(d.sum()) for d in durations]
        t_max = max(max(totals), 1)
        h = enc.shape[-1]
        states = enc.new_zeros(len(durations), t_max, h)
        progress = enc.new_zeros(len(durations), t_max, 2)
        for i, d in enumerate(durations):
            rep = torch.from_numpy(d).to(self.device)
            gloss = torch.repeat_interleave(torch.arange(len(d), device=self.device), rep)
            start = torch.repeat_interleave(torch.cumsum(rep, 0) - rep, rep)
            size = rep[gloss].float()
            u = (torch.arange(totals[i], device=self.device) - start + 0.5) / size
            states[i, : totals[i]] = enc[i, 1 + gloss]
            progress[i, : totals[i], 0] = u
            progress[i, : totals[i], 1] = torch.log1p(size) / math.log1p(self.config.max_frames)
        mask = (
            torch.arange(t_max, device=self.device)[None]
            < torch.tensor(totals, device=self.device)[:, None]
        )
        hidden = self.decoder(
            inputs_embeds=states + self.progress_in(progress), attention_mask=mask.long()
        ).last_hidden_state
        return self.head(hidden)

    def predict_durations(
        self, enc: torch.Tensor, mask: torch.Tensor, max_frames: int
    ) -> list[np.ndarray]:
        """Frames per gloss (>= 1 each); a sentence over ``max_frames`` is cut from the end."""
        log_pred = self.duration_head(enc[:, 1:-1]).squeeze(-1)
        counts = torch.clamp(torch.round(torch.expm1(log_pred)), min=1).long().cpu().numpy()
        return [
            trim_to(counts[i, :n], max_frames) for i, n in enumerate((mask.sum(1) - 2).tolist())
        ]

    # ----------------------------------------------------------------------- AR core
    def _ar_steps(
        self, ids: torch.Tensor, mask: torch.Tensor, max_frames: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(frames (B, 266), stop (B,))`` per decoded step, KV-cached."""
        enc = self._encode(ids, mask)
        bert = self.decoder.config
        cache = EncoderDecoderCache(DynamicCache(config=bert), DynamicCache(config=bert))
        prev = enc.new_zeros(len(ids), POSE_DIM + 1)
        for t in range(max_frames):
            hidden = self.decoder(
                inputs_embeds=self.frame_in(prev)[:, None],
                encoder_hidden_states=enc,
                encoder_attention_mask=mask,
                cache=cache,
                use_cache=True,
            ).last_hidden_state[:, 0]
            out = self.head(hidden)
            counter = out[:, -1]
            yield out[:, :POSE_DIM], counter > (t + 1) / (t + 1.5)
            prev = torch.cat([out[:, :POSE_DIM], counter.clamp(0.0, 1.0)[:, None]], -1)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout, no input noise) inside the block, then the mode it had."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------------- inference API
    @torch.no_grad()
    def generate(
        self,
        gloss_lists: Sequence[Sequence[str]],
        batch_size: int = 16,
        max_frames: int | None = None,
    ) -> list[PoseSequence]:
        """One canonical whole-body :class:`PoseSequence` (25 fps) per gloss sequence, never
        longer than ``max_frames`` (default: the model's ``config.max_frames``)."""
        limit = frame_limit(max_frames, self.config.max_frames)
        out: list[PoseSequence] = []
        with self.evaluating():
            for start in range(0, len(gloss_lists), batch_size):
                chunk = gloss_lists[start : start + batch_size]
                out += [_sequence(self.denormalise(f)) for f in self._generate_batch(chunk, limit)]
        return out

    def _generate_batch(
        self, gloss_lists: Sequence[Sequence[str]], limit: int
    ) -> list[torch.Tensor]:
        """Standardised frames ``(T_i, 266)`` per gloss sequence."""
        ids, mask = self.encode_ids(gloss_lists)
        if self.config.mode == "nar":
            enc = self._encode(ids, mask)
            durations = self.predict_durations(enc, mask, limit)
            frames = self._nar_decode(enc, durations)
            return [frames[i, : int(d.sum())] for i, d in enumerate(durations)]
        steps: list[torch.Tensor] = []
        ends: list[int | None] = [None] * len(gloss_lists)
        for t, (frames, stop) in enumerate(self._ar_steps(ids, mask, limit)):
            steps.append(frames)
            for i in torch.nonzero(stop).flatten().tolist():
                ends[i] = t + 1 if ends[i] is None else ends[i]
            if all(e is not None for e in ends):
                break
        stacked = torch.stack(steps, 1)
        return [stacked[i, : ends[i] or limit] for i in range(len(gloss_lists))]

    @torch.no_grad()
    def generate_stream(
        self, glosses: Sequence[str], chunk_frames: int = 8, max_frames: int | None = None
    ) -> Iterator[np.ndarray]:
        """Frames of one gloss sequence as ``(n <= chunk_frames, 133, 3)`` numpy chunks.

        AR yields each chunk as soon as it is decoded (first frames after one encoder pass and
        ``chunk_frames`` decoder steps); NAR computes the sequence in one pass and yields it in
        chunks. The concatenated chunks equal ``generate([glosses])[0].data`` exactly.
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        limit = frame_limit(max_frames, self.config.max_frames)
        with self.evaluating():
            if self.config.mode == "nar":
                data = self.denormalise(self._generate_batch([glosses], limit)[0])
                for start in range(0, len(data), chunk_frames):
                    yield data[start : start + chunk_frames]
                return
            ids, mask = self.encode_ids([glosses])
            pending: list[torch.Tensor] = []
            for frames, stop in self._ar_steps(ids, mask, limit):
                pending.append(frames[0])
                if bool(stop[0]) or len(pending) == chunk_frames:
                    yield self.denormalise(torch.stack(pending))
                    pending = []
                if bool(stop[0]):
                    return
            if pending:
                yield self.denormalise(torch.stack(pending))

    # ----------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """``config.json`` + ``model.safetensors`` + ``vocab.json`` (each written atomically)."""
        directory = save_folder(directory, self, self.config.to_dict())
        self.vocab.save(directory / VOCAB_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> GlossToPose:
        """Load a folder written by :meth:`save_pretrained` (safetensors only, never pickle);
        a missing or corrupt file is a ``FileNotFoundError``/``ValueError`` naming it."""
        directory = Path(directory)
        meta = read_config(directory, cls.__name__, "GlossToPose", files=(VOCAB_NAME,))
        model = cls(G2PConfig.from_dict(meta), GlossVocab.load(directory / VOCAB_NAME))
        load_weights(model, directory)
        return model.to(device).eval()


# --------------------------------------------------------------------------- training
def _batch_indices(order: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A batch of similar-length sentences (a random window of the length-sorted order), so
    padding -- most of the cost of a random batch -- stays small."""
    start = int(rng.integers(max(1, len(order) - batch_size + 1)))
    return order[start : start + batch_size]


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


@torch.no_grad()
def _dev_loss(
    model: GlossToPose,
    data: G2PData,
    batch_size: int,
    terms_logged: tuple[str, ...],
    back_translation: BackTranslationLoss | None,
) -> dict[str, float]:
    totals = dict.fromkeys(terms_logged, 0.0)
    with model.evaluating():
        for start in range(0, len(data), batch_size):
            part = data.subset(range(start, min(start + batch_size, len(data))))
            terms = model.loss(part.glosses, part.poses, part.durations, back_translation)
            for k in totals:
                totals[k] += float(terms[k]) * len(part)
    return {k: v / len(data) for k, v in totals.items()}


def train_g2p(
    config: G2PConfig | dict[str, Any],
    train_data: G2PData,
    dev_data: G2PData | None,
    out_dir: str | Path,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int | None = None,
    checkpoint_every: int = 250,
    eval_every: int = 250,
    max_dev_sentences: int = 64,
    seed: int = 0,
    progress: bool = True,
    num_threads: int | None = None,
    checkpoint_minutes: float = CHECKPOINT_MINUTES,
    device: str | torch.device = "cpu",
    init_from: str | Path | None = None,
    back_translation: BackTranslationLoss | None = None,
) -> GlossToPose:
    """Train (or resume) a :class:`GlossToPose` for ``steps`` optimizer steps on ``device``.

    ``out_dir`` gets ``checkpoints/last`` (model folder + ``optimizer.pt`` + ``state.json``,
    swapped in complete every ``checkpoint_every`` steps or ``checkpoint_minutes`` minutes, at
    the end and on Ctrl-C / SIGTERM, which then raise
    :class:`~pgmm.training.common.TrainingStopped`), ``log.csv``
    (step, losses, lr, dev losses every ``eval_every`` steps, seconds) and the final ``model/``.
    Each step seeds numpy and torch from ``(seed, step)`` -- batch choice, input noise and
    dropout -- so a resumed run is bit-exact with an uninterrupted one. The vocabulary is built
    from ``train_data``; ``config.vocab_size`` and ``language`` are filled in (a resumed run
    keeps the checkpoint's config and ignores ``config``). Dev losses are teacher-forced, on the
    first ``max_dev_sentences`` of ``dev_data``. AdamW, linear warm-up (default 5 % of
    ``steps``) then cosine decay; gradients clipped to norm 1. A checkpoint resumes on any
    device; an unknown device, or CUDA on a host without one, is a
    :class:`~pgmm.checkpoint.DeviceError` before anything is read or written.

    ``init_from``: a saved G2P folder to fine-tune (its vocabulary, normalisation and config
    are kept; ``config`` is ignored) -- read only when the run starts, never on resume.
    ``back_translation``: adds its weighted CTC term to the loss (logged as ``bt`` and
    ``dev_bt``; :meth:`GlossToPose.loss`) and writes its
    :class:`~text2pose.backtranslation.BackTranslationRecord` into ``model/``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    device, out_dir = target_device(device), Path(out_dir)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        ckpt = out_dir / "checkpoints" / "last"
        torch.manual_seed(seed)
        found = find_checkpoint(ckpt)
        state: dict[str, Any] = {"step": 0, "seconds": 0.0}
        if found is not None:
            model = GlossToPose.from_pretrained(found, str(device)).train()
            state = json.loads((found / "state.json").read_text())
        elif init_from is not None:
            model = GlossToPose.from_pretrained(init_from, str(device)).train()
            if (signs := model.config.language) != train_data.language:
                raise ValueError(
                    f"{init_from} signs {signs!r}, the data is {train_data.language!r}"
                )
        else:
            vocab = GlossVocab.build(train_data.glosses)
            cfg = config.to_dict() if isinstance(config, G2PConfig) else dict(config)
            cfg.update(vocab_size=len(vocab), language=train_data.language)
            model = GlossToPose(G2PConfig.from_dict(cfg), vocab)
            model.set_normalisation(train_data)
            model.to(device)
        if back_translation is not None:
            back_translation.check_language(model.config.language)
        logged = ("loss", "frames", "aux") + (("bt",) if back_translation is not None else ())
        too_long = int((train_data.num_frames > model.config.max_frames).sum())
        if too_long:
            raise ValueError(f"{too_long} training sentences exceed max_frames")
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
        if found is not None and (found / "optimizer.pt").exists():
            # Read onto the CPU (a GPU run resumes anywhere); load_state_dict moves the moments
            # to their parameters' device and leaves AdamW's step counts on the CPU, where it
            # wants them.
            saved = torch.load(found / "optimizer.pt", map_location="cpu", weights_only=True)
            optimizer.load_state_dict(saved)
        warm = max(1, steps // 20) if warmup is None else warmup
        schedule = cosine_schedule(optimizer, steps, state["step"], warmup=warm)
        dev = dev_data.subset(range(min(len(dev_data), max_dev_sentences))) if dev_data else None
        order = np.argsort(train_data.num_frames, kind="stable")

        out_dir.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter() - state["seconds"]

        def save() -> None:
            state["seconds"] = time.perf_counter() - tic
            save_step_checkpoint(ckpt, model, optimizer, state)

        model.train()
        loop = ResumableLoop(
            f"g2p-{model.config.mode}", out_dir, ckpt, save, start=state["step"], total=steps,
            every=checkpoint_every, minutes=checkpoint_minutes, resumed=found is not None,
            progress=progress, log=out_dir / "log.csv",
        )  # fmt: skip
        with loop:
            while state["step"] < steps:
                step_seed = _step_seed(seed, state["step"])
                torch.manual_seed(step_seed)
                picks = _batch_indices(order, batch_size, np.random.default_rng(step_seed))
                batch = train_data.subset(picks)
                terms = model.loss(batch.glosses, batch.poses, batch.durations, back_translation)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                state["step"] += 1
                dev_terms = {}
                if dev is not None and (state["step"] % eval_every == 0 or state["step"] == steps):
                    dev_terms = _dev_loss(model, dev, batch_size, logged, back_translation)
                loop.log({
                    "step": state["step"],
                    **{k: f"{terms[k].item():.5f}" for k in logged},
                    "lr": f"{schedule.get_last_lr()[0]:.3e}",
                    **{f"dev_{k}": f"{dev_terms[k]:.5f}" if dev_terms else "" for k in logged},
                    "seconds": f"{time.perf_counter() - tic:.1f}",
                })  # fmt: skip
                loop.end_step(state["step"], loss=f"{terms['loss'].item():.4f}")
        model.save_pretrained(out_dir / "model")
        if back_translation is not None:
            back_translation.record(init_from).save(out_dir / "model")
        return model.eval()
    finally:
        torch.set_num_threads(previous_threads)
