"""Checks made before anything is written: names, options, and whether the model fits the data.

A command that fails one of these exits 2 and leaves no run folder, grid folder or file behind.
Optimizer keywords are checked against the factory's signature
(``tamegrad.optim.registry.check_options``); their values by building the optimizer over the
real model's parameters, as the trainer will (never over a dummy parameter, which optimizers
that need the model's layers cannot take).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tamegrad.train.config import TrainConfig

from ._errors import CLIError, input_errors


def check_name(kind: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise CLIError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


def _check_optimizer(config: TrainConfig) -> None:
    """The optimizer's name, and its keywords against the factory's signature."""
    import tamegrad.optim as optim
    from tamegrad.optim import registry

    check_name("optimizer", config.optimizer, list(optim.list_optimizers()))
    options = {"lr": config.lr, "weight_decay": config.weight_decay, **config.optimizer_kwargs}
    check_options = getattr(registry, "check_options", None)
    if check_options is None:  # an older registry: create() over the model checks the keys
        return
    try:
        check_options(config.optimizer, options)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"optimizer {config.optimizer!r}: {exc}") from exc


def _check_data_and_model_names(config: TrainConfig) -> None:
    from tamegrad.data import available_datasets, dataset_options
    from tamegrad.models import available_models

    check_name("dataset", config.dataset, list(available_datasets()))
    check_name("model", config.model, list(available_models()))
    valid = dataset_options(config.dataset)
    unknown = sorted(set(config.dataset_options) - set(valid))
    if unknown:
        raise CLIError(f"dataset {config.dataset!r} has no option(s) {', '.join(unknown)}; "
                       f"valid options: {', '.join(valid) or 'none'}")


def _fit_key(config: TrainConfig) -> str:
    keys = ("dataset", "data_dir", "dataset_options", "seq_len", "model", "width",
            "model_options")
    return json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True, default=str)


def check_model_fits_data(config: TrainConfig) -> Any:
    """Load the data set and run the model on two training examples; return the model.

    ``CLIError`` when the data is missing or the model does not accept it (e.g. a text model
    on images). Inputs are the raw examples (images scaled to [0, 1], no normalisation or
    augmentation): this checks shapes and types, not numbers. Runs on the CPU.
    """
    import torch

    from tamegrad.train.build import _load as load_data
    from tamegrad.train.build import build_model

    try:
        ds = load_data(config)
    except input_errors() as exc:
        raise CLIError(str(exc)) from exc
    shape = tuple(ds.train_x.shape[1:])
    what = f"dataset {config.dataset!r} ({ds.kind} data, examples of shape {shape})"
    try:
        model = build_model(config, ds, torch.device("cpu"))
    except (ValueError, TypeError) as exc:
        raise CLIError(f"model {config.model!r} cannot be built for {what}: {exc}") from exc
    x = ds.train_x[:2]
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"model {config.model!r} does not fit {what}: {first}") from exc
    return model


def _check_optimizer_values(config: TrainConfig, model: Any) -> None:
    from tamegrad.train.build import build_optimizer

    try:
        build_optimizer(config, model)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"optimizer {config.optimizer!r}: {exc}") from exc


def validate_configs(configs: Sequence[TrainConfig], *, fit: bool = True) -> None:
    """Every check of this module, for each config (the data/model fit once per distinct data
    set and model, the optimizer's values over that model); raises :class:`CLIError`.
    ``fit=False`` checks names and option keys only (nothing is loaded)."""
    models: dict[str, Any] = {}
    for config in configs:
        _check_data_and_model_names(config)
        _check_optimizer(config)
        if not fit:
            continue
        key = _fit_key(config)
        if key not in models:
            models[key] = check_model_fits_data(config)
        _check_optimizer_values(config, models[key])


def config_diffs(config: TrainConfig, stored: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(field, stored value, new value)`` for each field that differs in a way that changes
    the run (``TrainConfig.resume_differences``)."""
    changed = {d.split(":", 1)[0].strip() for d in config.resume_differences(stored)}
    a, b = stored.to_dict(), config.to_dict()
    return [(name, a[name], b[name]) for name in a if name in changed]
