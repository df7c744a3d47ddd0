"""The tiny PGMM configuration shared by the model, loss, training and evaluation tests.

Every width is cut so a forward + backward pass at 128^2 takes well under a second on CPU,
while every module of the paper (and every variant switch) is still exercised.
"""

from standins import TINY_PGMM  # one definition, shared with the serving stand-ins

__all__ = ["TINY_PGMM", "TINY_TRAIN"]

#: Training settings of the tiny runs: 2 videos x 3 pairs = 3 batches of 2 per epoch.
TINY_TRAIN = dict(
    epochs=2,
    pairs_per_video=3,
    batch_size=2,
    log_every=1,
    sample_every=2,
    checkpoint_every=2,
)
