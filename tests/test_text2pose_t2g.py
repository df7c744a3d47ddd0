"""Text normalisation, tokenizers and the text→gloss transformer (train, resume, save/load)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest
import sacrebleu
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pgmm.data.corpus import load_corpus
from text2pose.normalize import TextInputError, normalize_sentence, split_sentences
from text2pose.t2g import (
    DECODINGS,
    T2GConfig,
    TextToGloss,
    _log_likelihood,
    gloss_scores,
    minimum_bayes_risk,
    weights_name,
)
from text2pose.tokenizer import EOS, PAD, Tokenizer
from text2pose.train_t2g import T2GTrainConfig, corpus_pairs, finalize, train_t2g


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Morgen regnet es im Norden.", "de", "morgen regnet es im norden ."),
        ("  MORGEN   regnet es!!! 🌧️ ", "de", "morgen regnet es !"),
        ("Am Montag, 12 Grad?", "de", "am montag , 12 grad ?"),
        ("你们好！", "zh", "你们好!"),
        ("你 们 好 😀", "zh", "你们好"),
    ],
)
def test_normalize(text: str, language: str, expected: str) -> None:
    assert normalize_sentence(text, language) == expected


@pytest.mark.parametrize(
    ("text", "language", "message"),
    [
        ("", "de", "empty"),
        ("   \n ", "zh", "empty"),
        ("hallo", "fr", "unsupported language"),
        ("🌧️ !!", "de", "nothing to sign"),
        ("heute 下雨", "de", "use language 'zh'"),
        ("good morning", "zh", "no Chinese characters"),
        ("wetter " * 80, "de", "limit is 300"),
        ("x" * 6000, "de", "limit is 5000"),
    ],
)
def test_bad_text_is_a_clear_error(text: str, language: str, message: str) -> None:
    with pytest.raises(TextInputError, match=message):
        split_sentences(text, language)


def test_long_text_is_split_on_sentence_boundaries() -> None:
    text = "Morgen regnet es im Norden. Im Süden scheint die Sonne! Wie warm wird es?"
    assert split_sentences(text, "de") == [
        "morgen regnet es im norden .",
        "im süden scheint die sonne !",
        "wie warm wird es ?",
    ]
    assert split_sentences("今天下雨。明天晴天！", "zh") == ["今天下雨。", "明天晴天!"]


@pytest.mark.parametrize("language", ["de", "zh"])
def test_tokenizer_round_trip(language: str, shared_data, tmp_path) -> None:
    pairs = corpus_pairs(language, "train", shared_data)[:2000]
    coverage = 1.0 if language == "de" else 0.9995
    tok = Tokenizer.train([t for t, _ in pairs], 1000, "unigram", coverage)
    tok.save(tmp_path / "t.spm")
    tok = Tokenizer.load(tmp_path / "t.spm")
    for text, _ in pairs[:200]:
        ids = tok.encode(text)
        assert ids[-1] == EOS
        assert tok.decode(ids) == text
    glosses = Tokenizer.train([" ".join(g) for _, g in pairs], 100_000, "word")
    for _, g in pairs[:200]:
        # a gloss is one piece: the decoder can only emit glosses that exist
        assert len(glosses.encode(" ".join(g), add_eos=False)) == len(g)
        assert glosses.decode(glosses.encode(" ".join(g))).split() == g


def test_tokenizer_rejects_garbage(tmp_path) -> None:
    (tmp_path / "bad.spm").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer.load(tmp_path / "bad.spm")
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing.spm")


def test_gloss_scores_against_sacrebleu_identity() -> None:
    refs = [["A", "B", "C", "D"], ["E", "F", "G", "H"]]
    assert gloss_scores(refs, refs)["bleu4"] == 100.0
    assert gloss_scores([["X", "Y", "Z", "W"]] * 2, refs)["bleu1"] == 0.0


def test_gloss_scores_partial_matches_and_brevity_penalty() -> None:
    # Sentence 1: 6 of the reference's 8 glosses, all n-grams right, but short.
    # Sentence 2: full length, one gloss wrong (E -> X).
    hyps = [["A", "B", "C", "D", "E", "F"], ["A", "B", "C", "D", "X", "F", "G", "H"]]
    refs = [["A", "B", "C", "D", "E", "F", "G", "H"]] * 2
    # Sentence 2 alone: 1-grams 7/8; 2-grams AB BC CD FG GH = 5/7; 3-grams ABC BCD FGH = 3/6;
    # 4-grams ABCD = 1/5; same length (BP = 1): BLEU-4 = (7/8 * 5/7 * 3/6 * 1/5)^(1/4) = 0.5.
    assert gloss_scores(hyps[1:], refs[1:])["bleu4"] == 50.0
    # Sentence 1 alone: every precision 1, BP = exp(1 - 8/6): BLEU-n = 71.65 for every n.
    assert gloss_scores(hyps[:1], refs[:1])["bleu4"] == round(100 * math.exp(-1 / 3), 2)
    # Corpus level sums the counts: 1-grams 13/14, 2-grams 10/12, 3-grams 7/10, 4-grams 4/8,
    # lengths 14 vs 16 -> BP = exp(1 - 16/14).
    bp = math.exp(1 - 16 / 14)
    precisions = [13 / 14, 10 / 12, 7 / 10, 4 / 8]
    scores = gloss_scores(hyps, refs)
    for n in range(1, 5):
        expected = 100 * bp * math.prod(precisions[:n]) ** (1 / n)
        assert scores[f"bleu{n}"] == pytest.approx(expected, abs=0.005), n
        # ... and what sacrebleu itself gives for those strings (catches a hyp/ref swap, which
        # would drop the brevity penalty, or a different tokenisation or n-gram order).
        bleu = sacrebleu.metrics.BLEU(tokenize="none", max_ngram_order=n)
        direct = bleu.corpus_score([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]])
        assert scores[f"bleu{n}"] == round(direct.score, 2), n
    assert scores["bleu4"] == 62.54  # the corpus value above, worked out: 100 * 0.8669 * 0.7214


TINY = T2GConfig(
    d_model=64,
    layers=2,
    heads=2,
    ffn_dim=128,
    dropout=0.0,
    attention_dropout=0.0,
    text_vocab_size=300,
    num_beams=2,
)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, shared_data):
    """Train on 8 German sentences until they are memorised, in two resumed halves."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("t2g")
    cfg = T2GTrainConfig(
        model=TINY,
        epochs=40,
        batch_tokens=400,
        lr=3e-3,
        warmup_steps=10,
        label_smoothing=0.0,
        average_best=1,
        max_train=8,
        max_eval=8,
    )
    train_t2g(cfg, out, shared_data)
    cfg.epochs = 80
    results = train_t2g(cfg, out, shared_data)  # resumes from epoch 40
    return out, results


