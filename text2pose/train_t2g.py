"""Training recipe for :class:`~text2pose.t2g.TextToGloss` (``slp train text2pose --stage t2g``).

What the recipe does, and why (numbers in docs/results.md):

* tokenizers are trained first on the training split only (text: BPE; glosses: whole words);
* length-bucketed batches, Adam with inverse-sqrt warmup, label smoothing and dropout 0.3 —
  7k sentence pairs is tiny for a transformer, regularisation is what matters;
* greedy-decoding dev BLEU-4 after every epoch selects checkpoints; the final model is the
  **average of the best ``average_best`` epochs** (checkpoint averaging) decoded with beam search;
* ``state.pt`` is the resumable checkpoint (model, optimizer, RNG, history, position in the
  epoch), one file replaced atomically at every epoch end, every ``checkpoint_every`` steps or
  ``checkpoint_minutes`` minutes, and on Ctrl-C / SIGTERM (which then raise
  :class:`~pgmm.training.common.TrainingStopped`); a resumed run skips the batches of the epoch
  it already trained and continues exactly. Runs written before the weights moved into
  ``state.pt`` resume from ``epochs/last.safetensors`` and ``history.json``.
* ``device``: the model, the batches and decoding live there; on CUDA ``state.pt`` also holds the
  device's RNG state. A run resumes on any device (the checkpoint is read onto the CPU first).
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from pgmm.checkpoint import atomic_write, recipe_from_yaml, target_device
from pgmm.data.corpus import load_corpus
from pgmm.training.common import ResumableLoop
from text2pose.normalize import normalize_sentence
from text2pose.t2g import T2GConfig, TextToGloss, gloss_scores
from text2pose.tokenizer import Tokenizer


@dataclass
class T2GTrainConfig:
    model: T2GConfig = field(default_factory=T2GConfig)
    epochs: int = 40
    batch_tokens: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 500
    label_smoothing: float = 0.1
    weight_decay: float = 1e-4
    clip: float = 1.0
    average_best: int = 5
    max_train: int | None = None  # first N training pairs (tests)
    max_eval: int | None = None  # first N dev/test pairs (tests)
    seed: int = 0
    # Checkpoints come at every epoch end, and also every N steps (None: not by steps) or
    # every M minutes, whichever first.
    checkpoint_every: int | None = None
    checkpoint_minutes: float = 5.0
    progress: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> T2GTrainConfig:
        """``model:`` and ``train:`` sections of a configs/text2pose/t2g-*.yaml file."""
        return recipe_from_yaml(cls, T2GConfig, path, overrides)


def corpus_pairs(language: str, split: str, data_dir: str | Path | None = None):
    rows = load_corpus(language, split, data_dir)
    return [(normalize_sentence(r.text, language), list(r.glosses)) for r in rows]


def build_model(cfg: T2GConfig, train: list[tuple[str, list[str]]]) -> TextToGloss:
    text_tok = Tokenizer.train(
        [t for t, _ in train], cfg.text_vocab_size, cfg.text_model_type, cfg.character_coverage
    )
    gloss_tok = Tokenizer.train([" ".join(g) for _, g in train], 100_000, "word")
    return TextToGloss(cfg, text_tok, gloss_tok)


def _batches(
    model: TextToGloss, pairs: list[tuple[str, list[str]]], batch_tokens: int, rng: random.Random
) -> list[list[int]]:
    """Index batches of similar source length, at most ``batch_tokens`` source tokens each."""
    lengths = [len(model.text_tok.encode(t)) for t, _ in pairs]
    order = sorted(range(len(pairs)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], lengths[i]
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


@dataclass
class T2GPosition:
    """Where a run is: the epoch in progress and how much of it is done (saved in ``state.pt``)."""

    epoch: int = 0
    step: int = 0
    batch: int = 0  # batches of ``epoch`` already trained
    epoch_loss: float = 0.0  # their summed loss (the epoch's mean goes into the history)
    epoch_seconds: float = 0.0


def _load_state(
    out: Path, model: TextToGloss, opt: torch.optim.Optimizer, device: torch.device
) -> tuple[T2GPosition, list[dict]] | None:
    """Restore ``out/state.pt`` into ``model``, ``opt`` and torch's RNGs (``device``'s too, on
    CUDA); ``None``: a new run. Read onto the CPU, so a GPU run resumes on a CPU-only host; the
    optimizer's state follows its parameters onto ``device``."""
    path = out / "state.pt"
    if not path.exists():
        return None
    st = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in st:
        model.model.load_state_dict(st["model"])
        history = st["history"]
    else:  # written before the weights and the history moved into state.pt
        model.model.load_state_dict(load_file(str(out / "epochs" / "last.safetensors")))
        history = json.loads((out / "history.json").read_text())
    opt.load_state_dict(st["optimizer"])
    torch.set_rng_state(st["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in st:  # absent: the run began on another device
        torch.cuda.set_rng_state(st["cuda_rng"], device)
    known = T2GPosition.__dataclass_fields__
    return T2GPosition(**{k: v for k, v in st.items() if k in known}), history


def evaluate(
    model: TextToGloss, pairs: list[tuple[str, list[str]]], num_beams: int, batch: int = 64
) -> tuple[dict[str, float], list[list[str]]]:
    hyps: list[list[str]] = []
    device = next(model.parameters()).device
    # TextToGloss builds its batches with tensor factories, on the CPU; elsewhere the default
    # device makes them where the model is (not set on the CPU: it slows every op down).
    with nullcontext() if device.type == "cpu" else device:
        for i in range(0, len(pairs), batch):
            hyps += model.translate_normalized([t for t, _ in pairs[i : i + batch]], num_beams)
    return gloss_scores(hyps, [g for _, g in pairs]), hyps


def train_t2g(
    cfg: T2GTrainConfig,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train (or resume) in ``out_dir`` on ``device``; writes ``model/`` (averaged) and
    ``results.json``. An unknown device, or CUDA on a host without one, is a
    :class:`~pgmm.checkpoint.DeviceError` before anything is read or written."""
    device = target_device(device)
    out = Path(out_dir)
    (out / "epochs").mkdir(parents=True, exist_ok=True)
    lang = cfg.model.language
    train = corpus_pairs(lang, "train", data_dir)[: cfg.max_train]
    dev = corpus_pairs(lang, "dev", data_dir)[: cfg.max_eval]
    test = corpus_pairs(lang, "test", data_dir)[: cfg.max_eval]
    torch.manual_seed(cfg.seed)
    state_path = out / "state.pt"
    if (out / "init").is_dir():
        model = TextToGloss.from_pretrained(out / "init")  # the same tokenizers on resume
    else:
        model = build_model(cfg.model, train)
        model.save_pretrained(out / "init")
    model.to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )

    def lr_at(step: int) -> float:
        step = max(step, 1)
        return cfg.lr * min(step / cfg.warmup_steps, (cfg.warmup_steps / step) ** 0.5)

    loaded = _load_state(out, model, opt, device)
    pos, history = loaded or (T2GPosition(), [])

    def save() -> None:
        """One file, replaced atomically: weights, optimizer, RNG and position always agree."""
        state: dict[str, Any] = {
            **asdict(pos),
            "model": model.model.state_dict(),
            "optimizer": opt.state_dict(),
            "history": history,
            "torch_rng": torch.get_rng_state(),
        }
        if device.type == "cuda":  # dropout draws from the device's generator
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        tmp = out / ".state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(state_path)

    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=cfg.label_smoothing)
    # The batch count is the same every epoch: packing depends only on the sorted lengths.
    per_epoch = len(_batches(model, train, cfg.batch_tokens, random.Random(cfg.seed)))
    loop = ResumableLoop(
        f"T2G {lang}", out, state_path, save, start=pos.step, total=cfg.epochs * per_epoch,
        every=cfg.checkpoint_every, minutes=cfg.checkpoint_minutes, resumed=loaded is not None,
        progress=cfg.progress, log=out / "log.csv", log_header=False,
    )  # fmt: skip
    with loop:
        while pos.epoch < cfg.epochs:
            epoch = pos.epoch
            model.train()
            rng = random.Random(cfg.seed * 1000 + epoch)
            batches = _batches(model, train, cfg.batch_tokens, rng)
            t0 = time.perf_counter() - pos.epoch_seconds
            for idx in batches[pos.batch :]:
                text = model.encode_text([train[i][0] for i in idx])
                batch = {k: v.to(device) for k, v in text.items()}
                labels = model.encode_glosses([train[i][1] for i in idx]).to(device)
                logits = model.model(**batch, labels=labels).logits
                loss = loss_fn(logits.flatten(0, 1), labels.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                pos.step += 1
                for g in opt.param_groups:
                    g["lr"] = lr_at(pos.step)
                opt.step()
                pos.batch += 1
                pos.epoch_loss += loss.item()
                pos.epoch_seconds = time.perf_counter() - t0
                loop.end_step(pos.step, loss=f"{loss.item():.3f}", epoch=f"{epoch + 1}")
            scores, _ = evaluate(model, dev, num_beams=1)
            row = {
                "epoch": epoch + 1,
                "step": pos.step,
                "loss": round(pos.epoch_loss / len(batches), 4),
                "dev_bleu4_greedy": scores["bleu4"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            history.append(row)
            loop.log(row)
            loop.write(json.dumps(row))
            weights = {k: v.detach().cpu().clone() for k, v in model.model.state_dict().items()}
            atomic_write(out / "epochs" / f"e{epoch + 1}.safetensors", safetensors_bytes(weights))
            _prune(out / "epochs", history, cfg.average_best)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            pos = T2GPosition(epoch=epoch + 1, step=pos.step)
            loop.save()
    return finalize(model, out, history, cfg, dev, test)


def _best(history: list[dict], k: int) -> list[int]:
    ranked = sorted(history, key=lambda r: (-r["dev_bleu4_greedy"], -r["epoch"]))
    return [r["epoch"] for r in ranked[:k]]


def _prune(folder: Path, history: list[dict], k: int) -> None:
    """Keep only the epoch weights that can still be among the best ``k``."""
    keep = set(_best(history, k))
    for path in folder.glob("e*.safetensors"):
        if int(path.stem[1:]) not in keep:
            path.unlink()


def finalize(
    model: TextToGloss,
    out: Path,
    history: list[dict],
    cfg: T2GTrainConfig,
    dev: list[tuple[str, list[str]]],
    test: list[tuple[str, list[str]]],
) -> dict:
    """Average the best epochs, decode dev/test with beam search, save ``model/``.

    Averaging only helps once the kept epochs are near a plateau (a short run keeps early,
    much worse epochs), so the average is used only if its greedy dev BLEU-4 beats the single
    best epoch's -- a choice made on dev, never on test.
    """
    best = _best(history, cfg.average_best)
    states = [load_file(str(out / "epochs" / f"e{e}.safetensors")) for e in best]
    averaged = {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}
    model.model.load_state_dict(averaged)
    if len(best) > 1:
        averaged_bleu = evaluate(model, dev, num_beams=1)[0]["bleu4"]
        single_bleu = max(r["dev_bleu4_greedy"] for r in history)
        if single_bleu > averaged_bleu:
            best = best[:1]
            model.model.load_state_dict(states[0])
    results: dict = {"averaged_epochs": best, "config": asdict(cfg)}
    for name, pairs in (("dev", dev), ("test", test)):
        scores, hyps = evaluate(model, pairs, num_beams=cfg.model.num_beams)
        results[name] = scores
        (out / f"{name}_hypotheses.txt").write_text("\n".join(" ".join(h) for h in hyps) + "\n")
    model.save_pretrained(out / "model")
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(json.dumps({k: results[k] for k in ("averaged_epochs", "dev", "test")}), flush=True)
    return results
