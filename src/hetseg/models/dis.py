"""DIS (Luo, Wang, Lin, Wang, ICCV 2017): labelmap, image reconstruction and tags from one ResNet.

Every choice the sources leave open is "DIS as specified here" in docs/DIS.md; in short:

* u1 (N, D, h, w) = res5 of a ResNet at output stride 8 (``resnet.py``); v1 (N, D) =
  ReLU(W2 ReLU(W1 avgpool(u1))), a D -> D/4 -> D bottleneck (a full D x D layer would put the
  paper-scale model 4 % over the reported 45.5 M parameters).
* subnet-1: u2 = u1 ‖ v1 tiled (2D channels) -> 3x3 conv -> u3 (N, K+1, h, w), channel 0 background.
* subnet-2: softmax(u3) -> 3x3 conv (W) -> ReLU -> 3x3 conv (W) -> ReLU -> 3x3 conv (in_channels)
  = z3 at feature resolution; the loss is the per-image mean squared error to the (normalised)
  input image average-pooled to h x w (:func:`reconstruction_loss`).
* subnet-3: v2 = avgpool(u1) + v1 (fusion by sum keeps v2 D-d without parameters) -> linear -> v3
  (N, K) tag logits, trained with sigmoid BCE.
* iterative inference (:meth:`DIS.refine`): projected gradient descent on (u1, v1) >= 0 with a
  per-image step normalised to the feature norm and a per-image accept/backtrack rule, so the
  reconstruction loss never goes up; tags constrain the labelmap in the objective too.

The heads hold no BN or dropout, so refinement does not depend on train/eval mode; the encoder's
BN does (the caller picks the mode, as for any forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SegOutput, Segmenter, full_precision, index_lists, register
from .resnet import ResNetEncoder, ResNetScale, get_resnet_scale

# Backtracking of the per-image step (refine): a step that fails to lower the loss is undone and
# the step shrinks; an accepted one lets it grow back, so a lucky-small step size recovers.
_SHRINK = 0.5
_GROW = 1.25


@dataclass(frozen=True)
class DISScale:
    """Sizes of one DIS preset: the encoder plus the two head widths the sources do not give.

    v1_hidden: bottleneck width of the v1 branch (D / 4). recon_width: width of subnet-2's two
    hidden convs. Paper scale lands at 45.59 M parameters for K = 20 (paper: 45.5 M).
    """

    encoder: ResNetScale
    v1_hidden: int
    recon_width: int


DIS_SCALES: dict[str, DISScale] = {
    "paper": DISScale(get_resnet_scale("paper"), 512, 128),
    "cpu": DISScale(get_resnet_scale("cpu"), 64, 16),
}


@dataclass
class DISOutput:
    """One DIS forward at feature resolution h x w (input / 8).

    u1 (N, D, h, w) pixel features; v1 (N, D) image features; logits (N, K+1, h, w) u3, channel 0
    background (-inf where a tag constraint excludes a class); recon (N, in_channels, h, w) z3;
    tag_logits (N, K) v3, pre-sigmoid.
    """

    u1: Tensor
    v1: Tensor
    logits: Tensor
    recon: Tensor
    tag_logits: Tensor


def reconstruction_loss(recon: Tensor, images: Tensor) -> Tensor:
    """Per-image L2 loss of subnet-2: recon (N, C, h, w), images (N, C, H, W) normalised -> (N,).

    The target is the image average-pooled to the reconstruction's size (an 8 x 8 box per cell
    at H = 8h): subnet-2 works at feature resolution, and matching the low-pass image asks it to
    explain region colours and coarse shapes, which is what a labelmap can explain.
    """
    target = F.adaptive_avg_pool2d(images, recon.shape[-2:])
    return (recon - target).pow(2).mean(dim=(1, 2, 3))


def _mask_logits(logits: Tensor, allowed: Tensor | None) -> Tensor:
    """logits (N, K+1, h, w), allowed (N, K) bool or None -> logits with excluded objects at -inf."""
    if allowed is None:
        return logits
    keep = torch.cat([allowed.new_ones(allowed.shape[0], 1), allowed], dim=1)  # background always
    return logits.masked_fill(~keep[:, :, None, None], float("-inf"))


def _label_probs(logits: Tensor, size) -> Tensor:
    """u3 logits (N, K+1, h, w), -inf on excluded classes -> probs (N, K+1, H, W). The softmax first:
    -inf logits == zeroing those probabilities and renormalising; probabilities (not logits, which
    hold -inf) are what gets interpolated, bilinearly."""
    return F.interpolate(full_precision(logits).softmax(dim=1), size=size, mode="bilinear", align_corners=False)


def _rms(x: Tensor) -> Tensor:
    """x (N, ...) -> (N, 1, ..., 1) root-mean-square per image, broadcastable against x."""
    return x.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (x.dim() - 1)))


@register("dis")
class DIS(Segmenter):
    """DIS: ResNet encoder + labelmap (subnet-1), reconstruction (subnet-2) and tag (subnet-3) heads.

    Args:
        num_classes: K object classes (no background); u3 has K+1 channels.
        scale: "paper" (ResNet-101, 360 px) or "cpu" (see ``resnet.RESNET_SCALES``).
        in_channels: image channels (also the channels subnet-2 reconstructs).
        infer_lr: initial step of iterative inference, relative to the features' RMS per image.
        infer_steps: default t of :meth:`refine` / :meth:`predict` when they get ``steps=None``
            (the paper's best t_ts is 30).
    """

    def __init__(self, num_classes: int, scale: str = "cpu", in_channels: int = 3,
                 infer_lr: float = 0.05, infer_steps: int = 0) -> None:
        super().__init__()
        try:
            self.scale = s = DIS_SCALES[str(scale).lower()]
        except KeyError:
            raise ValueError(f"unknown DIS scale {scale!r}; choose one of {sorted(DIS_SCALES)}") from None
        self.input_size = s.encoder.input_size
        if infer_lr <= 0:
            raise ValueError(f"infer_lr must be > 0, got {infer_lr}")
        self.num_classes = k = int(num_classes)
        self.in_channels = in_channels
        self.infer_lr = float(infer_lr)
        self.infer_steps = int(infer_steps)
        d = s.encoder.out_channels
        self.encoder = ResNetEncoder(s.encoder, in_channels)
        self.v1_reduce = nn.Linear(d, s.v1_hidden)
        self.v1_expand = nn.Linear(s.v1_hidden, d)
        self.labelmap = nn.Conv2d(2 * d, k + 1, 3, padding=1)            # subnet-1
        w = s.recon_width
        self.recon = nn.Sequential(                                       # subnet-2
            nn.Conv2d(k + 1, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, in_channels, 3, padding=1),
        )
        self.tags = nn.Linear(d, k)                                       # subnet-3
        for m in [self.v1_reduce, self.v1_expand, *self.recon]:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # No ReLU after the logit layers: small weights start softmax/sigmoid near uniform.
        for m in (self.labelmap, self.tags):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    # The shipped CPU-scale backbone for DIS is its ResNet encoder pretrained on single items
    # (hetseg.models.backbone; docs/DIS.md "Starting weights"), as the paper's starts from ImageNet.
    backbone_family = "resnet"

    def backbone_modules(self) -> dict[str, nn.Module]:
        """The parts a backbone file holds: the encoder only (the heads are always new)."""
        return {"encoder": self.encoder}

    # ---- the three subnets on given features ------------------------------------------------

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (N, C, H, W) -> u1 (N, D, h, w), v1 (N, D); h = ceil(H / 8)."""
        u1 = self.encoder(images)
        v1 = torch.relu(self.v1_expand(torch.relu(self.v1_reduce(u1.mean(dim=(2, 3))))))
        return u1, v1

    def labelmap_logits(self, u1: Tensor, v1: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Subnet-1: u1 (N, D, h, w), v1 (N, D), allowed (N, K) bool | None -> u3 (N, K+1, h, w)."""
        u2 = torch.cat([u1, v1[:, :, None, None].expand(-1, -1, *u1.shape[-2:])], dim=1)
        return _mask_logits(self.labelmap(u2), allowed)

    def reconstruct(self, logits: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Subnet-2: u3 logits (N, K+1, h, w), allowed (N, K) bool | None -> z3 (N, in_channels, h, w),
        from softmax(u3) restricted to the allowed classes + background: the input the refinement
        objective gives it, so training passes the tags too (docs/DIS.md, "Training")."""
        return self.recon(_mask_logits(logits, allowed).softmax(dim=1))

    def tag_logits(self, u1: Tensor, v1: Tensor) -> Tensor:
        """Subnet-3: u1 (N, D, h, w), v1 (N, D) -> v3 (N, K) pre-sigmoid, v2 = avgpool(u1) + v1."""
        return self.tags(u1.mean(dim=(2, 3)) + v1)

    def heads(self, u1: Tensor, v1: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All three subnets: (u1, v1[, allowed]) -> (u3 logits, z3 recon, v3 tag logits)."""
        logits = self.labelmap_logits(u1, v1, allowed)
        return logits, self.reconstruct(logits), self.tag_logits(u1, v1)

    def forward(self, images: Tensor) -> DISOutput:
        """images (N, C, H, W) normalised -> :class:`DISOutput` (no refinement, no tag constraint)."""
        u1, v1 = self.encode(images)
        logits, recon, tags = self.heads(u1, v1)
        return DISOutput(u1, v1, logits, recon, tags)

    # ---- iterative inference ---------------------------------------------------------------

    def _objective(self, u1: Tensor, v1: Tensor, images: Tensor, allowed: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-image reconstruction loss at (u1, v1) and its gradients: -> loss (N,), g_u1, g_v1.

        The losses are summed before differentiating, so image i's gradient is that of its own loss
        (images do not interact: the heads have no BN). Only u1 and v1 are differentiated, so no
        parameter's ``.grad`` is touched.
        """
        u1 = u1.detach().requires_grad_(True)
        v1 = v1.detach().requires_grad_(True)
        loss = reconstruction_loss(self.reconstruct(self.labelmap_logits(u1, v1, allowed)), images)
        g_u, g_v = torch.autograd.grad(loss.sum(), [u1, v1])
        return loss.detach(), g_u, g_v

    def refine_features(self, u1: Tensor, v1: Tensor, images: Tensor, steps: int,
                        allowed: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """t steps that lower the reconstruction loss over (u1, v1), weights fixed, batched over images.

        Args:
            u1 (N, D, h, w), v1 (N, D): starting features (detached and cloned, never modified).
            images (N, C, H, W): the normalised images the loss reconstructs.
            steps: t >= 0.
            allowed (N, K) bool | None: tag constraint, applied inside the objective as well.

        Returns: refined u1, v1 (detached) and the per-step losses (steps+1, N), row 0 before any
        step; each row is <= the previous one per image.

        Update per image i and variable x in {u1, v1}: x' = max(0, x - a_i rms(x_i) / rms(g_i) g),
        with a_i starting at ``infer_lr``. If image i's loss at x' is lower, x' is kept and
        a_i *= 1.25, else image i stays put and a_i *= 0.5 (one forward/backward per step
        either way). The max(0, .) keeps u1, v1 in the ReLU range the heads were trained on.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        images = images.detach()
        if steps == 0:  # plain prediction: the loss only, no backward pass
            with torch.no_grad():
                loss = reconstruction_loss(self.reconstruct(self.labelmap_logits(u1, v1, allowed)), images)
            return u1.detach(), v1.detach(), loss[None]
        # Gradients on the features even under torch.inference_mode (whose tensors autograd refuses): leave it
        # for the refinement and clone the inputs there, which makes them ordinary tensors.
        with torch.inference_mode(False), torch.enable_grad():
            u, v, images = u1.detach().clone(), v1.detach().clone(), images.clone()
            loss, g_u, g_v = self._objective(u, v, images, allowed)
            history = [loss]
            a = torch.full_like(loss, self.infer_lr)
            for _ in range(steps):
                au = (a[:, None, None, None] * _rms(u) / (_rms(g_u) + 1e-12))
                av = (a[:, None] * _rms(v) / (_rms(g_v) + 1e-12))
                u_try = (u - au * g_u).clamp_min(0)
                v_try = (v - av * g_v).clamp_min(0)
                loss_try, gu_try, gv_try = self._objective(u_try, v_try, images, allowed)
                ok = loss_try < loss  # NaN compares False: rejected
                ok4, ok2 = ok[:, None, None, None], ok[:, None]
                u, v = torch.where(ok4, u_try, u), torch.where(ok2, v_try, v)
                g_u, g_v = torch.where(ok4, gu_try, g_u), torch.where(ok2, gv_try, g_v)
                loss = torch.where(ok, loss_try, loss)
                a = torch.where(ok, a * _GROW, a * _SHRINK)
                history.append(loss)
        return u.detach(), v.detach(), torch.stack(history)

    def refine(self, images: Tensor, steps: int | None = None, tags: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """Iterative inference: images (N, C, H, W), tags (N, K) bool | None -> (u3, losses).

        u3 (N, K+1, h, w) are the labelmap logits at the refined features, -inf on object classes
        outside ``tags`` (background always allowed); losses (steps+1, N) the reconstruction loss
        before and after each step. ``steps=None`` uses ``infer_steps``.
        """
        steps = self.infer_steps if steps is None else int(steps)
        allowed = None if tags is None else tags.to(device=images.device, dtype=torch.bool)
        with torch.no_grad():
            u1, v1 = self.encode(images)
        u1, v1, losses = self.refine_features(u1, v1, images, steps, allowed)
        with torch.no_grad():
            logits = self.labelmap_logits(u1, v1, allowed)
        return logits, losses

    # ---- the Segmenter contract --------------------------------------------------------------

    def predict(self, images: Tensor, labels: list[list[int]] | None = None, threshold: float = 0.5,
                steps: int | None = None) -> SegOutput:
        """images (N, C, H, W) normalised -> :class:`SegOutput` at H x W.

        1. class_scores = sigmoid(v3) (N, K) from the *unrefined* features; identified = classes
           scoring > ``threshold``, or ``labels`` when given (they replace the scores' choice).
        2. ``steps`` of iterative inference with identified as the tag constraint (the role real
           tags play for a tag-only training image).
        3. probs (N, K+1, H, W) = softmax(u3) with non-identified object classes excluded, i.e.
           their probabilities zeroed and the rest renormalised (background always kept),
           upsampled bilinearly. extras: "recon" (N, C, h, w), "recon_loss" (steps+1, N).
        """
        steps = self.infer_steps if steps is None else int(steps)
        with torch.no_grad():
            u1, v1 = self.encode(images)
            class_scores = torch.sigmoid(full_precision(self.tag_logits(u1, v1)))
        active = self.active_labels(class_scores, labels, threshold)
        u1, v1, losses = self.refine_features(u1, v1, images, steps, active)
        with torch.no_grad():
            logits, recon, _ = self.heads(u1, v1, active)
            probs = _label_probs(logits, images.shape[-2:])
        identified = index_lists(active)
        return SegOutput(probs=probs, class_scores=class_scores, identified=identified,
                         extras={"recon": recon, "recon_loss": losses})

    @property
    def export_outputs(self) -> tuple[str, ...]:
        """Exportable only without iterative inference (``infer_steps`` = t_ts = 0): t_ts > 0 takes
        gradient steps on the features, which no static graph holds (docs/ARCHITECTURE.md, "Export")."""
        return ("probs", "class_scores") if self.infer_steps == 0 else ()

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.5) -> tuple[Tensor, Tensor]:
        """:meth:`predict` at t_ts = 0 as one static graph: images (N, C, S, S) -> (probs (N, K+1, S, S),
        class_scores (N, K)); the unidentified classes are masked (-inf logits), as in predict."""
        if self.infer_steps:
            raise NotImplementedError(f"DIS at t_ts = {self.infer_steps} has no static graph; set infer_steps = 0")
        u1, v1 = self.encode(images)
        class_scores = torch.sigmoid(full_precision(self.tag_logits(u1, v1)))
        logits = self.labelmap_logits(u1, v1, self.active_labels(class_scores, None, threshold))
        return _label_probs(logits, images.shape[-2:]), class_scores


__all__ = ["DIS", "DISOutput", "DISScale", "DIS_SCALES", "reconstruction_loss"]
