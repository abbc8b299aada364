"""Parsing ``KEY=VALUE`` options and optimizer specs ``[label=]name[:key=value,...]``."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from tamegrad.train.grid import GridEntry

from ._errors import CLIError


def parse_value(text: str) -> Any:
    """A ``--opt`` value: a Python literal (int, float, bool, tuple, None...) or else the string.

    ``true``/``false``/``none``/``null`` are accepted in any case.
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_kv(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, parse_value(value))``."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or not key.isidentifier():
        raise CLIError(f"expected key=value, got {text!r}")
    return key, parse_value(value)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes (so ``betas=(0.9,0.99)`` stays whole)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    cur: list[str] = []
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str, config_fields: Sequence[str] = ()) -> GridEntry:
    """Parse an optimizer spec ``[label=]name[:key=value,key=value,...]`` into a ``GridEntry``.

    ``lr`` becomes the entry's learning rate, keys that are ``TrainConfig`` fields (given in
    ``config_fields``: ``batch_size``, ``grad_accum``, ``weight_decay``, ...) become config
    overrides, everything else an optimizer keyword. Without ``label=`` the label is the spec.
    """
    text = spec.strip()
    if not text:
        raise CLIError("empty optimizer spec")
    label = text
    head = text.partition(":")[0]
    if "=" in head:  # "label=name[:...]"; a bare "name:k=v" has its first '=' after the colon
        label, _, text = text.partition("=")
        label = label.strip()
        text = text.strip()
        if not label:
            raise CLIError(f"empty label in optimizer spec {spec!r}")
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if not name:
        raise CLIError(f"no optimizer name in spec {spec!r}")
    lr: float | None = None
    opt_kwargs: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    fields = set(config_fields)
    for item in _split_top_level(rest):
        key, value = parse_kv(item)
        if key == "lr":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CLIError(f"lr must be a number in spec {spec!r}, got {value!r}")
            lr = float(value)
        elif key in fields:
            overrides[key] = value
        else:
            opt_kwargs[key] = value
    return GridEntry(label=label, optimizer=name, lr=lr, optimizer_kwargs=opt_kwargs,
                     overrides=overrides)
