"""Model registry: build any supported classifier by name with `create_model`."""

import torch.nn as nn

from misleader.errors import UserError
from misleader.models.densenet import densenet121
from misleader.models.generator import Generator
from misleader.models.lenet import lenet5, lenet5fifth, lenet5half
from misleader.models.mobilenet import mobilenet_v2
from misleader.models.resnet import resnet18_8x, resnet34_8x

# name -> constructor(num_classes, in_channels); insertion order is MODEL_NAMES order
_REGISTRY = {}


def register_model(fn):
    """Add a constructor to the registry under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


for _fn in (lenet5, lenet5half, lenet5fifth, resnet18_8x, resnet34_8x, mobilenet_v2, densenet121):
    register_model(_fn)

MODEL_NAMES = tuple(_REGISTRY)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build a freshly initialized classifier for 32x32 inputs."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model '{name}'; valid models: {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels)


__all__ = ["create_model", "register_model", "MODEL_NAMES", "Generator"]
