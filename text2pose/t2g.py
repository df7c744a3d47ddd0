"""Text → Gloss: a `transformers` MarianMT encoder-decoder trained from scratch.

Why Marian: it is a plain pre-LN-free transformer seq2seq with sinusoidal positions (no learned
position table to overfit on 7k sentences), separate source/target vocabularies and the full
``generate()`` machinery (beam search, KV cache, length penalty) for free. No pretrained weights
are used or downloaded: the model is built from :class:`T2GConfig`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import sacrebleu
import torch
from safetensors.torch import load_file, save
from transformers import MarianConfig, MarianMTModel

from pgmm.checkpoint import DictConfig, atomic_write, dequantize_int8, quantize_int8
from pgmm.metrics.wer import edit_counts
from text2pose.normalize import normalize_sentence
from text2pose.tokenizer import BOS, EOS, PAD, Tokenizer, pad_ids

CONFIG_NAME, WEIGHTS_NAME = "t2g_config.json", "t2g.safetensors"
DECODINGS = ("beam", "mbr")
SRC_TOKENIZER, GLOSS_TOKENIZER = "text.spm", "gloss.spm"


@dataclass
class T2GConfig(DictConfig):
    """Model size, tokenizers and decoding; the training recipe lives in ``T2GTrainConfig``."""

    language: str = "de"
    d_model: int = 256
    layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.3
    attention_dropout: float = 0.1
    max_len: int = 128
    text_model_type: str = "bpe"
    text_vocab_size: int = 2000
    character_coverage: float = 1.0
    num_beams: int = 5
    length_penalty: float = 1.0
    # > 0 forbids repeating any n-gram of this size in one output: a decode-time guard against
    # the repetition loops of an undertrained model (measured per language in results.md).
    no_repeat_ngram_size: int = 0
    # Weight files in the folder: members trained by the same recipe with other seeds
    # (t2g.safetensors, t2g_1.safetensors, ...). Each member's beam n-best is pooled and every
    # candidate is scored by all members (mean log-probability per token): an ensemble that
    # needs no beam search of its own, and whose cost grows with the members, not the beam.
    members: int = 1
    # "beam": the candidate the (ensemble's) score ranks first. "mbr": minimum Bayes risk -- the
    # candidate with the least expected word error against the others, weighted by the
    # softmax of their scores / mbr_temperature. WER is what the text path is judged by, and
    # the consensus candidate drops the glosses the models disagree on.
    decoding: str = "beam"
    mbr_temperature: float = 1.0


class TextToGloss(torch.nn.Module):
    """Tokenizers + Marian model; ``translate`` goes from raw sentences to gloss lists."""

    def __init__(self, config: T2GConfig, text_tok: Tokenizer, gloss_tok: Tokenizer) -> None:
        super().__init__()
        if config.decoding not in DECODINGS:
            raise ValueError(f"T2G decoding must be one of {DECODINGS}, got {config.decoding!r}")
        if config.members < 1:
            raise ValueError(f"T2G members must be >= 1, got {config.members}")
        self.config, self.text_tok, self.gloss_tok = config, text_tok, gloss_tok
        # Member 0 is the one training sees; the others only decode.
        self.model = self._marian()
        self.others = torch.nn.ModuleList(self._marian() for _ in range(config.members - 1))

    def _marian(self) -> MarianMTModel:
        c = self.config
        model = MarianMTModel(
            MarianConfig(
                vocab_size=len(self.text_tok),
                decoder_vocab_size=len(self.gloss_tok),
                share_encoder_decoder_embeddings=False,
                d_model=c.d_model,
                encoder_layers=c.layers,
                decoder_layers=c.layers,
                encoder_attention_heads=c.heads,
                decoder_attention_heads=c.heads,
                encoder_ffn_dim=c.ffn_dim,
                decoder_ffn_dim=c.ffn_dim,
                dropout=c.dropout,
                attention_dropout=c.attention_dropout,
                activation_dropout=c.attention_dropout,
                max_position_embeddings=c.max_len + 2,
                pad_token_id=PAD,
                bos_token_id=BOS,
                eos_token_id=EOS,
                decoder_start_token_id=BOS,
                forced_eos_token_id=EOS,
                scale_embedding=True,
            )
        )
        # Marian's generation defaults bad-word-mask the pad id; keep the config's own.
        model.generation_config.bad_words_ids = None
        return model

    @property
    def members(self) -> list[MarianMTModel]:
        return [self.model, *self.others]

    # ------------------------------------------------------------------ batches
    def encode_text(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """Already-normalised sentences -> padded ``input_ids`` / ``attention_mask``, on the
        model's device (where ``translate`` decodes: on a GPU a host batch would fail there)."""
        ids = pad_ids([self.text_tok.encode(s)[: self.config.max_len] for s in sentences])
        device = next(self.parameters()).device
        return {"input_ids": ids.to(device), "attention_mask": (ids != PAD).long().to(device)}

    def encode_glosses(self, glosses: list[list[str]]) -> torch.Tensor:
        """Padded gloss ids as ``labels`` (padding -100, which the losses ignore)."""
        ids = [self.gloss_tok.encode(" ".join(g))[: self.config.max_len] for g in glosses]
        return pad_ids(ids, -100)

    @torch.no_grad()
    def translate_normalized(
        self, sentences: list[str], num_beams: int | None = None
    ) -> list[list[str]]:
        self.eval()
        c, beams = self.config, num_beams or self.config.num_beams
        batch = self.encode_text(sentences)
        if c.members == 1 and c.decoding == "beam":
            return [
                self.gloss_tok.decode(r.tolist()).split()
                for r in self._beam(self.model, batch, beams, 1)
            ]
        pools: list[list[tuple[int, ...]]] = [[] for _ in sentences]
        for member in self.members:
            nbest = self._beam(member, batch, beams, beams).view(len(sentences), beams, -1)
            for pool, rows in zip(pools, nbest.tolist(), strict=True):
                for row in rows:
                    ids = tuple(i for i in row if i not in (PAD, BOS, EOS))
                    if ids not in pool:
                        pool.append(ids)
        return self._choose(batch, pools)

    def _beam(
        self, member: MarianMTModel, batch: dict[str, torch.Tensor], beams: int, keep: int
    ) -> torch.Tensor:
        """The ``keep`` best of one member's beam search, ``keep`` rows per sentence."""
        return member.generate(
            **batch,
            num_beams=beams,
            num_return_sequences=keep,
            length_penalty=self.config.length_penalty,
            no_repeat_ngram_size=self.config.no_repeat_ngram_size,
            max_new_tokens=self.config.max_len,
            do_sample=False,
        )

    def _choose(
        self, batch: dict[str, torch.Tensor], pools: list[list[tuple[int, ...]]]
    ) -> list[list[str]]:
        """Per sentence, the pooled candidate ranked first (``beam``) or the least risky one
        (``mbr``); all candidates of the batch are scored in one pass per member."""
        owner = torch.tensor([i for i, pool in enumerate(pools) for _ in pool])
        labels = pad_ids([[*ids, EOS] for pool in pools for ids in pool], -100)
        labels = labels.to(batch["input_ids"].device)
        # ``owner`` stays on the host for the per-sentence selection below (``scores`` is there).
        on_device = owner.to(labels.device)
        log_prob = torch.zeros(len(labels), device=labels.device)
        for member in self.members:
            log_prob = log_prob + _log_likelihood(member, batch, on_device, labels)
        log_prob = log_prob / len(self.members)
        scores = (log_prob / (labels != -100).sum(1) ** self.config.length_penalty).cpu()
        chosen = []
        for index, pool in enumerate(pools):
            glosses = [self.gloss_tok.decode(ids).split() for ids in pool]
            score = scores[owner == index]
            if self.config.decoding == "beam":
                chosen.append(glosses[int(score.argmax())])
            else:
                weight = torch.softmax(score / self.config.mbr_temperature, 0).tolist()
                chosen.append(glosses[minimum_bayes_risk(glosses, weight)])
        return chosen

    def translate(self, sentences: list[str], num_beams: int | None = None) -> list[list[str]]:
        """Raw sentences (any case/punctuation) -> gloss lists; bad text raises TextInputError."""
        norm = [normalize_sentence(s, self.config.language) for s in sentences]
        return self.translate_normalized(norm, num_beams)

    @classmethod
    def ensemble(
        cls, models: list[TextToGloss], keep: list[int] | None = None, **decoding: Any
    ) -> TextToGloss:
        """One T2G decoding with every member of ``models`` (same recipe, other seeds; an
        ensemble brings all its members). Their tokenizers must be the same (the recipe trains
        them deterministically from the data), since candidates are pooled as token ids.
        ``keep``: indices into that pooled member list, to build a subset (e.g. to swap one
        shipped member for a new one without loading the rest twice). ``decoding`` overrides
        config fields."""
        first = models[0]
        if len({(m.text_tok.proto, m.gloss_tok.proto) for m in models}) > 1:
            raise ValueError("ensemble members must share their tokenizers")
        members = [member for model in models for member in model.members]
        if keep is not None:
            if not keep or any(not 0 <= i < len(members) for i in keep):
                raise ValueError(f"keep must index the {len(members)} pooled members, got {keep}")
            members = [members[i] for i in keep]
        config = replace(first.config, **{**decoding, "members": len(members)})
        out = cls(config, first.text_tok, first.gloss_tok)
        for target, member in zip(out.members, members, strict=True):
            target.load_state_dict(member.state_dict())
        return out.eval()

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, int8: bool = False) -> Path:
        """``int8``: store each weight matrix as int8 with one scale per row (a quarter of
        float32; what lets an ensemble fit the shipped-model budget -- the decoding it gives is
        measured in docs/text2pose.md). Loading always restores float32 parameters."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = json.dumps(asdict(self.config), indent=2, ensure_ascii=False)
        atomic_write(directory / CONFIG_NAME, config)
        for index, member in enumerate(self.members):
            # Marian ties lm_head to the decoder embedding: the matrix is stored once (safetensors
            # refuses shared storage, and a second copy costs ~0.3 MB per member of the budget of
            # models/); loading re-ties it.
            skip = {"lm_head.weight"} if _lm_head_tied(member) else set()
            state = {
                k: v.detach().cpu().clone()
                for k, v in member.state_dict().items()
                if k not in skip
            }
            if int8:
                state = quantize_int8(state)
            atomic_write(directory / weights_name(index), save(state, {"format": "pt"}))
        self.text_tok.save(directory / SRC_TOKENIZER)
        self.gloss_tok.save(directory / GLOSS_TOKENIZER)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TextToGloss:
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME, SRC_TOKENIZER, GLOSS_TOKENIZER):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"text-to-gloss model incomplete: {directory / name}")
        try:
            config = T2GConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{directory / CONFIG_NAME}: unreadable config ({e})") from e
        model = cls(
            config,
            Tokenizer.load(directory / SRC_TOKENIZER),
            Tokenizer.load(directory / GLOSS_TOKENIZER),
        )
        for index, member in enumerate(model.members):
            path = directory / weights_name(index)
            if not path.is_file():
                raise FileNotFoundError(f"text-to-gloss model incomplete: {path}")
            try:
                state = dequantize_int8(load_file(str(path)))
            except Exception as e:  # safetensors raises its own types on corrupt bytes
                raise ValueError(f"{path}: unreadable weights ({e})") from e
            missing, unexpected = member.load_state_dict(state, strict=False)
            missing = [k for k in missing if not (k == "lm_head.weight" and _lm_head_tied(member))]
            if missing or unexpected:
                raise ValueError(
                    f"{path} does not match its config: missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]}"
                )
        return model.eval()


def _lm_head_tied(member: MarianMTModel) -> bool:
    """True when the output projection *is* the decoder's embedding (one parameter)."""
    return member.lm_head.weight is member.model.decoder.embed_tokens.weight


