"""The small CIFAR-10 CNN of the RAD paper (Oktay et al., ICLR 2021).

conv5x5(16) -> ReLU -> conv5x5(32) -> ReLU -> avg-pool 2 -> conv5x5(32) -> ReLU ->
conv5x5(32) -> ReLU -> avg-pool 2 -> flatten -> linear (2048 -> classes for 32x32 inputs), as in
the paper's public code (``CIFARConvNet``: padding 2, biases, no normalisation, PyTorch's
default init). ``width`` scales the channels: ``w, 2w, 2w, 2w`` (16 = the paper).
ReLU and pooling are modules (``nn.ReLU``, ``nn.AvgPool2d``) so that
``tamegrad.estimators.convert(..., lean=True)`` can swap them for their memory-lean versions.
Inputs whose height or width is not a multiple of 4 lose the remainder rows/columns at pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class RADPaperCNN(nn.Module):
    """The RAD paper's CIFAR CNN (see the module docstring)."""

    def __init__(self, num_classes: int, input_shape: Sequence[int], width: int = 16) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if h < 4 or w < 4:
            raise ValueError(f"rad-cnn needs inputs of at least 4x4, got {h}x{w}")
        c1, c2 = width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(c2, c2, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(c2, c2, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.fc = nn.Linear(c2 * (h // 4) * (w // 4), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))
