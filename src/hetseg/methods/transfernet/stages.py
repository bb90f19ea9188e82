"""TransferNet's stages (docs/REFERENCE.md §3.1-§3.7) and BaselineNet's, on the generic :class:`Stage`.

Batches (§3.8, §7.12): the original's data layer alternates whole batches between the domains and
accumulates an even number of them per update, each batch's losses normalised within itself. Here
one step draws a whole target sub-batch and a whole source sub-batch of ``batch_size`` rows each and
minimises the mean of the two sub-batch losses, 0.5 * cls_t + 0.5 * (cls_s + lambda * seg_s): the
same update. Target rows never reach the decoder (their masks are all void; the patched Caffe loss
gives them 0 loss and 0 gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetseg.config import StageConfig
from hetseg.engine.optim import ParamGroup
from hetseg.engine.stage import Stage, masked_ce
from hetseg.models.baselinenet import BaselineNet
from hetseg.models.transfernet import TransferNet


class TransferStage(Stage):
    """Stage ``att`` (cls loss) or ``joint`` (cls + seg_weight * seg); encoder and classifier frozen."""

    def __init__(self, net: TransferNet, sc: StageConfig, phase: str, seg_weight: float = 2.0) -> None:
        if phase not in ("att", "joint"):
            raise ValueError(f"phase must be 'att' or 'joint', got {phase!r}")
        parts = [net.attention, net.cls_head] + ([net.decoder] if phase == "joint" else [])
        super().__init__(net, sc, parts)
        self.phase, self.seg_weight = phase, seg_weight

    def param_groups(self) -> list[ParamGroup]:
        # Caffe lr multipliers of the score layer: weights x10, biases x20 (§3.3).
        fast = {id(p) for p in self.net.cls_score.parameters()}
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        return [ParamGroup([p for p in trainable if id(p) not in fast]),
                ParamGroup([p for p in trainable if id(p) in fast], 10.0, 20.0)]

    def training_step(self, batch, batch_idx):
        xt, yt, xs, ys, ms = batch
        b = xt.shape[0]
        enc = self.net.encode(torch.cat([xt, xs]))  # one frozen encoder pass for both sub-batches
        out = self.net.rows(enc, torch.cat([yt, ys]), decode=False)
        logits = out.cls_logits.float()
        cls_t, cls_s = F.cross_entropy(logits[:b], yt), F.cross_entropy(logits[b:], ys)
        loss_s = cls_s
        if self.phase == "joint":
            seg = self.net.decoder(out.dense[b:], [s[b:] for s in enc.switches], enc.sizes)
            seg_s = masked_ce(seg, ms)
            loss_s = loss_s + self.seg_weight * seg_s
            self.log("train/seg_loss", seg_s, prog_bar=True)
        loss = 0.5 * cls_t + 0.5 * loss_s
        self.log_dict({"train/loss": loss, "train/cls_loss": 0.5 * (cls_t + cls_s),
                       "train/cls_acc": (logits.argmax(1) == torch.cat([yt, ys])).float().mean()}, prog_bar=True)
        return loss


class BaselineStage(Stage):
    """BaselineNet: FC + decoder on source rows (seg loss); classifier frozen, eval mode."""

    def __init__(self, net: BaselineNet, sc: StageConfig) -> None:
        super().__init__(net, sc, [net.fc, net.decoder])

    def training_step(self, batch, batch_idx):
        x, y, m = batch
        loss = masked_ce(self.net(x, y), m)
        self.log("train/loss", loss, prog_bar=True)
        return loss