def weights_name(member: int) -> str:
    """Weight file of ensemble member ``member`` (0: the file a single model has always used)."""
    return WEIGHTS_NAME if member == 0 else WEIGHTS_NAME.replace(".", f"_{member}.", 1)


def minimum_bayes_risk(candidates: list[list[str]], weights: list[float]) -> int:
    """Index of the candidate with the least expected word error rate when each candidate in
    turn is taken as the reference with probability ``weights[i]`` (Kumar & Byrne, 2004)."""
    risk = [
        sum(
            w * edit_counts(ref, hyp).errors / max(1, len(ref))
            for ref, w in zip(candidates, weights, strict=True)
        )
        for hyp in candidates
    ]
    return risk.index(min(risk))


def _log_likelihood(
    member: MarianMTModel,
    batch: dict[str, torch.Tensor],
    owner: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Summed log-probability of each row of ``labels`` (-100 = padding) under ``member``, row
    ``i`` a candidate for sentence ``owner[i]`` of ``batch``. Each sentence is encoded once and
    its encoding shared by its candidates (a pool holds up to members x beams of them) instead of
    encoded again for each: the same numbers, and the scoring of a pool takes ~40 % less time."""
    encoded = member.get_encoder()(**batch).last_hidden_state[owner]
    logits = member(
        attention_mask=batch["attention_mask"][owner], encoder_outputs=(encoded,), labels=labels
    ).logits.float()
    token = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * (labels != -100)).sum(1)


def gloss_scores(hypotheses: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 and chrF on gloss tokens (sacrebleu, ``tokenize='none'``: a gloss is a word,
    as in the Progressive Transformers / SLT evaluation scripts)."""
    hyp = [" ".join(h) for h in hypotheses]
    ref = [[" ".join(r) for r in references]]
    out = {}
    for n in range(1, 5):
        bleu = sacrebleu.metrics.BLEU(tokenize="none", max_ngram_order=n, effective_order=False)
        out[f"bleu{n}"] = round(bleu.corpus_score(hyp, ref).score, 2)
    out["chrf"] = round(sacrebleu.metrics.CHRF().corpus_score(hyp, ref).score, 2)
    return out
