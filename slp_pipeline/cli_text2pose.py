"""``slp train tokenizer`` and ``slp train text2pose``: the text side of the pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(train: argparse._SubParsersAction) -> None:
    tok = train.add_parser("tokenizer", help="train the SentencePiece models of one language")
    tok.add_argument("--lang", choices=("de", "zh"), required=True)
    tok.add_argument("--out", type=Path, required=True, help="folder for text.spm + gloss.spm")
    tok.add_argument("--vocab-size", type=int, default=2000, help="text vocabulary (upper bound)")
    tok.add_argument("--model-type", choices=("bpe", "unigram", "word", "char"), default="bpe")
    tok.set_defaults(func=run_tokenizer)

    t2p = train.add_parser("text2pose", help="train text->gloss (t2g) or gloss->pose (g2p)")
    t2p.add_argument("--stage", choices=("t2g", "g2p"), required=True)
    t2p.add_argument(
        "--config", type=Path, required=True, help="configs/text2pose/<stage>-<lang>.yaml"
    )
    t2p.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    t2p.add_argument("--epochs", type=int, help="override the config's epochs")
    t2p.set_defaults(func=run_text2pose)


def run_tokenizer(args: argparse.Namespace) -> int:
    from text2pose.t2g import GLOSS_TOKENIZER, SRC_TOKENIZER
    from text2pose.tokenizer import Tokenizer
    from text2pose.train_t2g import corpus_pairs

    pairs = corpus_pairs(args.lang, "train")
    coverage = 0.9995 if args.lang == "zh" else 1.0
    text = Tokenizer.train([t for t, _ in pairs], args.vocab_size, args.model_type, coverage)
    gloss = Tokenizer.train([" ".join(g) for _, g in pairs], 100_000, "word")
    args.out.mkdir(parents=True, exist_ok=True)
    text.save(args.out / SRC_TOKENIZER)
    gloss.save(args.out / GLOSS_TOKENIZER)
    print(f"{args.out}: text vocabulary {len(text)}, gloss vocabulary {len(gloss)}")
    return 0


def run_text2pose(args: argparse.Namespace) -> int:
    if not args.config.is_file():
        raise FileNotFoundError(f"config not found: {args.config}")
    overrides = {"epochs": args.epochs} if args.epochs else None
    if args.stage == "t2g":
        from text2pose.train_t2g import T2GTrainConfig, train_t2g

        train_t2g(T2GTrainConfig.from_yaml(args.config, overrides), args.out)
    else:
        from text2pose.train_g2p import G2PTrainConfig, run_g2p

        run_g2p(G2PTrainConfig.from_yaml(args.config, overrides), args.out)
    return 0