def test_t2g_overfits_and_resumes(overfit, shared_data) -> None:
    out, results = overfit
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, 81))
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    model = TextToGloss.from_pretrained(out / "model")
    train = corpus_pairs("de", "train", shared_data)[:8]
    hyps = model.translate_normalized([t for t, _ in train])
    assert gloss_scores(hyps, [g for _, g in train])["bleu4"] > 90


def test_t2g_save_load_identical(overfit, tmp_path) -> None:
    out, _ = overfit
    model = TextToGloss.from_pretrained(out / "model")
    model.save_pretrained(tmp_path / "copy")
    # The tied output projection is stored once, as the decoder embedding, and re-tied on load.
    with safe_open(str(tmp_path / "copy" / "t2g.safetensors"), "pt") as stored:
        names = stored.keys()
    assert "lm_head.weight" not in names
    again = TextToGloss.from_pretrained(tmp_path / "copy")
    assert again.model.lm_head.weight is again.model.model.decoder.embed_tokens.weight
    batch = model.encode_text(["morgen regnet es im norden ."])
    with torch.no_grad():
        a = model.model(**batch, decoder_input_ids=torch.tensor([[1, 5, 6]])).logits
        b = again.model(**batch, decoder_input_ids=torch.tensor([[1, 5, 6]])).logits
    assert torch.equal(a, b)
    text = "Morgen regnet es im Norden!"
    assert model.translate([text]) == again.translate([text])
    with pytest.raises(TextInputError):
        model.translate(["   "])


def test_t2g_corrupt_checkpoint(overfit, tmp_path) -> None:
    out, _ = overfit
    TextToGloss.from_pretrained(out / "model").save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "t2g.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="unreadable weights"):
        TextToGloss.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "text.spm").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        TextToGloss.from_pretrained(tmp_path / "m")


def test_corpus_text_is_already_in_training_form(shared_data) -> None:
    """Normalising PHOENIX text must be the identity, else training and inference disagree."""
    rows = load_corpus("de", "dev", shared_data)
    assert all(normalize_sentence(r.text, "de") == r.text for r in rows)


def test_no_repeat_ngram_size_forbids_repeats(overfit, shared_data) -> None:
    """The decode-time guard against repetition loops: with size 1 no gloss appears twice in
    an output, and it is saved with the model's config."""
    import dataclasses

    out, _ = overfit
    model = TextToGloss.from_pretrained(out / "model")
    texts = [t for t, _ in corpus_pairs("de", "train", shared_data)[:8]]
    # Five of these memorised sentences repeat a gloss (e.g. REGEN ... REGEN), so without the
    # guard some outputs do too.
    assert any(len(h) != len(set(h)) for h in model.translate_normalized(texts))
    model.config = dataclasses.replace(model.config, no_repeat_ngram_size=1)
    for hyp in model.translate_normalized(texts):
        assert len(hyp) == len(set(hyp)), hyp
    model.save_pretrained(out / "norepeat")
    assert TextToGloss.from_pretrained(out / "norepeat").config.no_repeat_ngram_size == 1


