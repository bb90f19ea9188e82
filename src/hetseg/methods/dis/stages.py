"""DIS's three stages (docs/DIS.md §Training) on the generic :class:`Stage`.

Batches come from :class:`hetseg.data.mixed.MixedDataset`: a masked half and a tag-only half.
Losses: labelmap CE at the input resolution (u3 upsampled bilinearly, void 255 ignored), tag BCE
on every row, reconstruction L2 (``models.dis.reconstruction_loss``) where a stage uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetseg.config import StageConfig
from hetseg.engine.stage import Stage, masked_ce
from hetseg.models.dis import DIS, reconstruction_loss


def _cat_halves(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_s, m_s, t_s, h_s, x_w, m_w, t_w, h_w) -> (x, target, tags, has_mask) over 2B rows."""
    return tuple(torch.cat([a, b]) for a, b in zip(batch[:4], batch[4:]))  # type: ignore[return-value]


def labelmap_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """u3 (N, K+1, h, w) upsampled to the target's (N, H, W), CE with 255 ignored."""
    up = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return masked_ce(up, target)


class LabelmapStage(Stage):
    """Stage 1: encoder + subnet-1 + subnet-3 on labelmaps (masked rows) and tags (all rows)."""

    def __init__(self, net: DIS, sc: StageConfig) -> None:
        super().__init__(net, sc, [net.encoder, net.v1_reduce, net.v1_expand, net.labelmap, net.tags])

    def training_step(self, batch, batch_idx):
        x, target, tags, _ = _cat_halves(batch)
        u1, v1 = self.net.encode(x)
        ce = labelmap_ce(self.net.labelmap_logits(u1, v1), target)
        bce = F.binary_cross_entropy_with_logits(self.net.tag_logits(u1, v1).float(), tags)
        loss = ce + bce
        self.log_dict({"train/loss": loss, "train/labelmap_ce": ce, "train/tag_bce": bce}, prog_bar=True)
        return loss


class ReconStage(Stage):
    """Stage 2: subnet-2 reconstructs the image from softmax(u3) restricted to each row's tags (as the
    refinement objective feeds it, docs/DIS.md); everything else frozen."""

    def __init__(self, net: DIS, sc: StageConfig) -> None:
        super().__init__(net, sc, [net.recon])

    def training_step(self, batch, batch_idx):
        x, _, tags, _ = _cat_halves(batch)
        with torch.no_grad():
            u1, v1 = self.net.encode(x)
            logits = self.net.labelmap_logits(u1, v1)
        loss = reconstruction_loss(self.net.reconstruct(logits, tags.bool()), x).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss


class JointStage(Stage):
    """Stage 3: all parts; a tag-only row is supervised by its inferred labelmap: ``t_train`` steps
    of iterative inference with the weights fixed and its tags as the constraint, then the argmax
    (upsampled to the input) as its CE target. Loss = CE + tag BCE + recon_weight * recon, subnet-2
    reading each row's tag-restricted softmax(u3)."""

    def __init__(self, net: DIS, sc: StageConfig, t_train: int, recon_weight: float) -> None:
        super().__init__(net, sc, None)
        self.t_train, self.recon_weight = t_train, recon_weight

    @torch.no_grad()
    def inferred_targets(self, x: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S), tags (N, K) -> (N, S, S) int64 labelmaps restricted to tags + background."""
        was_training = self.net.training
        self.net.eval()  # inference with the weights fixed: BN running statistics, not the batch's
        try:
            logits, _ = self.net.refine(x, self.t_train, tags.bool())
        finally:
            self.net.train(was_training)
        probs = F.interpolate(logits.float().softmax(dim=1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return probs.argmax(dim=1)

    def training_step(self, batch, batch_idx):
        x, target, tags, has_mask = _cat_halves(batch)
        weak = ~has_mask
        if weak.any():
            target = target.clone()
            target[weak] = self.inferred_targets(x[weak], tags[weak])
        u1, v1 = self.net.encode(x)
        # CE and tags on the unconstrained heads (a labelmap must rank untagged classes low by itself);
        # subnet-2 reads the tag-restricted maps, as in the refinement objective.
        logits, tag_logits = self.net.labelmap_logits(u1, v1), self.net.tag_logits(u1, v1)
        recon = self.net.reconstruct(logits, tags.bool())
        ce = labelmap_ce(logits, target)
        bce = F.binary_cross_entropy_with_logits(tag_logits.float(), tags)
        rec = reconstruction_loss(recon, x).mean()
        loss = ce + bce + self.recon_weight * rec
        self.log_dict({"train/loss": loss, "train/labelmap_ce": ce, "train/tag_bce": bce, "train/recon": rec},
                      prog_bar=True)
        return loss
