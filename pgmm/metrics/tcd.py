"""Temporal Consistency Difference (TCD), the temporal metric proposed by PGMM (Eqs. 12-13).

For a target video ``I_0..I_{N-1}`` and a generated video ``Î_0..Î_{N-1}``, at every interior
frame ``t = 1..N-2`` (the first and last frames lack a neighbour) and pixel ``(h, w)``:

* Eq. 12 -- ``D_t(h, w) = |Î_t - ½ (I_{t-1} + I_{t+1})|``: how far the generated frame is from
  the mean of the real frames before and after it;
* Eq. 13 -- ``TCD = 1/(N-2) · Σ_t 1/(H·W) · Σ_{h,w} [D_t(h, w) > T]`` with ``T = 0.5``: the
  share of pixels over the threshold, averaged over the interior frames. Lower is better.

TCD is not 0 for a perfect reconstruction: ``Î_t = I_t`` still counts the pixels where the
real video itself departs from its neighbours' mean (a moving edge, a blink). It measures a
generated frame against the real video's local temporal average, so flicker (a frame that jumps
away from both neighbours) counts and a generator that is consistently slightly off does less.

Choices the paper leaves open, and why (measured by ``scripts/tcd_scale.py``):

* **Pixel scale: 0..255 (8-bit levels).** Inputs are still [0, 1] floats (like every metric
  here); ``D`` is multiplied by :data:`PIXEL_SCALE` before the comparison with ``T``, so
  ``T = 0.5`` means "more than half a grey level". On [0, 1] a pixel counts only when it is more
  than 0.5 -- half the whole range -- from its neighbours' mean, which even strong flicker of a
  blurry renderer almost never reaches: every row of the table below is ~0 there, so the metric
  cannot tell flicker from a smooth video. On 0..255 it separates them.
* **Colour: channel mean of D.** ``D`` is computed per RGB channel and averaged over the
  channels before thresholding, giving one value per pixel as Eq. 13's ``1/(H·W)`` implies
  (a fraction over ``C·H·W`` channel values would not be "of pixels"). It keeps colour changes
  that a luma conversion can cancel (equal-luma hue flicker has grey D = 0).

Measured on SynthSigner (German test sentence 0, 128², its first 40 frames; the shipped
``full-small`` renderer driven by that sentence's ground-truth poses), T = 0.5, by
``python scripts/tcd_scale.py`` (a selection of its rows; on [0, 1] the per-channel and grey
reductions give the channel mean's value within 0.001):

| "generated" video scored against the target | [0, 1] | 0..255 mean of D | per channel | grey  |
|---------------------------------------------|--------|------------------|-------------|-------|
| target itself (perfect reconstruction)      | 0.002  | 0.061            | 0.058       | 0.060 |
| smooth: target shifted 1 px + 3x3 blur      | 0.002  | 0.421            | 0.415       | 0.414 |
| smooth + per-frame noise σ = 2/255          | 0.002  | 0.974            | 0.833       | 0.959 |
| smooth + alternating brightness ±2/255      | 0.002  | 0.996            | 0.990       | 0.996 |
| smooth + alternating brightness ±0.3        | 0.008  | 1.000            | 0.996       | 1.000 |
| full-small, pose-driven                     | 0.001  | 0.987            | 0.912       | 0.981 |
| full-small + alternating brightness ±0.1    | 0.002  | 1.000            | 0.995       | 1.000 |

On [0, 1] nothing separates (a ±0.3 flash on every frame scores 0.008); on 0..255 a flicker
of two grey levels lifts the smooth copy from 0.42 to 0.97-1.00. The paper's own numbers also
rule out [0, 1]: there ``D > 0.5`` needs a reconstruction error above 0.25 at that pixel unless
the real video itself jumps by more than 0.25 there, so by Markov's inequality TCD is at most
``4 · L1`` plus that share of pixels (0.010 in the sentence above) -- DynaST's 0.436 at
L1 0.039 (Table 2) would be impossible. The limit of Eq. 12 itself shows in the renderer rows:
``D`` contains the frame's reconstruction error, so a renderer whose frames are off by more
than half a level almost everywhere (``full-small``: L1 9.6 levels, median D 4.6 levels, both
printed by the script) is near 1 whether it flickers or not. TCD ranks renderers that are
close to exact; for today's blurry CPU-trained renderers it is saturated, and the hand and WER
columns say more.

TCD values are comparable only at the same threshold and scale.
"""

from __future__ import annotations

import torch

from pgmm.metrics.image import check_pair, check_unit_range

TCD_THRESHOLD = 0.5
#: ``D`` is compared with the threshold in 8-bit grey levels (see the module docstring).
PIXEL_SCALE = 255.0


def neighbour_difference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 12 per channel, on the inputs' [0, 1] scale: ``(B, N-2, C, H, W)`` float64.

    ``pred``/``target`` are ``(T, C, H, W)`` or ``(B, T, C, H, W)`` in [0, 1] with ``T >= 3``.
    """
    check_pair(pred, target)
    check_unit_range(pred, "pred")
    check_unit_range(target, "target")
    if pred.dim() == 4:
        pred, target = pred[None], target[None]
    if pred.shape[1] < 3:
        raise ValueError(f"TCD needs at least 3 frames, got {pred.shape[1]}")
    neighbours = (target[:, :-2].double() + target[:, 2:].double()) / 2
    return (pred[:, 1:-1].double() - neighbours).abs()


def tcd(pred: torch.Tensor, target: torch.Tensor, threshold: float = TCD_THRESHOLD) -> float:
    """TCD (Eq. 13) of generated clips ``pred`` vs ``target``: ``(T,C,H,W)`` or ``(B,T,C,H,W)``.

    Values in [0, 1]; ``threshold`` is in 8-bit levels (:data:`PIXEL_SCALE`). Averaged over the
    interior frames of every clip (clips share T, so this is also the mean of per-clip TCDs).
    """
    d = neighbour_difference(pred, target).mean(dim=2) * PIXEL_SCALE  # (B, N-2, H, W)
    return float((d > threshold).double().mean())
