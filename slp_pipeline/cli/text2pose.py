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
    t2p.add_argument(
        "--stage",
        choices=("t2g", "g2p", "t2p", "dict"),
        required=True,
        help="t2g: text -> glosses; g2p: glosses -> pose; t2p: direct text -> pose (comparison); "
        "dict: the gloss -> pose dictionary of learned sign clips (CPU minutes, not resumable)",
    )
    source = t2p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="configs/text2pose/<stage>-<lang>.yaml")
    source.add_argument(
        "--lang",
        choices=("de", "zh"),
        help="use the shipped recipe configs/text2pose/<stage>-<lang>.yaml",
    )
    t2p.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    t2p.add_argument("--epochs", type=int, help="override the config's epochs")
    t2p.add_argument(
        "--bt-weight",
        type=float,
        help="override the config's back-translation loss weight (g2p-bt-*.yaml; model selection)",
    )
    t2p.add_argument(
        "--bt-noise", type=float, help="override the config's bt_noise (keypoint noise std)"
    )
    t2p.add_argument("--steps", type=int, help="override the config's steps (g2p, t2p)")
    t2p.add_argument(
        "--seed", type=int, help="override the config's seed (t2g: members of an ensemble)"
    )
    t2p.add_argument(
        "--device",
        default="cpu",
        help="cpu | cuda | cuda:N for t2g, g2p and t2p; a run resumes on any device "
        "(default: %(default)s)",
    )
    t2p.set_defaults(func=run_text2pose)


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "text2pose"


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
    if args.config is None:
        args.config = CONFIGS / f"{args.stage}-{args.lang}.yaml"
    if not args.config.is_file():
        raise FileNotFoundError(f"config not found: {args.config}")
    overrides = {"epochs": args.epochs} if args.epochs else {}
    for flag, stages in (
        ("bt_weight", ("g2p",)),
        ("bt_noise", ("g2p",)),
        ("steps", ("g2p", "t2p")),
        ("seed", ("t2g",)),
    ):
        if getattr(args, flag) is not None:
            if args.stage not in stages:
                raise ValueError(
                    f"--{flag.replace('_', '-')} applies to --stage {'/'.join(stages)}"
                )
            overrides[flag] = getattr(args, flag)
    if args.stage == "dict":
        from text2pose.dictionary import DictionaryBuildConfig, run_dictionary

        if args.epochs:
            raise ValueError("--epochs does not apply to --stage dict (it is built, not trained)")
        if args.device != "cpu":
            raise ValueError("--device does not apply to --stage dict (built on the CPU)")
        report = run_dictionary(DictionaryBuildConfig.from_yaml(args.config), args.out)
        print(
            f"{args.out / 'model'}: {report.glosses} glosses from {report.sentences} sentences, "
            f"{report.array_bytes / 2**20:.1f} MiB of arrays, built in {report.build_seconds:.0f} s"
        )
    elif args.stage == "t2g":
        from text2pose.train_t2g import T2GTrainConfig, train_t2g

        train_t2g(
            T2GTrainConfig.from_yaml(args.config, overrides or None), args.out, device=args.device
        )
    else:
        from text2pose.train_g2p import G2PTrainConfig, run_g2p

        config = G2PTrainConfig.from_yaml(args.config, overrides or None)
        if (args.stage == "t2p") != (config.inputs == "text"):
            raise ValueError(
                f"--stage {args.stage} needs a config with inputs: "
                f"{'text' if args.stage == 't2p' else 'glosses'} ({args.config})"
            )
        run_g2p(config, args.out, device=args.device)
    return 0


def register_tools(sub: argparse._SubParsersAction) -> None:
    """``slp text2pose pack|eval|compare|glosses``: assemble, score and inspect text2pose
    models."""
    t2p = sub.add_parser("text2pose", help="assemble, evaluate or try text2pose models")
    cmd = t2p.add_subparsers(dest="text2pose_command", required=True)
    pack = cmd.add_parser("pack", help="join a trained T2G and G2P into one TextToPose folder")
    pack.add_argument("--t2g", type=Path, required=True, help="T2G model folder (run/model)")
    pack.add_argument("--g2p", type=Path, required=True, help="G2P model folder (run/model)")
    pack.add_argument("--out", type=Path, required=True)
    pack.set_defaults(func=run_pack)
    ev = cmd.add_parser("eval", help="T2G BLEU, G2P/T2G2P DTW-MJE vs lexicon and mean pose")
    ev.add_argument("--model", type=Path, required=True, help="TextToPose folder")
    ev.add_argument("--split", choices=("dev", "test"), default="test")
    ev.add_argument("--max-sentences", type=int)
    ev.add_argument(
        "--recognizer",
        type=Path,
        help="gloss recognizer folder (e.g. models/recognizer/de): adds back-translation WER/BLEU",
    )
    ev.add_argument(
        "--t2p", type=Path, help="a direct text -> pose model (run/model of --stage t2p) to compare"
    )
    ev.add_argument(
        "--dictionary",
        type=Path,
        help="a gloss dictionary (run/model of --stage dict): adds its gold- and T2G-gloss rows",
    )
    ev.add_argument(
        "--doc",
        type=Path,
        help="also write the tables into this Markdown file, between <!-- text2pose-eval:"
        "LANG-SPLIT:start/end --> markers (the rest of the file is kept)",
    )
    ev.add_argument("--out", type=Path, required=True)
    ev.set_defaults(func=run_eval)
    cmp = cmd.add_parser(
        "compare",
        help="back-translation of several G2P models and the lexicon, read by several recognizers",
    )
    cmp.add_argument("--lang", choices=("de", "zh"), required=True)
    cmp.add_argument("--split", choices=("dev", "test"), default="dev")
    cmp.add_argument(
        "--g2p",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a G2P model folder (network or dictionary) and its row name; repeatable",
    )
    cmp.add_argument(
        "--recognizer",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a gloss recognizer folder and its column name; repeatable. Score a model trained "
        "against a recognizer with another one (its scores by the first are marked †)",
    )
    cmp.add_argument("--t2g", type=Path, help="T2G folder: adds the text -> T2G -> pose rows")
    cmp.add_argument(
        "--length",
        type=Path,
        help="sentence length model folder (a text2pose model's length/): times the "
        "dictionaries' T2G rows from the text too, as that text path does",
    )
    cmp.add_argument("--dtw", action="store_true", help="also DTW-MJE against the targets (slow)")
    cmp.add_argument("--max-sentences", type=int)
    cmp.add_argument("--out", type=Path, required=True, help="folder for compare.json / .md")
    cmp.add_argument(
        "--doc",
        type=Path,
        help="also write the table into this Markdown file, between <!-- text2pose-compare:"
        "LANG-SPLIT:start/end --> markers (the rest of the file is kept)",
    )
    cmp.set_defaults(func=run_compare)
    gl = cmd.add_parser("glosses", help="print the glosses and frame count of a text")
    gl.add_argument("text")
    gl.add_argument("--model", type=Path, required=True, help="TextToPose folder")
    gl.set_defaults(func=run_glosses)


