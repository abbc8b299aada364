"""``tamegrad list``: optimizers, data sets and models with one line each."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="list optimizers, data sets or models")
    p.add_argument("what", nargs="?", choices=["optimizers", "datasets", "models"])


def run(args: argparse.Namespace) -> int:
    """``tamegrad list``."""
    what = [args.what] if args.what else ["optimizers", "datasets", "models"]
    for item in what:
        if len(what) > 1:
            print(f"{item}:")
        indent = "  " if len(what) > 1 else ""
        for name, desc in describe(item):
            print(f"{indent}{name:<16} {desc}".rstrip())
    return 0


def _describe_optimizers() -> list[tuple[str, str]]:
    import tamegrad.optim as optim

    rows = []
    for name in optim.list_optimizers():
        try:
            desc = str(getattr(optim.describe(name), "description", ""))
        except Exception:
            desc = ""
        rows.append((name, desc))
    return rows


def _describe_datasets() -> list[tuple[str, str]]:
    from tamegrad.data import available_datasets, dataset_options

    rows = []
    for name in available_datasets():
        opts = ", ".join(f"{k}={v!r}" for k, v in dataset_options(name).items())
        rows.append((name, f"[options: {opts}]" if opts else ""))
    return rows


def _describe_models() -> list[tuple[str, str]]:
    import tamegrad.models as models

    rows = []
    for name in models.available_models():
        try:
            desc = str(models.describe_model(name))
        except Exception:
            desc = ""
        rows.append((name, desc))
    return rows


def describe(what: str) -> list[tuple[str, str]]:
    """``(name, one-line description)`` of each optimizer, data set or model."""
    rows = {"optimizers": _describe_optimizers, "datasets": _describe_datasets,
            "models": _describe_models}[what]()
    return [(n, d[len(n) + 1:].strip() if d.startswith(f"{n}:") else d) for n, d in rows]
