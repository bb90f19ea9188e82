"""The one contract every segmentation model answers, and the one factory that builds them.

Modelled on segmentation_models_pytorch's ``SegmentationModel`` (one ``forward``/``predict`` contract on
a base class) and its ``create_model``: a model is a plain ``nn.Module`` that subclasses
:class:`Segmenter`, is registered under a name with :func:`register`, and is built only by
:func:`create_model`. The factory records the name and keyword arguments on the instance
(``model_name``, ``model_kwargs``), so a model file can be rebuilt from its JSON sidecar without the
loader knowing any method (``hetseg.engine.checkpoint``). Models never import the engine.

Label convention inside models: *object* indices 0..K-1 (no background). The probability maps have
K+1 channels, channel 0 background and channel k+1 object class k, so ``probs.argmax(1)`` is a
label map in mask indices (what the VOC devkit scores).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hetseg.data.classes import IGNORE_INDEX
from hetseg.registry import Registry


@dataclass
class SegOutput:
    """What :meth:`Segmenter.predict` returns, at the input resolution.

    probs (N, K+1, H, W): per-pixel class scores whose argmax is the label map (for DecoupledNet and
        DeconvNet normalised probabilities; for the TransferNet family the background rule of
        docs/TRANSFERNET.md). They are resized to the original image before the argmax.
    class_scores (N, K) or None: image-level label scores in [0, 1] (None for masks-only models).
    identified: per image, the object indices the maps were computed for (ascending), 0-based: object k
        is mask index k + 1 (``engine.evaluate.Prediction.identified`` holds the mask indices).
    extras: model-specific maps for figures (e.g. TransferNet attention, DIS reconstruction).

    No tensor is half precision (bf16 / float16), also when ``predict`` runs under a bf16 autocast:
    those are float32 (a float64 model's stay float64).
    """

    probs: Tensor
    class_scores: Tensor | None
    identified: list[list[int]]
    extras: dict | None = None

    @property
    def label_map(self) -> Tensor:
        """(N, H, W) int64 mask indices: 0 background, k+1 object class k."""
        return self.probs.argmax(dim=1)


def _predict_entry(predict: Callable) -> Callable:
    """What every model's ``predict`` does first (wrapped in by :meth:`Segmenter.__init_subclass__`):
    refuse input that is not an (N, 3, H, W) floating-point tensor in one line (a grey or unbatched
    image was broadcast by the EfficientNet models and failed deep inside torch elsewhere) or that holds
    NaN / inf (it came back as all background with NaN scores), cast another float type (float64,
    float16, bfloat16) to the model's own (a dtype mismatch deep in a conv), and switch to eval mode, as
    segmentation_models_pytorch's ``predict`` does (in train mode every call moved the BatchNorm
    running statistics)."""
    @functools.wraps(predict)
    def entry(self: Segmenter, images: Tensor, *args, **kwargs) -> SegOutput:
        c = self.in_channels
        if not (isinstance(images, Tensor) and images.ndim == 4 and images.shape[1] == c
                and images.is_floating_point()):
            got = f"{images.dtype} tensor {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a normalised float tensor (N, {c}, H, W), got a {got}; fix: "
                             "hetseg.engine.evaluate.predict_images takes RGB uint8 arrays and prepares them")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images: the tensor holds NaN or inf; fix: pass normalised finite values")
        own = next((p.dtype for p in self.parameters() if p.is_floating_point()), images.dtype)
        images = images.to(own) if images.dtype != own else images
        if self.training:
            self.eval()
        return _full_precision_output(predict(self, images, *args, **kwargs))

    return entry


def full_precision(t: Tensor | None) -> Tensor | None:
    """A bf16/float16 tensor as float32; any other value unchanged (float64 stays float64)."""
    return t.float() if isinstance(t, Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t


def _full_precision_output(out: SegOutput) -> SegOutput:
    """Every half-precision tensor of ``out`` (probs, class_scores, extras) as float32. Under a caller's
    bf16 autocast (e.g. validation inside a bf16-mixed training stage) some models returned bf16 maps
    and others float32; one rule makes the contract the same for every model. It only changes dtypes:
    the values that decide labels must already be computed in full precision by each model (a bf16
    sigmoid rounds every score within 0.002 of 0.5 to 0.5 itself), which casting afterwards cannot undo."""
    extras = None if out.extras is None else {k: full_precision(v) for k, v in out.extras.items()}
    return SegOutput(full_precision(out.probs), full_precision(out.class_scores), out.identified, extras)


class Segmenter(nn.Module):
    """Base class of every segmentation model.

    Subclasses set ``num_classes`` (K object classes, no background) and implement
    :meth:`predict`. ``labels`` (per image the object indices 0..K-1, i.e. mask index - 1, or an (N, K)
    bool/float multi-hot: :func:`labels_to_mask`) replaces the model's own label
    identification (the "-GT" evaluations, or labels chosen by a shared classifier). Every
    subclass's ``predict`` checks its input and puts the model in eval mode first (:func:`_predict_entry`).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "predict" in cls.__dict__:
            cls.predict = _predict_entry(cls.__dict__["predict"])

    num_classes: int
    in_channels: int = 3  # image channels (a model taking ``in_channels`` sets its own)
    model_name: str = ""
    model_kwargs: dict
    label_classes: list[int] | None = None  # object indices identification may return (None: all)
    label_fallback: bool = False            # no class over the threshold -> the allowed argmax

    def active_labels(self, scores: Tensor, labels: list[list[int]] | None, threshold: float | Tensor,
                      logits: Tensor | None = None) -> Tensor:
        """scores (N, K) -> (N, K) bool: ``labels`` when given, else this model's identification rule
        (``logits`` (N, K), the scores before their sigmoid, decide the fallback's argmax when given)."""
        if labels is not None:
            return labels_to_mask(labels, scores.shape[0], scores.shape[1], scores.device)
        return identify_labels(scores, threshold, self.label_classes, self.label_fallback, logits)

    def pretrained_modules(self) -> list[nn.Module]:
        """Submodules that start from pretrained (ImageNet) weights; training gives their parameters
        the stage's ``pretrained_lr_mult`` (hetseg.engine.stage). Default: none."""
        return []

    def predict(self, images: Tensor, labels: list[list[int]] | None = None, threshold: float = 0.5
                ) -> SegOutput:  # pragma: no cover - abstract
        """images (N, 3, S, S), normalised, S a multiple of the model's stride -> :class:`SegOutput`."""
        raise NotImplementedError

    # What export_forward returns, by name (the exported graph's outputs); empty: not exportable.
    export_outputs: tuple[str, ...] = ()

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.5) -> tuple[Tensor, ...]:
        """:meth:`predict` as one static graph, for ONNX / ``torch.export`` (``hetseg export``).

        images (N, 3, S, S) normalised -> the tensors named by ``export_outputs``: ``probs``
        (N, K+1, S, S), equal to ``predict(images, threshold=threshold).probs`` to float tolerance,
        and, for models with image-level scores, ``class_scores`` (N, K). No Python branching on
        data and no per-image lists: every class is computed and the unidentified ones are masked
        out, so the graph's shapes depend only on N (docs/ARCHITECTURE.md, "Export").
        """
        raise NotImplementedError(f"model {self.model_name or type(self).__name__!r} has no static export graph")