def run_pack(args: argparse.Namespace) -> int:
    from text2pose.pipeline import TextToPose, load_g2p
    from text2pose.t2g import TextToGloss

    t2g, g2p = TextToGloss.from_pretrained(args.t2g), load_g2p(args.g2p)
    if g2p.config.language and g2p.config.language != t2g.config.language:
        raise ValueError(
            f"T2G is {t2g.config.language!r} but G2P is {g2p.config.language!r}: "
            "pack models of the same language"
        )
    TextToPose(t2g, g2p).save_pretrained(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {t2g.config.language} text2pose, {size / 2**20:.1f} MiB")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from text2pose.evaluate import evaluate_text2pose, markdown, write

    result = evaluate_text2pose(
        args.model,
        args.split,
        args.max_sentences,
        recognizer_dir=args.recognizer,
        t2p_dir=args.t2p,
        dictionary_dir=args.dictionary,
    )
    write(result, args.out)
    print(markdown(result))
    if args.doc is not None:
        tag = f"text2pose-eval:{result['language']}-{result['split']}"
        flags = ("model", "split", "max_sentences", "recognizer", "t2p", "dictionary")
        _write_doc(args.doc, tag, _command(args, "eval", *flags), markdown(result))
    return 0


def _command(args: argparse.Namespace, name: str, *flags: str) -> str:
    """The ``slp text2pose NAME`` command line that reproduces ``args`` (for the doc block):
    ``flags`` in order (repeated ones once per value), then ``--out`` and ``--doc``."""
    parts = [f"slp text2pose {name}"]
    for flag in (*flags, "out", "doc"):
        value, option = getattr(args, flag), f"--{flag.replace('_', '-')}"
        if value is True:
            parts.append(option)
        elif value is not None and value is not False:
            parts += [f"{option} {v}" for v in (value if isinstance(value, list) else [value])]
    return " ".join(parts)


def _named_folders(values: list[str], flag: str) -> dict[str, str | Path]:
    """``["NAME=DIR", ...]`` -> ``{NAME: DIR}``; a malformed or repeated name is a clear error."""
    out: dict[str, str | Path] = {}  # what compare_g2p takes
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--{flag} wants NAME=DIR, got {value!r}")
        if name in out:
            raise ValueError(f"--{flag}: the name {name!r} is given twice")
        out[name] = Path(folder)
    return out


def run_compare(args: argparse.Namespace) -> int:
    from text2pose.compare import compare_g2p

    if args.max_sentences is not None and args.max_sentences < 1:
        raise ValueError("--max-sentences must be >= 1")
    result = compare_g2p(
        args.lang,
        args.split,
        _named_folders(args.g2p, "g2p"),
        _named_folders(args.recognizer, "recognizer"),
        t2g_dir=args.t2g,
        max_sentences=args.max_sentences,
        dtw=args.dtw,
        length_dir=args.length,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(result.to_json(), encoding="utf-8")
    table = result.markdown()
    (args.out / "compare.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    if args.doc is not None:
        flags = ("lang", "split", "g2p", "recognizer", "t2g", "length", "dtw", "max_sentences")
        tag = f"text2pose-compare:{args.lang}-{args.split}"
        _write_doc(args.doc, tag, _command(args, "compare", *flags), table)
    return 0


def _write_doc(doc: Path, tag: str, command: str, table: str) -> None:
    """(Re)write the ``<!-- TAG:start/end -->`` block of ``doc``: the command, then its table."""
    from pgmm.evaluation import write_doc_block

    write_doc_block(doc, f"<!-- {tag}:start -->", f"<!-- {tag}:end -->", f"`{command}`\n\n{table}")


def run_glosses(args: argparse.Namespace) -> int:
    from text2pose.pipeline import TextToPose

    model = TextToPose.from_pretrained(args.model)
    for glosses in model.glosses(args.text):
        print(" ".join(glosses))
    print(f"{len(model.generate(args.text))} frames at 25 fps")
    return 0
