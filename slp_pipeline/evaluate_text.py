"""End-to-end legibility of the product, text -> sign video (``slp eval --task text``).

Every other number of the project scores one stage alone. This one follows corpus sentences
through the chain a user of ``POST /v1/sign`` gets -- text -> text2pose -> retarget onto the
signer -> heatmaps -> renderer -> frames -- and asks whether the signing can be *read back*:
an independent pose estimator (the *evaluator*, ``models/evaluator``, which no renderer was
trained against) reads keypoints from every frame, a pose CTC recogniser
(:data:`DEFAULT_RECOGNIZERS`: for each language one also trained on the evaluator's readings
of SynthSigner's videos, never of a renderer's) reads glosses from them, and these are scored
against the corpus glosses (WER, and BLEU-4 with sacrebleu on gloss strings).

Rows split the chain so that the weakest stage shows (:func:`plan_rows`):

* pose level -- the recogniser reads the *driving poses* directly: ground-truth SynthSigner
  poses (the ceiling), text2pose's poses, and the lexicon baseline's poses
  (:class:`text2pose.baselines.LexiconBaseline` fed the same T2G glosses: a sign.mt-style
  pipeline);
* per renderer, each of those three pose sources drawn by the renderer and read back through
  the evaluator. ``text2pose`` through a PGMM renderer is **the product**.

Renderers: any PGMM checkpoint of the serve config (or a checkpoint folder), ``skeleton``, and
``synth`` -- SynthSigner's own procedural drawing (:func:`pgmm.data.synth.render.render_frame`)
of the same poses, the "perfect renderer" for this signer. Every pose source goes through the
serving code (:class:`~slp_pipeline.synthesize.Synthesizer`'s stages: canonical poses,
:func:`~slp_pipeline.stages.retarget_to` onto the signer, then a
:class:`~slp_pipeline.stages.Renderer` preparing the signer and rendering, chunk by chunk), so the
rows differ only in where the poses come from and what draws them.

One signer for all rows: the built-in ``default`` signer, SynthSigner's held-out identity 10.
The ground-truth poses are the sentence signed by identity 10 and the ``synth`` render draws
identity 10, so the ground-truth ``synth`` row shows the corpus video of a held-out person.
SynthSigner's renderer also needs each point's depth (only for the drawing order of arms, palm
and fingers): ground-truth poses bring theirs; text2pose and the lexicon predict none, so they
get the signer's rest-pose depth, held fixed.

Everything a row computes per sentence is appended to ``OUT/rows/<row>.jsonl`` at once, so an
interrupted run resumes where it stopped, and raising ``--max-sentences`` later only adds the
new sentences. ``OUT/run.json`` pins the models (content digests) and settings; a run folder
never mixes results of different models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from pgmm.console import progress as progress_bar
from pgmm.data.corpus import CorpusSentence
from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.lexicon import keyed_rng
from pgmm.data.synth.motion import sentence_pose
from pgmm.data.synth.render import render_frame
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.evaluation import atomic_write_text, write_doc_block
from pgmm.metrics.recognizer import video_keypoints
from pgmm.metrics.wer import GlossRecognizer, edit_counts, word_error_rate
from pgmm.models.pose_estimator import HRNetLite, PoseEstimator
from pgmm.pose.sequence import PoseSequence
from pgmm.report import md_table
from pgmm.video import VideoWriter, read_video
from slp_pipeline.config import DEFAULT_CONFIG, PipelineConfig, load_serve_config, pipeline_config
from slp_pipeline.signers import BUILTIN_SIGNERS, InputError, Signer
from slp_pipeline.stages import (
    SKELETON,
    Renderer,
    check_request,
    concat_poses,
    is_skeleton,
    resolve_device,
    retarget_to,
    square_resized,
)
from slp_pipeline.synthesize import Synthesizer, in_chunks
from text2pose.canonical import FPS, to_canonical
from text2pose.metrics import PoseGenerator, camera_view
from text2pose.normalize import TextInputError

__all__ = [
    "DEFAULT_RENDERERS",
    "DEFAULT_SENTENCES",
    "EVALUATOR_SIZE",
    "POSE_SOURCES",
    "Chain",
    "RowResult",
    "RowSpec",
    "SentenceScore",
    "TextEvalResult",
    "TextEvalSettings",
    "markdown",
    "load_chain",
    "markdown_table",
    "plan_rows",
    "run_text_eval",
    "update_docs",
    "write_outputs",
]

#: Sentences per language by default: the first N of the split, in corpus order. Six keep the
#: default rows near 20 minutes per language on the shared 2-core CPU (~3 min per German
#: sentence with 1 thread, measured in docs/results.md); their interval is wide, so published
#: tables raise it (a re-run with a larger N only adds the new sentences).
DEFAULT_SENTENCES = 6
#: ``synth`` is SynthSigner's procedural render; the other names come from the serve config.
SYNTH = "synth"
DEFAULT_RENDERERS = (SYNTH, SKELETON, "full", "tpsmm")
DEFAULT_EVALUATOR = Path("models/evaluator")
#: The recogniser that reads each language's table by default. Each was trained on the
#: evaluator's keypoints of SynthSigner's videos as well as on exact poses, so it reads the
#: perfect renderer's video far better than a pose-only reader does (test numbers in
#: models/recognizer/{de,zh}_read/MODEL_CARD.md): a video row's WER is then mostly the video's,
#: not the reader's.
DEFAULT_RECOGNIZERS = {
    "de": Path("models/recognizer/de_read"),
    "zh": Path("models/recognizer/zh_read"),
}
#: The evaluator reads frames at the size it was trained at (``slp train pose-estimator``'s
#: default); larger renders (the 256-px skeleton) are downscaled, antialiased.
EVALUATOR_SIZE = 128
GROUND_TRUTH, TEXT2POSE, LEXICON = "ground truth", "text2pose", "lexicon"
POSE_SOURCES = (GROUND_TRUTH, TEXT2POSE, LEXICON)
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
MEDIA_SENTENCES = 3  # sentences in the side-by-side video and the contact sheet
SHEET_FRAMES = 4  # frames per sentence on the contact sheet
BEGIN, END = "<!-- e2e:{lang}:begin -->", "<!-- e2e:{lang}:end -->"

_MAKE = {
    "evaluator": "slp train pose-estimator --preset evaluator --seed 1 --max-videos 300 "
    "--random-looks 0.5 --steps 6000 --out outputs/runs/evaluator, then python "
    "scripts/ship_models.py evaluator=outputs/runs/evaluator/model",
    "recognizer": "slp train recognizer --language {lang} --out outputs/runs/RUN (the shipped "
    "readers: --read-by models/evaluator --read-sentences 3000 --steps 4000; the cards of "
    "models/recognizer/{lang}_read), then "
    "python scripts/ship_models.py recognizer/NAME=outputs/runs/RUN/model",
    "text2pose": "slp train text2pose --stage t2g --lang {lang} and --stage g2p, then slp "
    "text2pose pack (docs/text2pose.md)",
    "renderer": "slp train pgmm --config configs/pgmm/full-small.yaml --out RUN",
}


# --------------------------------------------------------------------------- settings and rows
@dataclass(frozen=True)
class TextEvalSettings:
    """What to evaluate; every path is a model folder (``recognizer``: default
    :data:`DEFAULT_RECOGNIZERS` of the language)."""

    language: str
    out: Path
    split: str = "test"
    max_sentences: int = DEFAULT_SENTENCES
    renderers: tuple[str, ...] = DEFAULT_RENDERERS
    evaluator: Path = DEFAULT_EVALUATOR
    recognizer: Path | None = None
    config: Path = DEFAULT_CONFIG
    signer: str = "default"
    threads: int = 1  # torch threads the CLI sets (only the speed depends on it)

    def __post_init__(self) -> None:
        if self.language not in ("de", "zh"):
            raise ValueError(f"language must be de or zh, got {self.language!r}")
        if self.split not in ("train", "dev", "test"):
            raise ValueError(f"split must be train, dev or test, got {self.split!r}")
        if self.max_sentences < 1:
            raise ValueError(f"--max-sentences must be >= 1, got {self.max_sentences}")
        if not self.renderers:
            raise ValueError("give at least one renderer")
        if self.signer not in BUILTIN_SIGNERS:
            raise ValueError(
                f"signer {self.signer!r} is not a built-in SynthSigner identity "
                f"({sorted(BUILTIN_SIGNERS)}): its ground-truth poses would not exist"
            )

    def command(self, docs: Path | None = None) -> str:
        """The ``slp eval`` line that reproduces this run (written next to its numbers)."""
        parts = ["slp", "eval", "--task", "text", "--language", self.language]
        parts += ["--split", self.split, "--max-sentences", str(self.max_sentences)]
        parts += ["--renderers", *self.renderers, "--evaluator", str(self.evaluator)]
        parts += ["--recognizer", str(self.recognizer_path)]
        if self.config != DEFAULT_CONFIG:
            parts += ["--config", str(self.config)]
        if self.threads != 1:
            parts += ["--threads", str(self.threads)]
        parts += ["--out", str(self.out)] + (["--docs", str(docs)] if docs else [])
        return shlex.join(parts)

    @property
    def recognizer_path(self) -> Path:
        return self.recognizer or DEFAULT_RECOGNIZERS[self.language]

    @property
    def identity(self) -> int:
        return BUILTIN_SIGNERS[self.signer]


@dataclass(frozen=True)
class RowSpec:
    """One row: a pose source, and the renderer that draws it (``None``: the recogniser reads
    the driving poses themselves)."""

    poses: str
    renderer: str | None

    @property
    def key(self) -> str:
        """File-safe name of the row's JSONL cache."""
        name = f"{self.poses}.{self.renderer or 'poses'}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name)

    @property
    def chain(self) -> str:
        if self.renderer is None:
            return f"{self.poses} poses → recogniser"
        return f"{self.poses} poses → {self.renderer} → evaluator → recogniser"

    @property
    def product(self) -> bool:
        """text2pose through a PGMM renderer: what ``POST /v1/sign`` delivers."""
        return self.poses == TEXT2POSE and self.renderer not in (None, SYNTH, SKELETON)


