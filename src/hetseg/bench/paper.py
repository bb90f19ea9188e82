"""The benches' paper-scale recipes: what ``hetseg bench table1 | transfer | dis --scale paper`` train.

Each is the training part of one ``configs/*_paper.yaml`` (budgets, batches, solvers, schedules,
precision, crops), written as Config overrides so that the installed package carries it; the data
part (root, splits, classes) and the ImageNet file stay on the command line, as the README's VOC and
COCO commands give them. tests/test_bench_paper.py keeps each recipe equal to its config file, so a
paper budget changes in one of the two only together with the other. Where the numbers come from:
docs/REFERENCE.md (what the papers and original solvers state) and docs/DECISIONS.md ("Paper scale, as
a GPU user meets it": the budgets the sources leave open, chosen by this project).
"""

from __future__ import annotations

from typing import Any


def stage(section: str, **fields: Any) -> list[str]:
    """``section.key=value`` overrides of one training stage, e.g. ``stage("cls", steps=5500)``."""
    return [f"{section}.{key}={value}" for key, value in fields.items()]


# One update sees 64 crops (16 x 4 on one GPU), SGD, weight decay 5e-4, bf16 autocast, a checkpoint
# every 1,000 steps (docs/REFERENCE.md §1.8; the classifier's lr is this project's choice).
_VGG_SGD = dict(batch_size=16, accumulate=4, optimizer="sgd", weight_decay=0.0005, precision="bf16-mixed",
                checkpoint_every=1000)

# configs/decouplednet_voc_paper.yaml. DeconvNet's budget follows from it by the equal-effort rule
# (cls + seg steps, seg's solver: configs/deconvnet_voc_paper.yaml), in table1_recipe.base_config.
# Proposals stay off in the bench (crops.proposals=none for every method, table1_recipe.EQUAL_EFFORT).
TABLE1: list[str] = [
    *stage("cls", steps=5500, lr=0.001, lr_step=0.7, label_loss="caffe", **_VGG_SGD),
    *stage("seg", steps=5500, lr=0.01, lr_step=0.7273, **_VGG_SGD),  # lr x0.1 on step 4,000
    "crops.crops_per_subset=200", "crops.max_scale=1.6", "model.weight_pool=avg", "data.workers=8",
]

# configs/transfernet_coco_paper.yaml: the shared classifier (15,000 x 16, SGD), stage 1 (att: 4 x 8
# pairs of rows = 64 rows per update) and stage 2 (joint: 2 x 16 source-mask rows), Adam at a fixed lr
# as the released solvers (docs/REFERENCE.md §3.7). The feature scale is calibrated (0): 0.004 belongs to
# Caffe's 0-255 input. BaselineNet and DecoupledNet-transfer take stage 2's budget (transfer.equal_effort).
TRANSFER: list[str] = [
    *stage("cls", steps=15000, batch_size=16, optimizer="sgd", lr=0.001, weight_decay=0.0005, lr_step=0.7,
           precision="bf16-mixed", checkpoint_every=1000, label_loss="caffe"),
    *stage("transfer.att", steps=15000, batch_size=4, accumulate=8, optimizer="adam", lr=0.001, weight_decay=0.0,
           lr_step=1.0, checkpoint_every=1000),
    *stage("transfer.joint", steps=15000, batch_size=2, accumulate=16, optimizer="adam", lr=0.0005,
           weight_decay=0.0, lr_step=1.0, checkpoint_every=1000),
    *stage("seg", precision="bf16-mixed", checkpoint_every=1000),  # DecoupledNet-transfer's own solver
    "transfer.feature_scale=0", "crops.crops_per_subset=200", "data.workers=8",
]

# configs/dis_voc_paper.yaml: 30,000 / 10,000 / 30,000 steps of 8 (masked, tag-only) pairs, SGD,
# t_tr = t_ts = 30 (the paper's best t; docs/DIS.md). The bench still evaluates its whole t_ts grid
# and trains t_tr in {0, 30}.
DIS: list[str] = [
    *stage("dis.labelmap", steps=30000, batch_size=8, optimizer="sgd", lr=0.001, weight_decay=0.0005, lr_step=0.7,
           precision="bf16-mixed", checkpoint_every=1000),
    *stage("dis.recon", steps=10000, batch_size=8, optimizer="sgd", lr=0.001, weight_decay=0.0005, lr_step=0.7,
           precision="bf16-mixed", checkpoint_every=1000),
    *stage("dis.joint", steps=30000, batch_size=8, optimizer="sgd", lr=0.0005, weight_decay=0.0005, lr_step=0.7,
           precision="bf16-mixed", checkpoint_every=1000),
    "dis.t_train=30", "dis.t_test=30", "data.workers=8",
]
