"""Plain nn.Modules (no training code): classifier, saliency, bridge, decoder, full models.

Every segmentation model subclasses :class:`Segmenter` (one ``predict`` contract, models/base.py) and
is registered by name; :func:`create_model` is the only factory::

    model = create_model("decouplednet", num_classes=10, scale="cpu")

``num_classes`` always counts object classes K (no background). Importing this package imports
every model module, which registers it.
"""

from __future__ import annotations

from .base import MODELS, SegOutput, Segmenter, create_model, identify_labels, register
from .baselinenet import BaselineNet
from .bridge import Bridge
from .classifier import Classifier, ClassifierOutput
from .decoder import DeconvDecoder, repeat_switches
from .deconvnet import DeconvNet
from .decouplednet import DecoupledNet
from .saliency import class_saliency, class_saliency_rows
from .scales import SCALES, Scale, get_scale
from .transfernet import AttentionModel, TransferNet, TransferOutput
from . import dis, encoder_decouplednet  # noqa: F401 - registers "dis", "decouplednet_enc", "maskonly_enc"
from .vgg import EncoderOutput, VGGEncoder, load_torchvision_vgg16, load_vgg16_file

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
    "EncoderOutput",
    "Scale",
    "SegOutput",
    "Segmenter",
    "TransferNet",
    "TransferOutput",
    "VGGEncoder",
    "class_saliency",
    "class_saliency_rows",
    "create_model",
    "get_scale",
    "identify_labels",
    "register",
    "load_torchvision_vgg16",
    "load_vgg16_file",
    "repeat_switches",
]
