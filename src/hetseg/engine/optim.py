"""``configure_optimizers`` written once (nanoGPT style) for every stage of every method.

A stage hands over parameter groups, each with Caffe-style lr multipliers for its weights and its
biases (TransferNet's score layer: x10 / x20, docs/REFERENCE.md §3.3). Weight decay applies to
weights only: biases and BN affine parameters get none (Caffe's bias decay 0, docs/REFERENCE.md §1.8).
The schedule is Caffe's "step" policy: lr x0.1 after ``lr_step`` of the budget (1.0 = fixed lr).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from hetseg.config import StageConfig


@dataclass
class ParamGroup:
    """Parameters that share lr multipliers (``weight_mult`` for ndim > 1, ``bias_mult`` for the rest)."""

    params: Sequence[nn.Parameter] = field(default_factory=list)
    weight_mult: float = 1.0
    bias_mult: float = 1.0


def configure_optimizer(groups: Sequence[ParamGroup], sc: StageConfig) -> dict:
    """Adam or SGD over ``groups`` plus the step schedule, in Lightning's return format."""
    torch_groups = []
    for g in groups:
        trainable = [p for p in g.params if p.requires_grad]
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        if decay:
            torch_groups.append({"params": decay, "weight_decay": sc.weight_decay, "lr": sc.lr * g.weight_mult})
        if no_decay:
            torch_groups.append({"params": no_decay, "weight_decay": 0.0, "lr": sc.lr * g.bias_mult})
    if not torch_groups:
        raise ValueError("this stage has no trainable parameter")
    if sc.optimizer == "adam":
        opt = torch.optim.Adam(torch_groups, lr=sc.lr, betas=(0.9, 0.999), eps=1e-8)
    else:  # Config validation admits sgd | adam only
        opt = torch.optim.SGD(torch_groups, lr=sc.lr, momentum=sc.momentum)
    milestone = max(1, int(sc.lr_step * sc.steps))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