# ------------------------------------------------------------------ train_t2g: log and selection
def test_t2g_logs_each_epochs_mean_batch_loss_across_a_resume(
    shared_data, tmp_path, monkeypatch
) -> None:
    """history.json's ``loss`` is the mean of the epoch's batch losses, also when the epoch was
    interrupted (Ctrl-C in its second batch) and finished by a resumed run."""
    losses: list[float] = []

    class Recording(torch.nn.CrossEntropyLoss):
        def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            loss = super().forward(logits, labels)
            losses.append(loss.item())
            if len(losses) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the step finishes, then the run stops
            return loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Recording)
    torch.set_num_threads(1)
    cfg = T2GTrainConfig(
        model=TINY, epochs=2, batch_tokens=40, lr=3e-3, warmup_steps=10, label_smoothing=0.0,
        average_best=1, max_train=8, max_eval=2, progress=False,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train_t2g(cfg, tmp_path, shared_data)
    assert not (tmp_path / "history.json").exists() and len(losses) == 2
    train_t2g(cfg, tmp_path, shared_data)
    history = json.loads((tmp_path / "history.json").read_text())
    per_epoch = history[0]["step"]
    assert per_epoch >= 3  # so the stop came mid-epoch
    assert [r["step"] for r in history] == [per_epoch, 2 * per_epoch]
    assert len(losses) == 2 * per_epoch  # every batch trained once, none repeated
    for e, row in enumerate(history):
        epoch_losses = losses[e * per_epoch : (e + 1) * per_epoch]
        assert row["loss"] == round(sum(epoch_losses) / per_epoch, 4), row


def test_t2g_final_model_is_chosen_on_dev_never_test(overfit, shared_data, tmp_path) -> None:
    out, _ = overfit
    trained = TextToGloss.from_pretrained(out / "model")
    memorised = corpus_pairs("de", "train", shared_data)[:8]  # the trained weights know these
    good = {k: v.clone() for k, v in trained.model.state_dict().items()}
    torch.manual_seed(1)
    untrained = TextToGloss(TINY, trained.text_tok, trained.gloss_tok).model.state_dict()
    bad = {k: v.clone() for k, v in untrained.items()}  # clones: tied embeddings share storage
    (tmp_path / "epochs").mkdir()
    save_file(good, str(tmp_path / "epochs" / "e1.safetensors"))
    save_file(bad, str(tmp_path / "epochs" / "e2.safetensors"))
    # The history (greedy dev BLEU-4 per epoch) ranks epoch 2 first; on the test sentences
    # epoch 1 is far better. The selection must follow dev.
    history = [
        {"epoch": 1, "step": 1, "loss": 1.0, "dev_bleu4_greedy": 10.0},
        {"epoch": 2, "step": 2, "loss": 1.0, "dev_bleu4_greedy": 20.0},
    ]
    dev, test = memorised[:2], memorised
    cfg = T2GTrainConfig(model=TINY, average_best=1)
    results = finalize(trained, tmp_path, history, cfg, dev, test)
    assert results["averaged_epochs"] == [2]
    saved = TextToGloss.from_pretrained(tmp_path / "model").model.state_dict()
    assert all(torch.equal(saved[k], bad[k]) for k in bad)
    assert results["test"]["bleu4"] < 50  # what peeking at test would have avoided
    # Averaging two epochs or keeping the best one is decided on dev too: another test set
    # changes the reported test scores, never the chosen weights.
    cfg.average_best = 2
    chosen, weights = [], []
    for name, test_pairs in (("a", memorised), ("b", memorised[4:])):
        trained.model.load_state_dict(good)
        run = tmp_path / name
        shutil.copytree(tmp_path / "epochs", run / "epochs")
        chosen.append(finalize(trained, run, history, cfg, dev, test_pairs)["averaged_epochs"])
        weights.append(TextToGloss.from_pretrained(run / "model").model.state_dict())
    assert chosen[0] == chosen[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ------------------------------------------------------------------ ensembles and MBR decoding
def test_minimum_bayes_risk_picks_the_consensus() -> None:
    """The candidate closest to all the others (weighted) wins, not the most probable one."""
    a, b, c = ["A", "B", "C"], ["A", "B"], ["A", "B", "C", "D"]
    # Uniform weights: [A B C] is one edit from each of the others.
    assert minimum_bayes_risk([b, a, c], [1 / 3] * 3) == 1
    # The most probable candidate wins when it carries nearly all the mass.
    assert minimum_bayes_risk([b, a, c], [0.98, 0.01, 0.01]) == 0
    assert minimum_bayes_risk([a], [1.0]) == 0


def test_log_likelihood_is_what_generate_scored(overfit, shared_data) -> None:
    """The ensemble's rescoring must see the same probabilities as the beam search: the summed
    log-probability of a greedy output equals generate's own transition scores -- also when the
    candidates come in another order, several per sentence, each sentence encoded once."""
    out, _ = overfit
    model = TextToGloss.from_pretrained(out / "model")
    texts = [t for t, _ in corpus_pairs("de", "train", shared_data)[:3]]
    batch = model.encode_text(texts)
    with torch.no_grad():
        gen = model.model.generate(
            **batch, num_beams=1, do_sample=False, max_new_tokens=40,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        labels = gen.sequences[:, 1:].clone()
        steps = torch.stack(gen.logits, 1).log_softmax(-1)
        steps = steps.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        labels[labels == PAD] = -100
        expected = steps.masked_fill(labels == -100, 0).sum(1)
        for owner in (torch.arange(3), torch.tensor([2, 0, 2, 1, 0])):
            scores = _log_likelihood(model.model, batch, owner, labels[owner])
            assert torch.allclose(scores, expected[owner], atol=1e-4)


def test_ensemble_decodes_saves_and_loads(overfit, shared_data, tmp_path) -> None:
    """Two members (the memorised model and a perturbed copy) decode the memorised sentences
    by rescoring and by MBR (at a low temperature, where it must agree with the rescoring);
    the folder keeps both weight files and reloads identically."""
    out, _ = overfit
    first = TextToGloss.from_pretrained(out / "model")
    second = TextToGloss.from_pretrained(out / "model")
    with torch.no_grad():
        for p in second.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    train = corpus_pairs("de", "train", shared_data)[:8]
    texts, gold = [t for t, _ in train], [g for _, g in train]
    for decoding in DECODINGS:  # a sharp posterior: MBR must then agree with the rescoring
        ensemble = TextToGloss.ensemble([first, second], decoding=decoding, mbr_temperature=0.05)
        assert ensemble.config.members == 2 and len(ensemble.members) == 2
        assert gloss_scores(ensemble.translate_normalized(texts), gold)["bleu4"] > 90, decoding
    ensemble.save_pretrained(tmp_path / "ens")
    assert (tmp_path / "ens" / weights_name(1)).is_file()
    again = TextToGloss.from_pretrained(tmp_path / "ens")
    for mine, theirs in zip(ensemble.members, again.members, strict=True):
        for x, y in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    assert again.translate_normalized(texts) == ensemble.translate_normalized(texts)
    assert len(TextToGloss.ensemble([again, first]).members) == 3  # an ensemble brings all
    # keep: a subset of the pooled members, in the order given (member 1 is the perturbed one)
    swapped = TextToGloss.ensemble([again, first], keep=[2, 1])
    assert swapped.config.members == 2
    pooled = [*again.members, *first.members]
    for mine, theirs in zip(swapped.members, [pooled[2], pooled[1]], strict=True):
        for x, y in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match="pooled members"):
        TextToGloss.ensemble([again, first], keep=[3])
    (tmp_path / "ens" / weights_name(1)).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        TextToGloss.from_pretrained(tmp_path / "ens")


def test_ensemble_refuses_members_with_other_tokenizers(overfit) -> None:
    out, _ = overfit
    model = TextToGloss.from_pretrained(out / "model")
    other = Tokenizer.train(["ganz andere woerter hier"] * 20, 40, "word")
    stranger = TextToGloss(model.config, other, model.gloss_tok)
    with pytest.raises(ValueError, match="tokenizers"):
        TextToGloss.ensemble([model, stranger])
    with pytest.raises(ValueError, match="decoding"):
        TextToGloss.ensemble([model], decoding="sample")


def test_int8_weights_are_a_quarter_and_decode_the_same(overfit, shared_data, tmp_path) -> None:
    out, _ = overfit
    model = TextToGloss.from_pretrained(out / "model")
    model.save_pretrained(tmp_path / "f32")
    model.save_pretrained(tmp_path / "i8", int8=True)
    sizes = [(tmp_path / d / weights_name(0)).stat().st_size for d in ("f32", "i8")]
    assert sizes[1] < 0.3 * sizes[0]
    again = TextToGloss.from_pretrained(tmp_path / "i8")
    pairs = zip(model.model.state_dict().items(), again.model.state_dict().values(), strict=True)
    for (name, x), y in pairs:
        bound = x.abs().amax(-1, keepdim=True) / 254 + 1e-7 if x.dim() >= 2 else 0.0
        assert ((x - y).abs() <= bound).all(), name  # half a quantisation step per row
    texts = [t for t, _ in corpus_pairs("de", "train", shared_data)[:8]]
    assert again.translate_normalized(texts) == model.translate_normalized(texts)
