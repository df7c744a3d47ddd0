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
