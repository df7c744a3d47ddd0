"""Train the pose-based CTC gloss recogniser on SynthSigner's ground-truth poses.

The model, its features and its decoding live in :mod:`pgmm.metrics.recognizer`, which the
evaluation reads; this module holds what only training needs: the pose cache, the augmentation
that makes exact poses look like ``P_e`` read from a generated video, the on-disk cache of a
pose estimator's real readings of SynthSigner's videos (``read_by``), and the resumable loop
(:class:`~pgmm.training.common.ResumableLoop`, like every other trainer).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pgmm.console import progress as progress_bar
from pgmm.metrics.recognizer import (
    TEMPORAL_STRIDE,
    PoseCTCRecognizer,
    RecognizerConfig,
    build_vocabulary,
    read_keypoints,
    sentence_keypoints,
)
from pgmm.pose.layout import NUM_PGMM
from pgmm.training.common import (
    CHECKPOINT_MINUTES,
    ResumableLoop,
    cosine_schedule,
    find_checkpoint,
    resume_step_state,
    save_step_checkpoint,
)

if TYPE_CHECKING:  # imported lazily at run time: the renderer pulls in PIL
    from pgmm.data.corpus import CorpusSentence
    from pgmm.data.synth.signer import SynthSigner
    from pgmm.models.pose_estimator import PoseEstimator

__all__ = ["augment_keypoints", "cache_poses", "cache_reads", "train_recognizer"]


# --------------------------------------------------------------------------- data
def cache_poses(
    signer: SynthSigner, sentences: Sequence[CorpusSentence], progress: bool = True
) -> list[np.ndarray]:
    """Ground-truth PGMM36 keypoints ``(T, 36, 3)`` of every sentence, as float16.

    A sentence pose costs ~5-10 ms to synthesise and training draws each sentence hundreds of
    times, so poses are computed once. float16 halves the memory (PHOENIX train: ~180 MB) at a
    resolution of ~5e-4 of the frame, far below the augmentation noise.
    """
    return [
        sentence_keypoints(signer, s).astype(np.float16)
        for s in progress_bar(sentences, desc="poses", unit="sent", disable=not progress)
    ]


def cache_reads(
    signer: SynthSigner,
    sentences: Sequence[CorpusSentence],
    estimator: PoseEstimator,
    folder: Path,
    progress: bool = True,
) -> list[np.ndarray]:
    """``estimator``'s keypoints of SynthSigner's video of every sentence, as float16, kept in
    ``folder`` (one ``.npy`` per sentence).

    Drawing and reading cost ~7 ms a frame on one core, i.e. ~15 min per 1,000 PHOENIX
    sentences, so each reading is written as soon as it is made (to a temporary name, then
    renamed): an interrupted run keeps every finished sentence and resumes with the next.
    The folder records which estimator made its readings (``estimator.txt``, the weights'
    digest) and refuses another one: a retrained estimator must never be scored, or a
    recogniser trained, on its predecessor's readings by accident.
    """
    from pgmm.evaluation import network_digest  # the digest every result records

    folder.mkdir(parents=True, exist_ok=True)
    digest, marker = network_digest(estimator), folder / "estimator.txt"
    if marker.is_file() and (made_by := marker.read_text().strip()) != digest:
        raise ValueError(
            f"{folder} holds readings by another estimator (digest {made_by}; this one is "
            f"{digest}): use another folder, or delete this one to read again"
        )
    marker.write_text(digest + "\n")
    out = []
    for sentence in progress_bar(sentences, desc="reads", unit="sent", disable=not progress):
        path = folder / f"{sentence.id}.npy"
        if not path.exists():
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, read_keypoints(signer, sentence, estimator).astype(np.float16))
            tmp.replace(path)
        out.append(np.load(path))
    return out


def augment_keypoints(
    keypoints: np.ndarray,
    rng: np.random.Generator,
    num_glosses: int,
    noise: float = 0.02,
    stretch: tuple[float, float] = (0.8, 1.25),
    frame_drop: float = 0.1,
    point_drop: float = 0.03,
    rescale_confidence: bool = True,
) -> np.ndarray:
    """One randomly perturbed copy of a ``(T, 36, 3)`` sequence (normalised coordinates).

    Each perturbation imitates something that differs between SynthSigner's exact poses and
    ``P_e`` read from a generated video:

    * time-stretch by a log-uniform factor in ``stretch`` (signing speed; nearest-frame
      resampling, never below 6 frames per gloss so CTC stays feasible after 4x pooling);
    * random frame drop (``frame_drop``: dropped/duplicated frames of a generator);
    * a small random rotation (+-5 deg) and aspect change (+-5 %): camera and body variation
      that shoulder normalisation does not remove;
    * Gaussian noise with a per-sequence std drawn from ``[0, noise]`` (frame units):
      ``P_e``'s localisation error, frame-to-frame jitter included;
    * random missing points (``point_drop``) and confidences scaled into [0.5, 1]: ``P_e``
      misses points and reports peak heights below 1. ``rescale_confidence=False`` keeps the
      sample's own confidences -- for keypoints an estimator already read, whose peak heights
      are the real ones.
    """
    data = keypoints.astype(np.float32, copy=True)
    t = len(data)
    lo, hi = stretch
    factor = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    new_t = max(round(t * factor), min(t, 6 * num_glosses), TEMPORAL_STRIDE)
    data = data[np.round(np.linspace(0, t - 1, new_t)).astype(np.int64)]
    if frame_drop > 0:
        keep = rng.random(len(data)) >= frame_drop
        if keep.sum() >= max(TEMPORAL_STRIDE, min(len(data), 6 * num_glosses)):
            data = data[keep]
    visible = data[..., 2] > 0
    angle = math.radians(rng.uniform(-5.0, 5.0))
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32
    )
    aspect = np.array([rng.uniform(0.95, 1.05), 1.0], np.float32)
    centre = np.array([0.5, 0.5], np.float32)
    data[..., :2] = ((data[..., :2] - centre) @ rotation.T) * aspect + centre
    if noise > 0:
        std = rng.uniform(0.0, noise)
        data[..., :2] += rng.normal(0.0, std, size=data[..., :2].shape).astype(np.float32)
    if rescale_confidence:
        conf = np.where(visible, rng.uniform(0.5, 1.0, size=visible.shape), 0.0)
    else:
        conf = data[..., 2].copy()
    if point_drop > 0:
        conf[rng.random(visible.shape) < point_drop] = 0.0
    data[..., 2] = conf
    return data


def _pad(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    batch = np.zeros((len(sequences), int(lengths.max()), NUM_PGMM, 3), np.float32)
    for i, s in enumerate(sequences):
        batch[i, : len(s)] = s
    return torch.from_numpy(batch), lengths


# --------------------------------------------------------------------------- training
def train_recognizer(
    signer: SynthSigner,
    language: str,
    run_dir: str | Path,
    steps: int = 20000,
    batch_size: int = 32,
    lr: float = 1e-3,
    max_sentences: int | None = None,
    noise: float = 0.02,
    config: RecognizerConfig | dict[str, Any] | None = None,
    split: str = "train",
    checkpoint_every: int = 500,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    num_threads: int | None = None,
    checkpoint_minutes: float = CHECKPOINT_MINUTES,
    read_by: PoseEstimator | None = None,
    read_fraction: float = 0.5,
    read_sentences: int | None = None,
    init_from: str | Path | None = None,
) -> PoseCTCRecognizer:
    """Train (or resume) a recogniser on SynthSigner poses of one corpus split.

    ``config`` is a full :class:`RecognizerConfig` or a dict of architecture overrides (the
    vocabulary is always built from all splits of ``language``). The run folder holds
    ``model/`` (:meth:`PoseCTCRecognizer.from_pretrained`-able), ``checkpoints/last`` (model,
    optimizer, step) written every ``checkpoint_every`` steps or ``checkpoint_minutes``
    minutes, and on Ctrl-C / SIGTERM (then :class:`~pgmm.training.common.TrainingStopped` is
    raised), and ``log.csv`` (step, loss, lr every 20 steps; no header).
    Batches are drawn from a generator seeded by ``(seed, step)``, so a resumed run continues
    with exactly the batches an uninterrupted one would have seen. AdamW with a 2 % warm-up and
    cosine decay to 5 % of ``lr``; gradients clipped to norm 1 (GRUs under CTC are prone to
    occasional spikes).

    ``num_threads`` sets torch's intra-op threads for the steps (restored afterwards): this model's
    ops are small, and on a shared 2-core machine one thread is often several times faster than
    two threads competing with another process.

    ``read_by``: a pose estimator (the end-to-end evaluation's evaluator) whose readings of
    SynthSigner's videos of the sentences (:func:`cache_reads`, in ``RUN/reads/SPLIT``) make up
    ``read_fraction`` of every batch, the rest being exact poses as without it. Why: a
    recogniser that has only seen exact poses plus Gaussian noise fails on the estimator's
    structured errors (SynthSigner's own video of the 642 German test sentences read at WER
    0.463 against 0.094 for their poses, ``scripts/reader_scores.py``), so every video row of
    that evaluation measured the reader as much as the video. Trained on both, one recogniser
    reads poses and videos.
    ``read_sentences``: read only the first N of the training sentences (a reading costs ~1 s
    per sentence, an exact pose ~5 ms), while exact poses still come from all of them.

    ``init_from``: a saved recogniser folder (e.g. the shipped ``models/recognizer/zh``) whose
    weights start a new run instead of a random initialisation, with a fresh optimizer and a
    fresh warm-up/cosine schedule over ``steps``. Why: a new machine has no run folder, only the
    shipped float16 model, and an under-trained reader should be continued rather than trained
    again from scratch. Its language and vocabulary must be this run's; ``config`` overrides must
    agree with it. Ignored once the run folder has a checkpoint (the run then resumes).
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if lr <= 0 or noise < 0:
        raise ValueError(f"lr must be > 0 and noise >= 0, got {lr} and {noise}")
    if not 0.0 < read_fraction <= 1.0:
        raise ValueError(f"read_fraction must be in (0, 1], got {read_fraction}")
    if read_sentences is not None and read_sentences < 1:
        raise ValueError(f"read_sentences must be >= 1, got {read_sentences}")
    sentences = signer.sentences(split, language)
    if max_sentences is not None:
        sentences = sentences[:max_sentences]
    if not sentences:
        raise ValueError(f"no {language}/{split} sentences in the SynthSigner corpus")
    vocab = build_vocabulary(signer.sentences(None, language))
    overrides: dict[str, Any]  # the architecture settings the caller asked for
    if isinstance(config, RecognizerConfig):
        if config.language != language:
            raise ValueError(f"config is for {config.language!r}, training {language!r}")
        overrides = {k: v for k, v in config.to_dict().items() if k not in ("language", "vocab")}
    else:
        overrides = dict(config or {})
        config = RecognizerConfig(language=language, vocab=vocab, **overrides)

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / "last"
    torch.manual_seed(seed)
    found = find_checkpoint(ckpt)
    if found is None and init_from is not None:
        model = _initial_model(init_from, config, overrides, device)
    elif found is None:
        model = PoseCTCRecognizer(config).to(device)
    else:
        model = PoseCTCRecognizer.from_pretrained(found, device)
        if model.config.language != language:
            raise ValueError(f"{found} holds a {model.config.language!r} model, not {language!r}")
    targets = [model.encode_glosses(s.glosses) for s in sentences]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    state = resume_step_state(found, optimizer)
    schedule = cosine_schedule(optimizer, steps, state["step"], warmup=max(1, steps // 50))

    def save() -> None:
        save_step_checkpoint(ckpt, model, optimizer, state)

    run_dir.mkdir(parents=True, exist_ok=True)
    if state["step"] >= steps:
        model.save_pretrained(run_dir / "model")
        return model.eval()
    poses = cache_poses(signer, sentences, progress)
    reads = None
    if read_by is not None:
        to_read = sentences[:read_sentences]
        reads = cache_reads(signer, to_read, read_by, run_dir / "reads" / split, progress)
    model.train()
    running: float | None = None
    loop = ResumableLoop(
        "recogniser", run_dir, ckpt, save, start=state["step"], total=steps,
        every=checkpoint_every, minutes=checkpoint_minutes, resumed=found is not None,
        progress=progress, log=run_dir / "log.csv", log_header=False,
    )  # fmt: skip
    with _torch_threads(num_threads), loop:
        while state["step"] < steps:
            rng = np.random.default_rng([seed, state["step"]])
            picks = rng.integers(len(poses), size=batch_size)
            if reads is None:
                samples = [augment_keypoints(poses[i], rng, len(targets[i]), noise) for i in picks]
            else:
                from_reads = rng.random(batch_size) < read_fraction
                if len(reads) < len(poses):  # read items drawn among the read sentences
                    picks = np.where(from_reads, rng.integers(len(reads), size=batch_size), picks)
                samples = [
                    augment_keypoints(
                        (reads if read else poses)[i], rng, len(targets[i]), noise,
                        rescale_confidence=not read,
                    )
                    for i, read in zip(picks, from_reads, strict=True)
                ]  # fmt: skip
            batch, lengths = _pad(samples)
            loss = model.ctc_loss(batch.to(device), lengths.to(device), [targets[i] for i in picks])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            state["step"] += 1
            value = float(loss.item())
            running = value if running is None else 0.95 * running + 0.05 * value
            if state["step"] % 20 == 0:
                lr_now = f"{schedule.get_last_lr()[0]:.3e}"
                loop.log({"step": state["step"], "loss": f"{value:.5f}", "lr": lr_now})
            loop.end_step(state["step"], loss=f"{running:.3f}")
    model.save_pretrained(run_dir / "model")
    return model.eval()


def _initial_model(
    init_from: str | Path, config: RecognizerConfig, overrides: dict[str, Any], device: str
) -> PoseCTCRecognizer:
    """The ``init_from`` recogniser in float32, checked against this run.

    Its language and vocabulary must equal the run's, and every architecture setting the caller
    asked for (``overrides``) must match; settings left at their defaults are taken from it.
    """
    model = PoseCTCRecognizer.from_pretrained(init_from, device).float()
    have = model.config.to_dict()
    wanted = {"language": config.language, "vocab": list(config.vocab), **overrides}
    differing = sorted(key for key, value in wanted.items() if have.get(key) != value)
    if differing:
        raise ValueError(
            f"init_from {init_from}: its {', '.join(differing)} differ from this run's "
            "(continuing a recogniser needs the same language, vocabulary and architecture)"
        )
    return model


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count inside the block (``None``: leave it alone)."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
