"""Weight initialisation shared by the model zoo."""

from __future__ import annotations

from torch import nn


def kaiming_init(module: nn.Module) -> None:
    """He initialisation (the torchvision ResNet recipe).

    Conv weights: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` with zero bias;
    batch-norm scale 1 and shift 0. Linear layers are left alone here (the MLP initialises its
    ReLU-followed layers itself; classifier heads keep PyTorch's default uniform init). LSTM and
    embedding layers are untouched.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
