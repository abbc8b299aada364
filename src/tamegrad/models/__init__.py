"""Model zoo for the training engine: ``create_model(name, num_classes=..., input_shape=...)``.

Models: ``resnet18`` (CIFAR-style), ``cnn``, ``mlp``, ``char-lstm``, ``gpt`` (a small
decoder-only transformer), ``rad-cnn`` (the RAD paper's CIFAR CNN). None use dropout by default.
"""

from .factory import available_models, create_model, describe_model
from .gpt import GPT
from .rad_cnn import RADPaperCNN
from .resnet import BasicBlock, ResNet18
from .small import MLP, CharLSTM, SmallCNN

__all__ = [
    "GPT",
    "MLP",
    "BasicBlock",
    "CharLSTM",
    "RADPaperCNN",
    "ResNet18",
    "SmallCNN",
    "available_models",
    "create_model",
    "describe_model",
]
