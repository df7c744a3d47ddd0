"""Text → Gloss: a `transformers` MarianMT encoder-decoder trained from scratch.

Why Marian: it is a plain pre-LN-free transformer seq2seq with sinusoidal positions (no learned
position table to overfit on 7k sentences), separate source/target vocabularies and the full
``generate()`` machinery (beam search, KV cache, length penalty) for free. No pretrained weights
are used or downloaded: the model is built from :class:`T2GConfig`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import sacrebleu
import torch
from safetensors.torch import load_file, save_file
from transformers import MarianConfig, MarianMTModel

from pgmm.checkpoint import dataclass_from_dict
from text2pose.normalize import normalize_sentence
from text2pose.tokenizer import BOS, EOS, PAD, Tokenizer

CONFIG_NAME, WEIGHTS_NAME = "t2g_config.json", "t2g.safetensors"
SRC_TOKENIZER, GLOSS_TOKENIZER = "text.spm", "gloss.spm"


@dataclass
class T2GConfig:
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

    @classmethod
    def from_dict(cls, d: dict) -> T2GConfig:
        return dataclass_from_dict(cls, d, "T2G config")


class TextToGloss(torch.nn.Module):
    """Tokenizers + Marian model; ``translate`` goes from raw sentences to gloss lists."""

    def __init__(self, config: T2GConfig, text_tok: Tokenizer, gloss_tok: Tokenizer) -> None:
        super().__init__()
        self.config, self.text_tok, self.gloss_tok = config, text_tok, gloss_tok
        c = config
        self.model = MarianMTModel(
            MarianConfig(
                vocab_size=len(text_tok),
                decoder_vocab_size=len(gloss_tok),
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
        self.model.generation_config.bad_words_ids = None

    # ------------------------------------------------------------------ batches
    def encode_text(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """Already-normalised sentences -> padded ``input_ids`` / ``attention_mask``, on the
        model's device (where ``translate`` decodes: on a GPU a host batch would fail there)."""
        ids = [self.text_tok.encode(s)[: self.config.max_len] for s in sentences]
        device = next(self.parameters()).device
        return {k: v.to(device) for k, v in _pad(ids, "input_ids").items()}

    def encode_glosses(self, glosses: list[list[str]]) -> torch.Tensor:
        ids = [self.gloss_tok.encode(" ".join(g))[: self.config.max_len] for g in glosses]
        labels = _pad(ids, "labels")["labels"]
        return labels.masked_fill(labels == PAD, -100)

    @torch.no_grad()
    def translate_normalized(
        self, sentences: list[str], num_beams: int | None = None
    ) -> list[list[str]]:
        self.eval()
        batch = self.encode_text(sentences)
        out = self.model.generate(
            **batch,
            num_beams=num_beams or self.config.num_beams,
            length_penalty=self.config.length_penalty,
            no_repeat_ngram_size=self.config.no_repeat_ngram_size,
            max_new_tokens=self.config.max_len,
            do_sample=False,
        )
        return [self.gloss_tok.decode(row.tolist()).split() for row in out]

    def translate(self, sentences: list[str], num_beams: int | None = None) -> list[list[str]]:
        """Raw sentences (any case/punctuation) -> gloss lists; bad text raises TextInputError."""
        norm = [normalize_sentence(s, self.config.language) for s in sentences]
        return self.translate_normalized(norm, num_beams)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_json(directory / CONFIG_NAME, asdict(self.config))
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        # Marian ties lm_head to the decoder embedding; safetensors refuses shared storage.
        state = {k: v.clone() for k, v in state.items()}
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / WEIGHTS_NAME)
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
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except Exception as e:  # safetensors raises its own types on corrupt bytes
            raise ValueError(f"{directory / WEIGHTS_NAME}: unreadable weights ({e})") from e
        missing, unexpected = model.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise ValueError(
                f"{directory / WEIGHTS_NAME} does not match its config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return model.eval()


def _pad(ids: list[list[int]], key: str) -> dict[str, torch.Tensor]:
    n = max(len(x) for x in ids)
    out = torch.full((len(ids), n), PAD, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    if key == "labels":
        return {"labels": out}
    return {"input_ids": out, "attention_mask": (out != PAD).long()}


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    tmp.replace(path)


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
