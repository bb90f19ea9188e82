"""Stage ``pre``: the CPU-scale stand-in for ImageNet pretraining, written once for every method
that has it -- DecoupledNet's VGG classifier (the backbone of Table 1 and TransferNet) and DIS's
ResNet encoder (docs/DECISIONS.md, "CPU-scale backbone"; docs/DIS.md, "Starting weights").

Single-label softmax over the 10 Fashion-MNIST categories, one *train* item per image on
fashion-scenes clutter (hetseg.data.items); the last ``data.pretrain_holdout`` train items are
held out for ``val/acc``; no t10k item (those make the val scenes) is ever seen. After the stage,
``RUN/backbone.safetensors`` holds the model's backbone parts (hetseg.models.backbone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from hetseg.config import Config, StageConfig
from hetseg.engine.optim import ParamGroup
from hetseg.engine.stage import Stage
from hetseg.engine.train import run_stage

ITEM_CLASSES = 10  # Fashion-MNIST categories
HEAD_FILE = "pre_head.safetensors"  # EncoderPretrainStage's head, beside the run's model


class PretrainStage(Stage):
    """Softmax CE over the items' 10 categories on :meth:`logits`; held-out accuracy as ``val/acc``."""

    def __init__(self, net: nn.Module, sc: StageConfig, train_parts: Sequence[nn.Module]) -> None:
        super().__init__(net, sc, train_parts)
        # torchmetrics sums hits and counts over DDP ranks (a mean of per-rank ratios would not).
        self.val_acc = MulticlassAccuracy(num_classes=ITEM_CLASSES, average="micro")

    def logits(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """images (N, 3, S, S) -> (N, 10) item logits, float32."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.logits(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.logits(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute())
        self.val_acc.reset()


class ClassifierPretrainStage(PretrainStage):
    """A model with a 10-way ``.classifier`` (DecoupledNet at data.num_classes=11): its avg-pooled
    score, as ImageNet VGG-16 is trained with its own score layer."""

    def __init__(self, net: nn.Module, sc: StageConfig) -> None:
        super().__init__(net, sc, [net.classifier])

    def logits(self, x: Tensor) -> Tensor:
        return self.net.classifier(x).logits_avg.float()


class EncoderPretrainStage(PretrainStage):
    """A model whose backbone is ``backbone_modules()["encoder"]`` (DIS's ResNet): global average
    pool + a new linear layer that lives in this stage only -- it is not part of the model, so the
    model's parameters and files are the same with or without pretraining (the ImageNet fc layer
    is dropped likewise)."""

    def __init__(self, net: nn.Module, sc: StageConfig, channels: int) -> None:
        super().__init__(net, sc, [net.backbone_modules()["encoder"]])
        self.head = nn.Linear(channels, ITEM_CLASSES)

    def param_groups(self) -> list[ParamGroup]:
        return [*super().param_groups(), ParamGroup(list(self.head.parameters()))]

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.net.backbone_modules()["encoder"](x).mean(dim=(2, 3))).float()


def run_pretrain(module: PretrainStage, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                 progress: bool) -> tuple[dict, dict]:
    """Train ``module`` on the items at the model's input side; (summary, splits record)."""
    from hetseg.data.items import item_splits

    train_ds, val_ds = item_splits(cfg.data.fashion_mnist_dir or None, net.input_size, cfg.seed,
                                   cfg.data.pretrain_holdout)
    summary = run_stage("pre", module, cfg, cfg.pre, train_ds, val_ds, resume, callbacks, progress)
    if isinstance(module, EncoderPretrainStage):  # its head is not the model's: keep it for item_logits
        _save(module.head.state_dict(), Path(cfg.run_dir) / HEAD_FILE)
    return summary, {"pre": {"items": "Fashion-MNIST train", "train": len(train_ds), "held_out": len(val_ds)}}


def _save(state: dict[str, Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    from hetseg.io_atomic import write_atomic

    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(state, tmp))
    return path


def write_backbone(net: nn.Module, run_dir: str | Path) -> Path:
    """``RUN/backbone.safetensors`` (atomic) from the model's backbone parts; returns its path."""
    from hetseg.models.backbone import backbone_state

    return _save(backbone_state(net), Path(run_dir) / "backbone.safetensors")


def item_logits(net: nn.Module, run_dir: str | Path) -> Callable[[Tensor], Tensor]:
    """The pretraining's classifier of ``net`` as a function images (N, 3, S, S) -> (N, 10) logits:
    the model's own ``.classifier``, else its encoder + the head kept in ``RUN/pre_head.safetensors``
    (so the shipped weights' held-out accuracy can be measured after the stage; eval mode)."""
    net.eval()
    if hasattr(net, "classifier"):
        return lambda x: net.classifier(x).logits_avg.float()
    from safetensors.torch import load_file

    encoder = net.backbone_modules()["encoder"]
    head_state = load_file(str(Path(run_dir) / HEAD_FILE), device="cpu")
    head = nn.Linear(head_state["weight"].shape[1], ITEM_CLASSES)
    head.load_state_dict(head_state)
    return lambda x: head(encoder(x).mean(dim=(2, 3))).float()
