"""Small models for CPU-sized experiments: a conv net, an MLP and a character-level LSTM."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ._init import kaiming_init


class SmallCNN(nn.Module):
    """``depth`` blocks of conv3x3 -> BN -> ReLU -> 2x2 max-pool, then global average pool and a
    linear classifier. Block ``i`` has ``width * 2**i`` channels.

    A block skips its max-pool once the feature map is smaller than 2x2, so tiny inputs (8x8
    digits) work with any depth; the network has no dropout.
    """

    def __init__(
        self, num_classes: int, input_shape: Sequence[int], width: int = 32, depth: int = 3
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        layers: list[nn.Module] = []
        in_ch = c
        for i in range(depth):
            out_ch = width * 2**i
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) per hidden size -> Linear.

    Hidden layers use He-normal weights and zero bias; the output layer keeps PyTorch's default
    init. No normalisation or dropout layers.
    """

    def __init__(
        self, num_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        in_features = math.prod(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            lin = nn.Linear(in_features, int(size))
            nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU(inplace=True)]
            in_features = int(size)
        layers.append(nn.Linear(in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CharLSTM(nn.Module):
    """Character language model: Embedding -> ``num_layers``-layer LSTM -> Linear to the vocabulary.

    Input: int64 tokens ``(B, T)``; output: logits ``(B, T, vocab_size)``. Every call starts from
    a zero hidden state (no state is carried between batches, so truncated-BPTT-style training
    across consecutive windows is not supported). Default PyTorch LSTM init; ``dropout`` (between
    LSTM layers) is 0 by default.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int = 256,
        embed_dim: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim, hidden, num_layers=num_layers, batch_first=True, dropout=dropout
        )
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out)
