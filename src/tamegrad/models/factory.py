"""Build models by name: ``create_model("resnet18", num_classes=10, input_shape=(3, 32, 32))``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .gpt import GPT
from .rad_cnn import RADPaperCNN
from .resnet import ResNet18
from .small import MLP, CharLSTM, SmallCNN


@dataclass(frozen=True)
class _ModelSpec:
    build: Callable[..., nn.Module]
    options: dict[str, Any]  # option name -> default
    width_default: int
    description: str


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs an image input_shape (C, H, W), got {tuple(input_shape)}"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def _positive_int(name: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model {name!r}: {option} must be an integer >= 1, got {value!r}")
    return value


def _build_resnet18(
    num_classes: int, input_shape: Sequence[int], width: int, *, zero_init_residual: bool
) -> nn.Module:
    c, _, _ = _image_shape("resnet18", input_shape)
    return ResNet18(num_classes, c, width, zero_init_residual=bool(zero_init_residual))


def _build_cnn(
    num_classes: int, input_shape: Sequence[int], width: int, *, depth: int
) -> nn.Module:
    shape = _image_shape("cnn", input_shape)
    return SmallCNN(num_classes, shape, width, _positive_int("cnn", "depth", depth))


def _build_mlp(
    num_classes: int, input_shape: Sequence[int], width: int, *, hidden: Sequence[int] | None,
    depth: int,
) -> nn.Module:
    if hidden is None:
        hidden = [width] * _positive_int("mlp", "depth", depth)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"model 'mlp': hidden must be a list of integers, got {hidden!r}")
    sizes = [_positive_int("mlp", "hidden sizes", h) for h in hidden]
    return MLP(num_classes, input_shape, sizes)


def _build_char_lstm(
    num_classes: int, input_shape: Sequence[int], width: int, *, embed_dim: int,
    num_layers: int, dropout: float,
) -> nn.Module:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"model 'char-lstm': dropout must be in [0, 1), got {dropout!r}")
    return CharLSTM(
        num_classes,
        hidden=width,
        embed_dim=_positive_int("char-lstm", "embed_dim", embed_dim),
        num_layers=_positive_int("char-lstm", "num_layers", num_layers),
        dropout=float(dropout),
    )


def _build_gpt(
    num_classes: int, input_shape: Sequence[int], width: int, *, n_layer: int, n_head: int,
    block_size: int | None,
) -> nn.Module:
    context = int(input_shape[0]) if block_size is None else block_size
    return GPT(
        num_classes,
        n_layer=_positive_int("gpt", "n_layer", n_layer),
        n_head=_positive_int("gpt", "n_head", n_head),
        n_embd=width,
        block_size=_positive_int("gpt", "block_size", context),
    )


def _build_rad_cnn(num_classes: int, input_shape: Sequence[int], width: int) -> nn.Module:
    return RADPaperCNN(num_classes, _image_shape("rad-cnn", input_shape), width)


_MODELS: dict[str, _ModelSpec] = {
    "resnet18": _ModelSpec(
        _build_resnet18, {"zero_init_residual": False}, 64,
        "CIFAR-style ResNet-18 (3x3 stem, no max-pool); width = first-stage channels "
        "(64 = standard, 11.17M params; 16 = CPU size)",
    ),
    "cnn": _ModelSpec(
        _build_cnn, {"depth": 3}, 32,
        "small conv net: depth x (conv3x3-BN-ReLU-maxpool), widths w, 2w, 4w, ...",
    ),
    "mlp": _ModelSpec(
        _build_mlp, {"hidden": None, "depth": 2}, 256,
        "flatten -> depth hidden ReLU layers of size width (or explicit hidden=[...])",
    ),
    "rad-cnn": _ModelSpec(
        _build_rad_cnn, {}, 16,
        "the RAD paper's CIFAR CNN: 4 conv5x5 (w, 2w, 2w, 2w) + ReLU, avg-pools, linear",
    ),
    "char-lstm": _ModelSpec(
        _build_char_lstm, {"embed_dim": 64, "num_layers": 2, "dropout": 0.0}, 256,
        "embedding -> 2-layer LSTM (width = hidden size, default 256) -> vocab logits (B,T,V)",
    ),
    "gpt": _ModelSpec(
        _build_gpt, {"n_layer": 4, "n_head": 4, "block_size": None}, 128,
        "decoder-only transformer (pre-LN, causal SDPA, GELU MLP); width = n_embd; "
        "block_size (context) defaults to input_shape[0]; logits (B,T,V)",
    ),
}
# ``hidden`` is accepted as an alias of ``width`` for the LSTM (the hidden size).
_WIDTH_ALIASES = {"char-lstm": "hidden"}


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def describe_model(name: str) -> str:
    """One-line description of model ``name`` including its options and their defaults."""
    spec = _spec(name)
    opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
    return f"{name}: {spec.description} [width={spec.width_default}; options: {opts or 'none'}]"


def _spec(name: str) -> _ModelSpec:
    key = name.lower()
    if key not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(available_models())}")
    return _MODELS[key]


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    width: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs and inputs of shape ``input_shape``.

    ``input_shape`` excludes the batch dimension: ``(C, H, W)`` for ``resnet18``/``cnn``, any
    shape for ``mlp`` (it flattens), ``(T,)`` (ignored) for ``char-lstm`` and ``(T,)`` (the
    default context length) for ``gpt``; for both ``num_classes`` is the vocabulary size.
    ``width`` is the model's size knob (first-stage channels for the conv nets, hidden size for
    the MLP and LSTM, n_embd for gpt); ``None`` means the model's default. Unknown names
    and unknown or invalid ``options`` raise ``ValueError``. Parameters are initialised from
    torch's global RNG: seed it (``torch.manual_seed``) for a reproducible init.
    """
    spec = _spec(name)
    key = name.lower()
    alias = _WIDTH_ALIASES.get(key)
    if alias is not None and alias in options:
        if width is not None:
            raise ValueError(f"model {name!r}: give width or {alias}, not both")
        width = options.pop(alias)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        valid = ", ".join(sorted(spec.options) + ([alias] if alias else [])) or "none"
        raise ValueError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    num_classes = _positive_int(key, "num_classes", num_classes)
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError as exc:
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}") from exc
    if not shape or any(s < 1 for s in shape) or math.prod(shape) < 1:
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {shape}")
    width = spec.width_default if width is None else _positive_int(key, "width", width)
    kwargs = {**spec.options, **options}
    return spec.build(num_classes, shape, width, **kwargs)