def plan_rows(renderers: Sequence[str]) -> list[RowSpec]:
    """Pose-level rows first, then every pose source through every renderer."""
    rows = [RowSpec(source, None) for source in POSE_SOURCES]
    return rows + [RowSpec(source, r) for r in renderers for source in POSE_SOURCES]


@dataclass
class SentenceScore:
    """One line of ``rows/<row>.jsonl``: one sentence through one row."""

    sentence: str
    reference: list[str]
    hypothesis: list[str]
    frames: int
    seconds: float  # rendering + reading of this row
    pose_seconds: float  # making the driving poses (shared by the rows of one pose source)
    error: str | None = None  # the chain produced nothing (e.g. text2pose refused the text)


@dataclass
class RowResult:
    """A row of the table: corpus WER / BLEU-4 and how stable and costly they are."""

    key: str
    chain: str
    poses: str
    renderer: str | None
    product: bool
    sentences: int
    wer: float
    wer_interval: tuple[float, float]  # bootstrap 95 % over sentences
    wer_halves: tuple[float, float] | None  # first / second half of the sentences
    bleu4: float
    frames: int
    seconds_per_sentence: float  # pose generation + rendering + reading
    failed: int  # sentences where the chain produced no video


@dataclass
class TextEvalResult:
    language: str
    split: str
    sentences: int
    signer: str
    identity: int
    evaluator_size: int
    models: dict[str, dict[str, str]]  # role -> {"path", "digest"}
    rows: list[RowResult]
    wall_seconds: float  # of this invocation (rows read from the cache cost nothing)
    torch_threads: int
    command: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- loading
