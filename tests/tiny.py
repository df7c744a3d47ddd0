"""The tiny PGMM configuration shared by the model, loss, training and evaluation tests.

Every width is cut so a forward + backward pass at 128^2 takes well under a second on CPU,
while every module of the paper (and every variant switch) is still exercised.
"""

TINY_PGMM = dict(
    num_tps=4,
    backbone_width=0.125,
    dense_block_expansion=8,
    dense_num_blocks=3,
    dense_max_features=32,
    block_expansion=8,
    max_features=32,
    pose_block_expansion=4,
    driving_head_channels=32,
)

#: Training settings of the tiny runs: 2 videos x 3 pairs = 3 batches of 2 per epoch.
TINY_TRAIN = dict(
    epochs=2,
    pairs_per_video=3,
    batch_size=2,
    log_every=1,
    sample_every=2,
    checkpoint_every=2,
)