class MasksOnlySegmenter(Segmenter):
    """A model trained on masks alone (DeconvNet, the masks-only encoder model): ``forward(images)`` ->
    logits (N, K+1, H, W), channel 0 background. It has no image-level scores, so ``predict`` and
    ``export_forward`` are both the softmax of ``forward``: ``class_scores`` is None, ``identified``
    lists the classes present in the argmax, and ``labels`` / ``threshold`` are ignored (its "-GT"
    variant is the same as its plain one)."""

    export_outputs = ("probs",)

    @torch.no_grad()
    def predict(self, images: Tensor, labels: list[list[int]] | None = None, threshold: float = 0.5) -> SegOutput:
        """images (N, C, H, W) -> softmax probs (N, K+1, H, W) (in eval mode, as every predict)."""
        probs = self.export_forward(images)[0]
        return SegOutput(probs, None, present_classes(probs))

    def export_forward(self, images: Tensor, threshold: float | Tensor = 0.5) -> tuple[Tensor]:
        """images (N, C, S, S) -> (softmax probs (N, K+1, S, S),); ``threshold`` is not read."""
        return (torch.softmax(self.forward(images).float(), dim=1),)


MODELS = Registry("model")  # name -> Segmenter subclass


def frozen_aware(module: nn.Module, *args: Tensor) -> Any:
    """``module(*args)``, building an autograd graph only when grad is enabled and ``module`` has a
    trainable parameter: a frozen classifier or encoder (the engine freezes what a stage does not
    train) then keeps no activations for backward, which the decoder stages' batches need the memory of."""
    need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
    with torch.set_grad_enabled(need_grad):
        return module(*args)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register("dis")`` makes ``create_model("dis", ...)`` build the class."""
    return MODELS.decorator(name)


def create_model(name: str, **kwargs) -> Segmenter:
    """Build a registered model; the only factory (saving and loading go through it).

    kwargs must be JSON-serialisable (they are stored in model.json and passed back on load);
    ``num_classes`` (K object classes, background not counted) must be an integer in [1, 254]: label maps
    are uint8 with 255 void, so class 300 came back as 44.
    """
    if "num_classes" in kwargs:
        k = kwargs["num_classes"]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < IGNORE_INDEX:
            raise ValueError(f"num_classes={k!r}: expected an integer in [1, 254] (object classes, background not "
                             "counted; label maps are uint8 with 255 void)")
        kwargs["num_classes"] = int(k)  # numpy integers too; stored in model.json
    net = MODELS.lookup(name)(**kwargs)
    net.model_name = name.lower()
    net.model_kwargs = dict(kwargs)
    return net


def labels_to_mask(labels: list[list[int]] | Tensor, n: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """Per-image object index lists (0-based, background excluded: mask index - 1) -> (N, K) bool, checking
    range and length. A bool or floating (N, K) tensor is a multi-hot and is taken as it is (its values
    must be 0 or 1): read as index lists, a multi-hot ``torch.zeros(2, 20)`` forced class 0 on every image."""
    import torch

    if isinstance(labels, torch.Tensor) and (labels.dtype == torch.bool or labels.is_floating_point()):
        if labels.shape != (n, k) or not ((labels == 0) | (labels == 1)).all():
            raise ValueError(f"labels: a {labels.dtype} tensor is read as a multi-hot, which must be ({n}, {k}) of "
                             f"0/1, got {tuple(labels.shape)}; or give per-image lists of object indices 0..{k - 1}")
        return labels.to(device=device, dtype=torch.bool)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} images")
    active = torch.zeros(n, k, dtype=torch.bool, device=device)
    for i, ls in enumerate(labels):
        if any(not 0 <= int(c) < k for c in ls):
            raise ValueError(f"labels[{i}] = {list(ls)} outside 0..{k - 1}")
        active[i, [int(c) for c in ls]] = True
    return active


def present_classes(probs: Tensor) -> list[list[int]]:
    """A masks-only model's "identified" labels: probs (N, K+1, H, W) -> per image the ascending
    object indices that win at least one pixel of the argmax."""
    return [sorted(int(c) - 1 for c in torch.unique(row) if c > 0) for row in probs.argmax(dim=1).flatten(1)]


def index_lists(active: Tensor) -> list[list[int]]:
    """(N, K) bool -> per image the ascending indices that are set."""
    return [row.nonzero().flatten().tolist() for row in active.cpu()]


def identify_labels(scores: Tensor, threshold: float | Tensor, allowed: list[int] | None = None,
                    fallback: bool = False, logits: Tensor | None = None) -> Tensor:
    """Label identification shared by every model with image-level scores.

    scores (N, K) in [0, 1] -> active (N, K) bool: {k in allowed : scores_k > threshold}; with
    ``fallback``, an image with none gets the allowed argmax (TransferNet's rule, docs/TRANSFERNET.md),
    taken on ``logits`` (N, K) when given: a sigmoid far below the threshold underflows (to exactly 0
    under about -104 in float32, and onnxruntime flushes it under about 3e-8), so every class tied and
    the first won, differently in PyTorch and in an exported graph.
    """
    import torch

    if not isinstance(threshold, Tensor):  # numpy scalars are numbers.Real too
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a number in [-1, 1] (-1 makes every class live), got {threshold!r}")
        threshold = float(threshold)  # NaN failed the comparison above
    ok = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
    if allowed is not None:
        ok = torch.zeros_like(ok)
        ok[[int(c) for c in allowed]] = True
    active = (scores > threshold) & ok
    if fallback:
        # Masks, not boolean indexing: the rule stays one static graph (Segmenter.export_forward).
        ranked = scores if logits is None else logits.float()
        best = ranked.masked_fill(~ok, torch.finfo(torch.float32).min).argmax(dim=1)
        none = ~active.any(dim=1, keepdim=True)
        active = active | (none & torch.nn.functional.one_hot(best, scores.shape[1]).bool())
    return active


__all__ = ["MODELS", "MasksOnlySegmenter", "SegOutput", "Segmenter", "create_model", "frozen_aware", "identify_labels",
           "index_lists", "labels_to_mask", "present_classes", "register"]
