"""``TrainConfig.init_from``: start a run from another run's model weights (fine-tuning).

``init_from`` names a run folder (its ``checkpoints/last.pt`` is used, and the run must have
completed) or a checkpoint file written by the trainer. :func:`load_init_weights` copies the
checkpoint's model weights into the freshly created model, before the layer conversion, DDP
and the optimizer: only the weights travel; optimizer state, schedule, step counters, RNG and
named states (e.g. a gradient-norm cache) start fresh, as in fine-tuning.

The architecture must match: the checkpoint's stored config must name the same ``model``,
``width`` and ``model_options`` as this run, and every parameter and buffer must have the same
name and shape (so also the vocabulary size and, for ``gpt``, the context length); otherwise a
``ValueError`` says what differs. A relative path is resolved against the current working
directory. Limits: the checkpoint must hold the plain (unconverted) layout or one whose state
dict keys are the plain model's (true for the ``tamegrad.estimators`` layers, which subclass
``nn.Linear``/``nn.Conv2d``); DDP-wrapped keys (``module.``) are not expected, the trainer stores
the unwrapped model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .run_folder import RunFolder

__all__ = ["ARCH_FIELDS", "init_checkpoint_path", "load_init_weights"]

#: Config fields that fix the model's architecture (with the data's vocabulary / input shape).
ARCH_FIELDS = ("model", "width", "model_options")


def init_checkpoint_path(init_from: str) -> Path:
    """The checkpoint file ``init_from`` names; ``ValueError`` when there is none to use."""
    path = Path(init_from).expanduser()
    if path.is_dir():
        folder = RunFolder(path)
        status = folder.status()
        if status != "completed":
            raise ValueError(
                f"init_from={init_from!r}: the run in {path} is {status}, not completed "
                "(finish it first, e.g. run its pre-training suite or --resume it)")
        if not folder.has_checkpoint():
            raise ValueError(f"init_from={init_from!r}: {folder.checkpoint_path} is missing")
        return folder.checkpoint_path
    if path.is_file():
        return path
    raise ValueError(
        f"init_from={init_from!r}: no run folder or checkpoint file at {path.resolve()} "
        "(run the pre-training first)")


def _arch_differences(config: TrainConfig, stored: dict[str, Any]) -> list[str]:
    mine = config.to_dict()
    return [f"{name}: {stored.get(name)!r} there, {mine[name]!r} here"
            for name in ARCH_FIELDS if stored.get(name) != mine[name]]


def load_init_weights(model: nn.Module, config: TrainConfig) -> None:
    """Copy the weights of ``config.init_from`` into ``model`` (in place; no-op when None).

    Raises ``ValueError`` naming the path when it is missing or unfinished, when the stored
    config's architecture fields differ, or when parameter names or shapes differ; a corrupt
    file raises :class:`~tamegrad.train.checkpoint.CheckpointError`.
    """
    if config.init_from is None:
        return
    path = init_checkpoint_path(config.init_from)
    ckpt = load_checkpoint(path, map_location="cpu")
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise ValueError(f"init_from={config.init_from!r}: {path} holds no model weights")
    stored = ckpt.get("config")
    if isinstance(stored, dict):
        diffs = _arch_differences(config, stored)
        if diffs:
            raise ValueError(
                f"init_from={config.init_from!r}: the checkpoint's model architecture differs "
                f"({'; '.join(diffs)})")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} there, {tuple(v.shape)} here"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if shapes:
            parts.append("shapes differ: " + "; ".join(shapes[:5]))
        raise ValueError(
            f"init_from={config.init_from!r}: the checkpoint's model does not match this "
            f"model ({' | '.join(parts)}); e.g. another vocabulary, seq_len or model size")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
