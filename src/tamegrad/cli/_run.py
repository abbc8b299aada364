"""Calling the trainer from a command: error mapping, and no debris when input is rejected."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig

from ._errors import CLIError, RunFailed, input_errors


def progress_enabled() -> bool:
    return sys.stderr.isatty()


def _new_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    p = path.absolute()
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    return missing


def call_train(config: TrainConfig, run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """``train(config, run_dir)`` with its errors as :class:`CLIError` (bad input: the folders
    this call created are removed again) or :class:`RunFailed` (the run folder is kept)."""
    from tamegrad.train.trainer import train

    created = _new_dirs(run_dir)
    try:
        result = train(config, run_dir, resume=resume, progress=progress_enabled())
    except input_errors() as exc:  # missing data, corrupt checkpoint, bad hyper-parameters
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise CLIError(str(exc)) from exc
    except Exception as exc:
        raise RunFailed(f"training failed: {type(exc).__name__}: {exc}") from exc
    return result if isinstance(result, dict) else {}


def fmt_acc(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value * 100:.2f}%" if value <= 1.0 else f"{value:.2f}%"
