"""Training recipe for :class:`~text2pose.t2g.TextToGloss` (``slp train text2pose --stage t2g``).

What the recipe does, and why (numbers in docs/results.md):

* tokenizers are trained first on the training split only (text: BPE; glosses: whole words);
* length-bucketed batches, Adam with inverse-sqrt warmup, label smoothing and dropout 0.3 —
  7k sentence pairs is tiny for a transformer, regularisation is what matters;
* greedy-decoding dev BLEU-4 after every epoch selects checkpoints; the final model is the
  **average of the best ``average_best`` epochs** (checkpoint averaging) decoded with beam search;
* every epoch writes a resumable checkpoint (model, optimizer, RNG, history) atomically, so a
  killed run continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pgmm.checkpoint import dataclass_from_dict
from pgmm.data.corpus import load_corpus
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

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> T2GTrainConfig:
        """``model:`` and ``train:`` sections of a configs/text2pose/t2g-*.yaml file."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        model = dataclass_from_dict(T2GConfig, data.get("model") or {}, f"{path} model")
        train = {**(data.get("train") or {}), **(overrides or {})}
        return dataclass_from_dict(cls, {**train, "model": model}, f"{path} train")


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
    batches, cur, longest = [], [], 0
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


def evaluate(
    model: TextToGloss, pairs: list[tuple[str, list[str]]], num_beams: int, batch: int = 64
) -> tuple[dict[str, float], list[list[str]]]:
    hyps: list[list[str]] = []
    for i in range(0, len(pairs), batch):
        hyps += model.translate_normalized([t for t, _ in pairs[i : i + batch]], num_beams)
    return gloss_scores(hyps, [g for _, g in pairs]), hyps


def train_t2g(cfg: T2GTrainConfig, out_dir: str | Path, data_dir: str | Path | None = None) -> dict:
    """Train (or resume) in ``out_dir``; writes ``model/`` (averaged) and ``results.json``."""
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
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )

    def lr_at(step: int) -> float:
        step = max(step, 1)
        return cfg.lr * min(step / cfg.warmup_steps, (cfg.warmup_steps / step) ** 0.5)

    history: list[dict] = []
    start_epoch, step = 0, 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        model.model.load_state_dict(load_file(str(out / "epochs" / "last.safetensors")))
        opt.load_state_dict(st["optimizer"])
        start_epoch, step = st["epoch"], st["step"]
        history = json.loads((out / "history.json").read_text())
        torch.set_rng_state(st["torch_rng"])
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=cfg.label_smoothing)
    log = (out / "log.csv").open("a", newline="")
    writer = csv.writer(log)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        rng = random.Random(cfg.seed * 1000 + epoch)
        batches = _batches(model, train, cfg.batch_tokens, rng)
        bar = tqdm(batches, desc=f"T2G {lang} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        total, t0 = 0.0, time.perf_counter()
        for idx in bar:
            batch = model.encode_text([train[i][0] for i in idx])
            labels = model.encode_glosses([train[i][1] for i in idx])
            logits = model.model(**batch, labels=labels).logits
            loss = loss_fn(logits.flatten(0, 1), labels.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            step += 1
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        scores, _ = evaluate(model, dev, num_beams=1)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "loss": round(total / len(batches), 4),
            "dev_bleu4_greedy": scores["bleu4"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        history.append(row)
        writer.writerow(row.values())
        log.flush()
        print(json.dumps(row), flush=True)
        weights = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
        save_file(weights, str(out / "epochs" / f".e{epoch + 1}.tmp"))
        (out / "epochs" / f".e{epoch + 1}.tmp").replace(
            out / "epochs" / f"e{epoch + 1}.safetensors"
        )
        save_file(weights, str(out / "epochs" / ".last.tmp"))
        (out / "epochs" / ".last.tmp").replace(out / "epochs" / "last.safetensors")
        _prune(out / "epochs", history, cfg.average_best)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        tmp = out / ".state.pt.tmp"
        st = {"optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step}
        torch.save({**st, "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(state_path)
    log.close()
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
