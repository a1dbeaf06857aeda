"""The HandSSCA network and its parts."""

from .attention import ATTENTION_KINDS, build_attention
from .handssca import HandSSCA, HandSSCAConfig
from .resnet import ResNet50, load_torchvision_resnet50
from .summary import PAPER_PARAMETERS, parameter_summary
from .torch_model import TorchModel

__all__ = [
    "ATTENTION_KINDS",
    "PAPER_PARAMETERS",
    "HandSSCA",
    "HandSSCAConfig",
    "ResNet50",
    "TorchModel",
    "build_attention",
    "load_torchvision_resnet50",
    "parameter_summary",
]
