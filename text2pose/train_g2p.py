"""``slp train text2pose --stage g2p|t2p``: the G2P recipe from a YAML file.

``--stage t2p`` (``inputs: text``) trains the same network on the sentences' text instead of
their glosses: the direct text -> pose variant that Progressive Transformers compares with
text -> gloss -> pose.

``init_from`` + ``bt_recognizer`` + ``bt_weight`` (configs/text2pose/g2p-bt-*.yaml) fine-tune a
trained G2P with the back-translation loss of a frozen recognizer added to its L1 loss
(:mod:`text2pose.backtranslation`, issue 15's control).

The targets are SynthSigner's poses of the corpus sentences in the canonical frame
(:mod:`text2pose.data`); building them takes ~2 min for PHOENIX-2014T and is cached under
``cache_dir`` so a resumed or repeated run starts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgmm.checkpoint import recipe_from_yaml, target_device
from pgmm.data.synth.signer import SynthSigner
from text2pose.data import as_text_data, build_g2p_data
from text2pose.g2p import G2PConfig, GlossToPose, train_g2p


@dataclass
class G2PTrainConfig:
    model: G2PConfig = field(default_factory=G2PConfig)
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    checkpoint_every: int = 250
    checkpoint_minutes: float = 5.0  # ...or by the clock, whichever first
    eval_every: int = 250
    cache_dir: str = "outputs/cache/g2p"
    max_sentences: int | None = None  # first N training sentences (tests)
    seed: int = 0
    inputs: str = "glosses"  # or "text": the direct T2P variant
    init_from: str | None = None  # a G2P model folder to fine-tune (model: is then ignored)
    bt_recognizer: str | None = None  # frozen recognizer folder of the back-translation loss
    bt_weight: float = 0.0  # weight of its CTC loss beside the L1 frame loss
    bt_noise: float = 0.0  # max std of the keypoint noise before it reads (frame units)

    def __post_init__(self) -> None:
        if self.inputs not in ("glosses", "text"):
            raise ValueError(f"inputs must be 'glosses' or 'text', got {self.inputs!r}")
        if (self.bt_recognizer is None) != (self.bt_weight == 0.0) or self.bt_weight < 0:
            raise ValueError(
                "bt_recognizer and bt_weight > 0 go together (the back-translation loss), got "
                f"{self.bt_recognizer!r} and {self.bt_weight}"
            )
        if self.bt_recognizer is not None and self.inputs == "text":
            raise ValueError("the back-translation loss needs gloss inputs (inputs: glosses)")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> G2PTrainConfig:
        """``model:`` and ``train:`` sections of a configs/text2pose/g2p-*.yaml file."""
        return recipe_from_yaml(cls, G2PConfig, path, overrides)


def run_g2p(
    cfg: G2PTrainConfig, out_dir: str | Path, device: str | torch.device = "cpu"
) -> GlossToPose:
    """Build (or read from the cache) the pose targets, then train or resume on ``device``
    (checked first: a typo must not cost the minutes of building the targets)."""
    device = target_device(device)
    language = cfg.model.language
    if language not in ("de", "zh"):
        raise ValueError(f"the G2P config must name model.language de or zh, got {language!r}")
    back_translation = None
    if cfg.bt_recognizer is not None:
        from text2pose.backtranslation import BackTranslationLoss

        # Read before the targets are built: a wrong path must fail at once.
        back_translation = BackTranslationLoss.from_pretrained(
            cfg.bt_recognizer, cfg.bt_weight, device, cfg.bt_noise
        )
        back_translation.check_language(language)
    if cfg.init_from is not None and not Path(cfg.init_from).is_dir():
        raise FileNotFoundError(f"init_from: no G2P model folder at {cfg.init_from}")
    signer = SynthSigner(languages=[language])
    train = build_g2p_data(signer, "train", language, cfg.cache_dir, cfg.max_sentences)
    dev = build_g2p_data(signer, "dev", language, cfg.cache_dir)
    if cfg.inputs == "text":
        train, dev = as_text_data(train, signer, "train"), as_text_data(dev, signer, "dev")
    return train_g2p(
        cfg.model,
        train,
        dev,
        out_dir,
        cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_minutes=cfg.checkpoint_minutes,
        eval_every=cfg.eval_every,
        seed=cfg.seed,
        device=device,
        init_from=cfg.init_from,
        back_translation=back_translation,
    )
