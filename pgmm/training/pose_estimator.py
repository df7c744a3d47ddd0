"""Train the pose estimator P_e on SynthSigner keypoint labels (then PGMM freezes it).

Frames come from the frame-pair sampler (both frames of a pair are training images), targets
are Gaussian heatmaps of the 36 PGMM keypoints, the loss is visibility-weighted MSE. The run
folder holds ``model/`` (HRNetLite.from_pretrained-able), ``checkpoints/last`` (model,
optimizer, step, augmentation RNG) so a stopped run resumes where it stopped, and ``log.csv``
(step, loss; no header). Evaluation reports
PCK@0.05 (of the frame size) on frames of the *held-out* identities, which the training
corpus never shows.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pgmm.data.loaders import SignVideoDataset
from pgmm.data.samplers import FramePairDataset, VideoWindowSampler
from pgmm.metrics.keypoints import PGMM36_GROUPS, pck
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig, heatmap_loss, target_heatmaps
from pgmm.pose.heatmaps import to_pgmm36
from pgmm.training.common import (
    CHECKPOINT_MINUTES,
    ResumableLoop,
    cosine_schedule,
    find_checkpoint,
    resume_step_state,
    save_step_checkpoint,
)


def augment(
    images: torch.Tensor, points: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random zoom (0.85-1.15), shift (+-8 %) and per-channel gain (0.8-1.2).

    SynthSigner's 10 training identities have 10 fixed camera placements and colour schemes;
    without this, P_e learns them and fails on a held-out identity's framing and colours.
    Keypoints move with the image; points pushed out of the frame become invisible.
    """
    b = images.shape[0]
    scale = torch.empty(b, 1).uniform_(0.85, 1.15, generator=generator)
    shift = torch.empty(b, 2).uniform_(-0.08, 0.08, generator=generator)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale[:, 0]
    theta[:, :, 2] = -shift / scale  # output p -> input (p - shift) / scale, in [-1, 1]
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    gain = torch.empty(b, 3, 1, 1).uniform_(0.8, 1.2, generator=generator).to(images)
    images = (images * gain).clamp(0, 1)
    xy = ((points[..., :2] * 2 - 1) * scale[:, None].to(points) + shift[:, None].to(points) + 1) / 2
    inside = ((xy >= 0) & (xy <= 1)).all(-1)
    conf = torch.where(inside, points[..., 2], torch.zeros_like(points[..., 2]))
    return images, torch.cat([xy, conf[..., None]], dim=-1)


@torch.no_grad()
def evaluate_pck(
    model: HRNetLite,
    dataset: SignVideoDataset,
    frames_per_video: int = 8,
    threshold: float = 0.05,
    device: str = "cpu",
) -> dict[str, float]:
    """PCK over evenly spaced frames of every video: all 36 points and hands only."""
    model.eval()
    preds, targets = [], []
    for i in range(len(dataset)):
        frames = dataset.load_frames(i)
        poses = dataset.require_poses(i)
        idx = torch.linspace(0, len(frames) - 1, frames_per_video).round().long()
        images = torch.from_numpy(frames[idx.numpy()]).permute(0, 3, 1, 2).float() / 255
        preds.append(model.keypoints(images.to(device)).cpu())
        targets.append(to_pgmm36(torch.from_numpy(poses.data[idx.numpy()])))
    pred, target = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    groups = {"pck": PGMM36_GROUPS["whole_body"], "pck_hands": PGMM36_GROUPS["hands"]}
    scores = pck(pred, target, target[..., 2] > 0, threshold, groups)
    return {**scores, "frames": int(pred.shape[0])}


def train_pose_estimator(
    dataset: SignVideoDataset,
    run_dir: str | Path,
    config: HRNetLiteConfig | None = None,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 2e-3,
    sigma: float = 2.0,
    seed: int = 0,
    checkpoint_every: int = 200,
    device: str = "cpu",
    progress: bool = True,
    augmentation: bool = True,
    checkpoint_minutes: float = CHECKPOINT_MINUTES,
    log_every: int = 20,
) -> HRNetLite:
    """Train (or resume) HRNetLite for ``steps`` optimizer steps; returns the trained model.

    One pass over the pairs is a fixed order, repeated; a resumed run skips the batches of the
    pass it already trained and restores the augmentation generator, so it continues exactly
    as an uninterrupted run would. Ctrl-C / SIGTERM writes the checkpoint and raises
    :class:`~pgmm.training.common.TrainingStopped`.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / "last"
    torch.manual_seed(seed)
    found = find_checkpoint(ckpt)
    model = (HRNetLite(config) if found is None else HRNetLite.from_pretrained(found)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = resume_step_state(found, optimizer)

    # Cosine decay to 5 % of lr over the whole run: steadier keypoints at the end.
    schedule = cosine_schedule(optimizer, steps, state["step"])
    per_video = max(1, steps * batch_size // (2 * max(1, len(dataset))))
    pairs = FramePairDataset(dataset, pairs_per_video=per_video, seed=seed)
    size = dataset.size // model.heatmap_stride
    # Videos in small shuffled windows: each video is decoded (or rendered) once per pass.
    order = list(VideoWindowSampler(pairs, window=min(4, pairs.cache_videos), seed=seed))
    half = max(1, batch_size // 2)
    batches = [order[i : i + half] for i in range(0, len(order), half)]
    aug_generator = torch.Generator()
    if "augment_rng" in state:
        aug_generator.set_state(torch.tensor(state["augment_rng"], dtype=torch.uint8))
    else:  # a fresh run, or a checkpoint written before the generator was saved
        aug_generator.manual_seed(seed * 7919 + state["step"])

    def save() -> None:
        state["augment_rng"] = aug_generator.get_state().tolist()
        save_step_checkpoint(ckpt, model, optimizer, state)

    run_dir.mkdir(parents=True, exist_ok=True)
    model.train()
    loop = ResumableLoop(
        "P_e", run_dir, ckpt, save, start=state["step"], total=steps, every=checkpoint_every,
        minutes=checkpoint_minutes, resumed=found is not None, progress=progress,
        log=run_dir / "log.csv", log_header=False,
    )  # fmt: skip
    with loop:
        while state["step"] < steps:
            skip = state["step"] % len(batches)
            loader = DataLoader(pairs, batch_sampler=batches[skip:])
            for batch in loader:
                images = torch.cat([batch["source"], batch["driving"]]).to(device)
                points = to_pgmm36(torch.cat([batch["source_pose"], batch["driving_pose"]]))
                if augmentation:
                    images, points = augment(images.cpu(), points, aug_generator)
                    images = images.to(device)
                points = points.to(device)
                target = target_heatmaps(points, size, sigma)
                loss = heatmap_loss(model(images), target, weight=points[..., 2])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                state["step"] += 1
                if state["step"] % log_every == 0:
                    loop.log({"step": state["step"], "loss": f"{loss.item():.6f}"})
                loop.end_step(state["step"], loss=f"{loss.item():.5f}")
                if state["step"] >= steps:
                    break
    model.save_pretrained(run_dir / "model")
    return model.eval()