@dataclass
class Chain:
    """The loaded models of one run. ``fingerprint`` identifies them (content digests), so a
    run folder is never resumed with other models."""

    synthesizer: Synthesizer
    renderers: dict[str, str]  # label -> Synthesizer renderer name, or SYNTH
    evaluator: PoseEstimator
    recognizer: GlossRecognizer  # reads (T, 36, 3) PGMM36 keypoints: a PoseCTCRecognizer
    signer: SynthSigner
    lexicon: PoseGenerator
    fingerprint: dict[str, dict[str, str]]


def _missing(path: Path, what: str, language: str) -> str | None:
    """``None`` for an existing model folder, else what is missing and how to create it."""
    if Path(path).is_dir():
        return None
    return f"{what} model not found: {path} (create it with: {_MAKE[what].format(lang=language)})"


def require(path: Path, what: str, language: str) -> Path:
    """A model folder that exists, or one line naming it and the command that creates it."""
    problem = _missing(path, what, language)
    if problem:
        raise FileNotFoundError(problem)
    return Path(path)


def folder_digest(path: str | Path) -> str:
    """Content hash of a model folder (every file but the model card, by relative path),
    independent of where it lives: the identity a cached result is tied to. The card is
    prose about the weights -- editing it must not invalidate results of the same weights."""
    root = Path(path)
    h = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file() and p.name != "MODEL_CARD.md")
    for file in sorted(files):
        h.update(str(file.relative_to(root)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


def _renderer_specs(names: Sequence[str], pipeline: PipelineConfig) -> dict[str, str]:
    """Table label -> serve-config renderer spec (``skeleton`` or a PGMM folder) or SYNTH.

    A PGMM renderer is labelled by its checkpoint folder (``full`` -> ``full-small``), the name
    its model card and results use.
    """
    specs: dict[str, str] = {}
    for name in names:
        if name == SYNTH:
            label, spec = SYNTH, SYNTH
        elif name in pipeline.renderers:
            spec = pipeline.renderers[name]
            label = SKELETON if is_skeleton(spec) else Path(spec).name
        elif Path(name).is_dir():
            spec, label = str(Path(name).resolve()), Path(name).resolve().name
        else:
            known = ", ".join([SYNTH, *pipeline.renderers])
            raise ValueError(f"unknown renderer {name!r}: choose from {known} or a PGMM folder")
        if label in specs:
            raise ValueError(f"renderer {label!r} is given twice")
        specs[label] = spec
    return specs


def load_lexicon(signer: SynthSigner, language: str) -> PoseGenerator:
    """The lexicon baseline with its per-gloss durations from the training split (cached in
    ``outputs/cache/g2p``, as ``slp text2pose eval`` does: the first build takes minutes)."""
    from text2pose.baselines import LexiconBaseline
    from text2pose.data import build_g2p_data

    return LexiconBaseline(signer, build_g2p_data(signer, "train", language, "outputs/cache/g2p"))


def load_chain(
    settings: TextEvalSettings,
    pipeline: PipelineConfig | None = None,
    signer: SynthSigner | None = None,
    lexicon: PoseGenerator | None = None,
) -> Chain:
    """Check every model folder first (all missing ones named in one line), then load.
    ``pipeline``: default ``settings.config``'s, paths taken from the working directory (the
    repository root, like ``slp serve``)."""
    from pgmm.metrics.recognizer import PoseCTCRecognizer

    pipeline = pipeline or pipeline_config(load_serve_config(settings.config)).resolved()
    lang = settings.language
    if lang not in pipeline.text2pose:
        raise ValueError(f"the serve config has no text2pose model for {lang!r}")
    specs = _renderer_specs(settings.renderers, pipeline)
    wanted = {
        "evaluator": (Path(settings.evaluator), "evaluator"),
        "recognizer": (settings.recognizer_path, "recognizer"),
        "text2pose": (Path(pipeline.text2pose[lang]), "text2pose"),
    }
    for label, spec in specs.items():
        if spec != SYNTH and not is_skeleton(spec):
            wanted[f"renderer {label}"] = (Path(spec), "renderer")
    problems = [_missing(path, what, lang) for path, what in wanted.values()]
    if any(problems):
        raise FileNotFoundError("; ".join(p for p in problems if p))
    folders = {role: path for role, (path, _) in wanted.items()}
    device = resolve_device(pipeline.device)  # the serve config's: the renderers' device too
    recognizer = PoseCTCRecognizer.from_pretrained(folders["recognizer"], device)
    if recognizer.config.language != lang:
        raise ValueError(
            f"{folders['recognizer']} reads {recognizer.config.language!r} glosses, not {lang!r}"
        )
    used = {label: spec for label, spec in specs.items() if spec != SYNTH}
    pipeline = dataclasses.replace(pipeline, renderers={**pipeline.renderers, **used})
    signer = signer or SynthSigner(languages=[lang])
    return Chain(
        synthesizer=Synthesizer(pipeline),
        renderers={label: label if spec != SYNTH else SYNTH for label, spec in specs.items()},
        evaluator=HRNetLite.from_pretrained(folders["evaluator"]).to(device).eval(),
        recognizer=recognizer,
        signer=signer,
        lexicon=lexicon or load_lexicon(signer, lang),
        fingerprint={
            role: {"path": str(path), "digest": folder_digest(path)}
            for role, path in folders.items()
        },
    )


# --------------------------------------------------------------------------- poses
@dataclass
class DrivingPoses:
    """One sentence's poses from one source, on the signer's body (what every renderer of the
    row draws), or the reason there are none."""

    canonical: PoseSequence | None
    pose: PoseSequence | None  # retargeted onto the signer
    depth: np.ndarray | None  # (T, 133) for SynthSigner's drawing order
    seconds: float
    error: str | None = None


def _glosses(model: Any, text: str) -> list[str]:
    """The product's T2G glosses of a text (every sentence of it, in order)."""
    return [g for sentence in model.glosses(text) for g in sentence]


class PoseSources:
    """Makes the driving poses of a sentence for each source; everything goes through the
    signer's retargeting, so rows differ only in where the poses come from."""

    def __init__(self, chain: Chain, language: str, signer_name: str, identity: int) -> None:
        self.chain, self.language, self.identity = chain, language, identity
        self.person: Signer = chain.synthesizer.registry.get(signer_name)
        self.text2pose = chain.synthesizer.text2pose(language)
        rest = sentence_pose([], 1, make_identity(identity), keyed_rng(0, f"signer/{identity}"))
        self.rest_depth = rest.depth[0]

    def make(self, source: str, sentence: CorpusSentence) -> DrivingPoses:
        tic = time.perf_counter()
        depth = None
        try:
            if source == GROUND_TRUTH:
                truth = self.chain.signer.pose(sentence, self.identity)
                canonical, depth = to_canonical(to_pose_sequence(truth)), truth.depth
            elif source == TEXT2POSE:
                config = self.chain.synthesizer.config  # refused as the service would refuse it
                job = check_request(config, sentence.text, self.language, None, None)
                canonical = concat_poses(self.text2pose.stream(job.text, job.language))
            else:
                model = self.text2pose.models[self.language]
                glosses = _glosses(model, sentence.text)
                canonical = self.chain.lexicon.generate([glosses])[0]
        except (InputError, TextInputError) as e:  # the product would refuse this text too
            return DrivingPoses(None, None, None, time.perf_counter() - tic, str(e))
        pose = retarget_to(canonical, self.person)
        if depth is None:
            depth = np.broadcast_to(self.rest_depth, (len(pose), len(self.rest_depth)))
        return DrivingPoses(canonical, pose, depth, time.perf_counter() - tic)


def pose_keypoints(pose: PoseSequence) -> torch.Tensor:
    """``(T, 36, 3)`` of a pose on the signer's body as the recogniser reads it. A point outside
    the frame gets confidence 0 (:func:`text2pose.metrics.camera_view`) -- SynthSigner's own
    labelling rule, which the recogniser was trained on and which no frame-reading evaluator
    could do otherwise."""
    return torch.from_numpy(camera_view(pose).to_layout("pgmm36").data)


# --------------------------------------------------------------------------- renderers
class Renderers:
    """Frames of a pose for each renderer label; PGMM states are encoded once per run."""

    def __init__(self, chain: Chain, person: Signer, identity: int) -> None:
        self.chain, self.person = chain, person
        self.look = make_identity(identity)
        self._stages: dict[str, tuple[Renderer[Any], Any]] = {}

    def _stage(self, label: str) -> tuple[Renderer[Any], Any]:
        if label not in self._stages:
            stage = self.chain.synthesizer.renderer(label)
            self._stages[label] = (stage, stage.prepare(self.person))
        return self._stages[label]

    def frames(self, label: str, poses: DrivingPoses) -> np.ndarray:
        """``(T, S, S, 3)`` uint8: the serving stages chunk by chunk, or SynthSigner's render."""
        assert poses.pose is not None and poses.canonical is not None and poses.depth is not None
        if self.chain.renderers[label] == SYNTH:
            pairs = zip(poses.pose.xy, poses.depth, strict=True)
            return np.stack([render_frame(xy, z, self.look, EVALUATOR_SIZE) for xy, z in pairs])
        stage, state = self._stage(label)
        chunks = in_chunks(poses.canonical, self.chain.synthesizer.config.chunk_frames)
        return np.concatenate(
            [stage.render([state], [retarget_to(c, self.person)])[0] for c in chunks]
        )


# --------------------------------------------------------------------------- scoring
def bleu4(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 on gloss strings (sacrebleu, ``tokenize='none'``: a gloss is a word)."""
    import sacrebleu

    metric = sacrebleu.metrics.BLEU(tokenize="none", effective_order=False)
    refs = [[" ".join(r) for r in references]]
    return float(metric.corpus_score([" ".join(h) for h in hypotheses], refs).score)


def summarize(row: RowSpec, scores: Sequence[SentenceScore]) -> RowResult:
    """Corpus WER / BLEU-4 of a row, a bootstrap 95 % interval of the WER over sentences
    (fixed seed) and the WER of each half of the sentences: how much N sentences can say."""
    refs = [s.reference for s in scores]
    hyps = [s.hypothesis for s in scores]
    counts = [edit_counts(r, h) for r, h in zip(refs, hyps, strict=True)]
    errors = np.array([c.errors for c in counts], np.float64)
    lengths = np.array([c.reference_length for c in counts], np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(len(scores), size=(BOOTSTRAP_SAMPLES, len(scores)))
    sampled = errors[picks].sum(1) / np.maximum(lengths[picks].sum(1), 1.0)
    half = (len(scores) + 1) // 2
    halves = None
    if len(scores) >= 2:
        halves = (
            word_error_rate(refs[:half], hyps[:half]),
            word_error_rate(refs[half:], hyps[half:]),
        )
    seconds = sum(s.seconds + s.pose_seconds for s in scores)
    return RowResult(
        key=row.key,
        chain=row.chain,
        poses=row.poses,
        renderer=row.renderer,
        product=row.product,
        sentences=len(scores),
        wer=word_error_rate(refs, hyps),
        wer_interval=(float(np.percentile(sampled, 2.5)), float(np.percentile(sampled, 97.5))),
        wer_halves=halves,
        bleu4=bleu4(refs, hyps),
        frames=sum(s.frames for s in scores),
        seconds_per_sentence=seconds / len(scores),
        failed=sum(s.error is not None for s in scores),
    )


def _read_cache(path: Path) -> dict[str, SentenceScore]:
    """Finished sentences of a row; a last line cut off by a kill is ignored (redone)."""
    if not path.is_file():
        return {}
    done = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            score = SentenceScore(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        done[score.sentence] = score
    return done


def _check_run(out: Path, settings: TextEvalSettings, chain: Chain) -> None:
    """Pin the run folder to its models and settings: cached rows of other models must never
    be mixed into a table."""
    pinned: dict[str, Any] = {  # compared with run.json's JSON values
        "language": settings.language,
        "split": settings.split,
        "signer": settings.signer,
        "identity": settings.identity,
        "evaluator_size": EVALUATOR_SIZE,
        "chunk_frames": chain.synthesizer.config.chunk_frames,
        "models": {role: m["digest"] for role, m in chain.fingerprint.items()},
    }
    path = out / "run.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        for key, value in pinned.items():
            if key == "models":  # models may be added (another renderer), never changed
                changed = [r for r, d in value.items() if before[key].get(r, d) != d]
                if changed:
                    raise ValueError(f"{out} holds results of other models ({', '.join(changed)}): "
                                     "use another --out or delete it")  # fmt: skip
                pinned[key] = {**before[key], **value}
            elif before.get(key) != value:
                raise ValueError(f"{out} holds a run with {key}={before.get(key)!r}, not {value!r}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(pinned, indent=2))


def run_text_eval(
    settings: TextEvalSettings,
    chain: Chain,
    sentences: Sequence[CorpusSentence] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TextEvalResult:
    """Score every row on the first ``max_sentences`` sentences of the split (or on
    ``sentences``), resuming from ``settings.out/rows``; writes media of the product's poses."""
    start = time.perf_counter()
    out = settings.out
    if sentences is None:
        sentences = chain.signer.sentences(settings.split, settings.language)
        sentences = sentences[: settings.max_sentences]
    if not sentences:
        raise ValueError(f"no {settings.language}/{settings.split} sentences")
    _check_run(out, settings, chain)
    rows = plan_rows(list(chain.renderers))
    (out / "rows").mkdir(exist_ok=True)
    done = {row.key: _read_cache(out / "rows" / f"{row.key}.jsonl") for row in rows}
    sources = PoseSources(chain, settings.language, settings.signer, settings.identity)
    renderers = Renderers(chain, sources.person, settings.identity)
    media = MediaStrips(out, sentences[:MEDIA_SENTENCES], list(chain.renderers))
    todo = sum(s.id not in done[r.key] for s in sentences for r in rows)
    bar = progress_bar(
        total=todo, desc=f"e2e {settings.language}", unit="row", disable=not progress
    )
    with bar:
        for sentence in sentences:
            missing = [r for r in rows if sentence.id not in done[r.key]]
            poses = {
                src: sources.make(src, sentence) for src in dict.fromkeys(r.poses for r in missing)
            }
            for row in missing:
                bar.set_postfix_str(f"{sentence.id[:24]} {row.key}")
                frames, score = _score(row, poses[row.poses], sentence, chain, renderers)
                if row.poses == TEXT2POSE and row.renderer is not None and frames is not None:
                    media.offer(sentence.id, row.renderer, frames)
                with (out / "rows" / f"{row.key}.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(dataclasses.asdict(score), ensure_ascii=False) + "\n")
                done[row.key][sentence.id] = score
                bar.update()
    media.write(sources, renderers)
    results = [summarize(row, [done[row.key][s.id] for s in sentences]) for row in rows]
    return TextEvalResult(
        language=settings.language,
        split=settings.split,
        sentences=len(sentences),
        signer=settings.signer,
        identity=settings.identity,
        evaluator_size=EVALUATOR_SIZE,
        models=chain.fingerprint,
        rows=results,
        wall_seconds=time.perf_counter() - start,
        torch_threads=torch.get_num_threads(),
        command=command or settings.command(),
        notes=[
            f"signer '{settings.signer}' = SynthSigner identity {settings.identity} (held out of "
            "every training set): the ground-truth poses are the sentence signed by this "
            "identity, and the synth renderer draws this identity",
            "depth for the synth render: the ground truth's own; text2pose and lexicon poses "
            "have none and use the signer's rest-pose depth (drawing order of arms and fingers)",
            "pose-level rows: the recogniser reads the driving poses (points outside the frame "
            "marked missing, as in SynthSigner's labels); other rows: the evaluator reads "
            f"keypoints from the frames at {EVALUATOR_SIZE} px",
            f"interval: bootstrap 95 % of the corpus WER over sentences ({BOOTSTRAP_SAMPLES} "
            f"resamples, seed {BOOTSTRAP_SEED}); halves: WER of the first and second half",
            "time per sentence: making the poses + rendering + reading, on the machine the "
            "command ran on",
        ],
    )


def _score(
    row: RowSpec,
    poses: DrivingPoses,
    sentence: CorpusSentence,
    chain: Chain,
    renderers: Renderers,
) -> tuple[np.ndarray | None, SentenceScore]:
    """One sentence through one row: the frames (``None`` at pose level) and its score."""
    reference = list(sentence.glosses)
    if poses.pose is None:
        score = SentenceScore(sentence.id, reference, [], 0, 0.0, poses.seconds, poses.error)
        return None, score
    tic = time.perf_counter()
    frames = None
    if row.renderer is None:
        keypoints = pose_keypoints(poses.pose)
    else:
        frames = renderers.frames(row.renderer, poses)
        keypoints = video_keypoints(frames, chain.evaluator, size=EVALUATOR_SIZE)
    hypothesis = list(chain.recognizer.recognize(keypoints))
    seconds = time.perf_counter() - tic
    score = SentenceScore(
        sentence.id, reference, hypothesis, len(keypoints), seconds, poses.seconds
    )
    return frames, score


# --------------------------------------------------------------------------- media
def _labelled(strip: np.ndarray, labels: Sequence[str], title: str) -> np.ndarray:
    """A strip of tiles with a header naming each column (and the sentence)."""
    header = Image.new("RGB", (strip.shape[1], 28), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    draw.text((4, 1), title, fill=(0, 0, 0))
    for i, label in enumerate(labels):
        draw.text((4 + i * EVALUATOR_SIZE, 14), label, fill=(0, 0, 120))
    return np.concatenate([np.asarray(header), strip], axis=0)


class MediaStrips:
    """``side_by_side.mp4`` and ``contact_sheet.png``: the product's poses of the first
    sentences drawn by every renderer (SynthSigner render | skeleton | PGMM ...).

    A sentence's strip (its renderers' frames side by side) is saved as ``media/<id>.mp4`` as
    soon as the run has drawn it, so a resumed run reads it back instead of rendering again.
    """

    def __init__(self, out: Path, sentences: Sequence[CorpusSentence], labels: list[str]) -> None:
        self.folder, self.sentences, self.labels = out / "media", list(sentences), labels
        self.out = out
        self.pending: dict[str, dict[str, np.ndarray]] = {s.id: {} for s in self.sentences}

    def path(self, sentence_id: str) -> Path:
        columns = "+".join(self.labels)
        return self.folder / re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{sentence_id}.{columns}.mp4")

    def offer(self, sentence_id: str, label: str, frames: np.ndarray) -> None:
        """Keep a renderer's frames of a media sentence; save the strip once it is complete."""
        if sentence_id not in self.pending or self.path(sentence_id).is_file():
            return
        parts = self.pending[sentence_id]
        parts[label] = frames
        if len(parts) == len(self.labels):
            # One common size, so renderers of different resolutions sit side by side.
            tiles = [[square_resized(f, EVALUATOR_SIZE) for f in parts[k]] for k in self.labels]
            strip = np.concatenate([np.stack(t) for t in tiles], axis=2)
            self.folder.mkdir(parents=True, exist_ok=True)
            with VideoWriter(self.path(sentence_id), fps=FPS) as writer:
                writer.write(strip)
            self.pending[sentence_id] = {}

    def write(self, sources: PoseSources, renderers: Renderers) -> None:
        """Draw the strips no run has saved yet, then put the video and the sheet together."""
        strips: list[tuple[CorpusSentence, np.ndarray]] = []
        for sentence in self.sentences:
            if not self.path(sentence.id).is_file():
                poses = sources.make(TEXT2POSE, sentence)
                if poses.pose is None:  # text2pose refused it: nothing to show
                    continue
                for label in self.labels:
                    self.offer(sentence.id, label, renderers.frames(label, poses))
            strips.append((sentence, read_video(self.path(sentence.id))[0]))
        if not strips:
            return
        with VideoWriter(self.out / "side_by_side.mp4", fps=FPS) as writer:
            for sentence, strip in strips:
                title = f"text2pose: {sentence.id}"
                writer.write(np.stack([_labelled(f, self.labels, title) for f in strip]))
        blocks = []
        for sentence, strip in strips:
            picks = np.linspace(0, len(strip) - 1, SHEET_FRAMES).round().astype(int)
            title = f"{sentence.id} (frames {', '.join(str(i) for i in picks)} of {len(strip)})"
            blocks.append(_labelled(np.concatenate(list(strip[picks]), axis=0), self.labels, title))
        Image.fromarray(np.concatenate(blocks, axis=0)).save(self.out / "contact_sheet.png")


# --------------------------------------------------------------------------- reporting
def markdown_table(result: TextEvalResult) -> str:
    header = [
        "poses", "drawn by", "WER ↓", "95 % interval", "WER halves", "BLEU-4 ↑", "N",
        "frames", "s / sentence",
    ]  # fmt: skip
    table = []
    for row in result.rows:
        drawn = row.renderer or "— (recogniser reads the poses)"
        interval = "–".join(f"{w:.3f}" for w in row.wer_interval)
        halves = "–" if row.wer_halves is None else " / ".join(f"{w:.3f}" for w in row.wer_halves)
        wer = f"{row.wer:.3f}" + (f" ({row.failed} failed)" if row.failed else "")
        cells = [
            row.poses, drawn, wer, interval, halves, f"{row.bleu4:.2f}",
            str(row.sentences), str(row.frames), f"{row.seconds_per_sentence:.1f}",
        ]  # fmt: skip
        if row.product:
            cells[:3] = [f"**{c}**" for c in cells[:3]]
        table.append(cells)
    return md_table(header, table) + "\n"


def markdown(result: TextEvalResult) -> str:
    """``e2e.md``: the table with what produced it."""
    models = "\n".join(
        f"- {role}: `{m['path']}` (digest {m['digest']})" for role, m in result.models.items()
    )
    notes = "\n".join(f"- {n}" for n in result.notes)
    return (
        f"### {result.language}: text → sign video, read back ({result.split}, first "
        f"{result.sentences} sentences)\n\n"
        f"```bash\n{result.command}\n```\n\n"
        f"{markdown_table(result)}\n"
        f"Bold: the product (text2pose through a PGMM renderer). Models:\n\n{models}\n\n"
        f"{notes}\n- wall time of this invocation: {result.wall_seconds / 60:.1f} min "
        f"({result.torch_threads} torch thread(s))\n"
    )


def update_docs(path: str | Path, result: TextEvalResult) -> None:
    """(Re)write the ``<!-- e2e:{lang}:begin -->`` block of a document, nothing else."""
    lang = result.language
    write_doc_block(path, BEGIN.format(lang=lang), END.format(lang=lang), markdown(result))


def write_outputs(result: TextEvalResult, out: Path) -> None:
    """``e2e.json`` (strict JSON) and ``e2e.md`` next to the media and the row caches."""
    atomic_write_text(out / "e2e.json", result.to_json() + "\n")
    atomic_write_text(out / "e2e.md", markdown(result))
