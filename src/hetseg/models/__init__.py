"""Plain nn.Modules (no training code): classifier, saliency, bridge, decoder, full models.

Every architecture takes the same keyword arguments (``num_classes``, ``scale``,
``in_channels``), so configs and tests can build any of them by name::

    model = create_model("decouplednet", num_classes=10, scale="cpu")
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .baselinenet import BaselineNet
from .bridge import Bridge
from .classifier import Classifier, ClassifierOutput
from .decoder import DeconvDecoder, repeat_switches
from .deconvnet import DeconvNet
from .decouplednet import DecoupledNet, DecoupledOutput
from .saliency import class_saliency, class_saliency_rows
from .scales import SCALES, Scale, get_scale
from .transfernet import AttentionModel, TransferNet, TransferOutput
from .vgg import EncoderOutput, VGGEncoder, load_torchvision_vgg16, load_vgg16_file

MODELS: dict[str, Callable[..., nn.Module]] = {
    "classifier": Classifier,
    "decouplednet": DecoupledNet,
    "deconvnet": DeconvNet,
    "transfernet": TransferNet,
    "baselinenet": BaselineNet,
}


def create_model(name: str, **kw) -> nn.Module:
    """Build a model by name ("classifier", "decouplednet", "deconvnet", "transfernet", "baselinenet").

    Note ``num_classes`` counts object classes for "classifier"/"decouplednet" and classes
    *including* background for "deconvnet" (it predicts the background channel itself).
    """
    try:
        cls = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kw)


__all__ = [
    "MODELS",
    "SCALES",
    "AttentionModel",
    "BaselineNet",
    "Bridge",
    "Classifier",
    "ClassifierOutput",
    "DeconvDecoder",
    "DeconvNet",
    "DecoupledNet",
    "DecoupledOutput",
    "EncoderOutput",
    "Scale",
    "TransferNet",
    "TransferOutput",
    "VGGEncoder",
    "class_saliency",
    "class_saliency_rows",
    "create_model",
    "get_scale",
    "load_torchvision_vgg16",
    "load_vgg16_file",
    "repeat_switches",
]
