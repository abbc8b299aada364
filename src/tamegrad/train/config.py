"""The training configuration: one flat, JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def _as_json_value(value: Any) -> Any:
    """``value`` with every tuple turned into a list, recursively (what JSON gives back)."""
    if isinstance(value, (list, tuple)):
        return [_as_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json_value(v) for k, v in value.items()}
    return value


SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("uniform", "priority", "infobatch")

# Fields that may differ between the stored config and the one passed to ``train(resume=True)``:
# they change where/how a run is executed or evaluated, not the training trajectory.
RESUME_FREE_FIELDS = frozenset(
    {"data_dir", "device", "eval_batch_size", "checkpoint_every_steps", "measure_activations"}
)
_TUPLE_FIELDS = ("norm_mean", "norm_std", "estimator_include", "estimator_exclude")


@dataclass
class TrainConfig:
    """Everything that defines one training run.

    Field meanings (defaults in parentheses):

    * ``dataset`` ("digits"), ``data_dir`` (None = ``$TAMEGRAD_DATA``), ``dataset_options``
      (extra keyword arguments of ``tamegrad.data.load_dataset``), ``train_subset`` (None = all
      training samples; else a seeded subset of that size), ``seq_len`` (128; window length of
      text data sets, ignored for others).
    * ``model`` ("mlp"), ``width`` (None = model default), ``model_options``.
    * ``optimizer`` ("sgd"), ``optimizer_kwargs`` (passed to ``tamegrad.optim.create``), ``lr``
      (0.1), ``weight_decay`` (0.0).
    * ``batch_size`` (8; per process and per micro-batch), ``grad_accum`` (1; micro-batches per
      optimizer step), ``epochs`` (5), ``schedule`` ("constant" | "step" | "cosine"),
      ``clip_grad_norm`` (None = off), ``limit_train_batches`` (None = whole epoch; else at most
      that many micro-batches per epoch).
    * ``seed`` (0), ``device`` ("auto" picks CUDA when available, "cpu", "cuda" or "cuda:N"),
      ``amp`` (False; float16 autocast + GradScaler, CUDA only: ignored with a warning on CPU).
    * ``eval_batch_size`` (512), ``augment`` (True: random crop + horizontal flip, applied only
      to 3-channel 32x32 image data), ``norm_mean`` / ``norm_std`` (None = the data set's own
      per-channel statistics), ``checkpoint_every_steps`` (None = checkpoint at epoch ends only).
    * ``estimator`` (None = exact gradients; else a ``tamegrad.estimators`` method such as
      "rad" or "wtacrs" applied to the model's layers), ``keep_frac`` (None = the method's
      default), ``estimator_include`` / ``estimator_exclude`` (module-name patterns; None = the
      method's defaults), ``estimator_options`` (more keyword arguments of ``convert``),
      ``measure_activations`` (False; always on with an estimator: record the activation bytes
      of the first training micro-batch of every epoch in the metrics).
    * ``init_from`` (None = fresh weights; else a run folder or checkpoint path whose model
      weights initialise the model before conversion and optimizer, for fine-tuning; same
      architecture required, see :mod:`tamegrad.train.init_from`).
    * ``sampler`` ("uniform" = the loader's shuffled order; "priority" | "infobatch" from
      ``tamegrad.sampling``), ``sampler_options`` (keyword arguments of the sampler).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    width: int | None = None
    optimizer: str = "sgd"
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 8
    epochs: int = 5
    schedule: str = "constant"
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    train_subset: int | None = None
    eval_batch_size: int = 512
    augment: bool = True
    seq_len: int = 128
    limit_train_batches: int | None = None
    checkpoint_every_steps: int | None = None
    norm_mean: tuple[float, ...] | None = None
    norm_std: tuple[float, ...] | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    estimator: str | None = None
    keep_frac: float | None = None
    estimator_include: tuple[str, ...] | None = None
    estimator_exclude: tuple[str, ...] | None = None
    estimator_options: dict[str, Any] = field(default_factory=dict)
    measure_activations: bool = False
    sampler: str = "uniform"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None

    def validate(self) -> TrainConfig:
        """Check every field; raise one ``ValueError`` naming all bad fields. Returns ``self``.

        Only checks what can be checked without loading anything: whether the data set, model
        and optimizer names exist (and accept their options) is checked when the run starts.
        """
        errors: list[str] = []

        def bad(name: str, why: str) -> None:
            errors.append(f"{name}={getattr(self, name)!r} ({why})")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for name in ("dataset", "model", "optimizer", "schedule", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                bad(name, "must be a non-empty string")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            bad("data_dir", "must be a string or None")
        if self.init_from is not None and (not isinstance(self.init_from, str)
                                           or not self.init_from):
            bad("init_from", "must be None or a non-empty path")
        for name in ("batch_size", "epochs", "grad_accum", "eval_batch_size", "seq_len"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                bad(name, "must be an integer >= 1")
        for name in ("width", "train_subset", "limit_train_batches", "checkpoint_every_steps"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                bad(name, "must be None or an integer >= 1")
        if not is_int(self.seed) or self.seed < 0:
            bad("seed", "must be an integer >= 0")
        if not is_num(self.lr) or not math.isfinite(self.lr) or self.lr < 0:
            bad("lr", "must be a finite number >= 0")
        if (
            not is_num(self.weight_decay)
            or not math.isfinite(self.weight_decay)
            or self.weight_decay < 0
        ):
            bad("weight_decay", "must be a finite number >= 0")
        if self.clip_grad_norm is not None and (
            not is_num(self.clip_grad_norm)
            or not math.isfinite(self.clip_grad_norm)
            or self.clip_grad_norm <= 0
        ):
            bad("clip_grad_norm", "must be None or a finite number > 0")
        if isinstance(self.schedule, str) and self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if isinstance(self.device, str) and not (
            self.device in DEVICES or self.device.startswith("cuda:")
        ):
            bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.estimator is not None and (not isinstance(self.estimator, str)
                                           or not self.estimator):
            bad("estimator", "must be None or a non-empty string")
        if self.keep_frac is not None and (
            not is_num(self.keep_frac) or not math.isfinite(self.keep_frac)
            or not 0 < self.keep_frac <= 1
        ):
            bad("keep_frac", "must be None or a number in (0, 1]")
        if self.keep_frac is not None and self.estimator is None:
            errors.append("keep_frac (needs an estimator)")
        for name in ("estimator_include", "estimator_exclude"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (tuple, list)) or not v
                                  or not all(isinstance(x, str) and x for x in v)):
                bad(name, "must be None or a non-empty list of module-name patterns")
        if self.sampler not in SAMPLERS:
            bad("sampler", f"must be one of {', '.join(SAMPLERS)}")
        if self.sampler_options and self.sampler == "uniform":
            errors.append("sampler_options (the uniform sampler takes none)")
        for name in ("amp", "augment", "measure_activations"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        for name in ("optimizer_kwargs", "model_options", "dataset_options",
                     "estimator_options", "sampler_options"):
            v = getattr(self, name)
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                bad(name, "must be a dict with string keys")
        for name in ("norm_mean", "norm_std"):
            v = getattr(self, name)
            if v is not None and (
                not isinstance(v, (tuple, list))
                or not v
                or not all(is_num(x) and math.isfinite(x) for x in v)
            ):
                bad(name, "must be None or a non-empty list of finite numbers")
        if (self.norm_mean is None) != (self.norm_std is None):
            errors.append("norm_mean/norm_std (give both or neither)")
        elif (
            isinstance(self.norm_mean, (tuple, list))
            and isinstance(self.norm_std, (tuple, list))
        ):
            if len(self.norm_mean) != len(self.norm_std):
                errors.append("norm_mean/norm_std (must have the same length)")
            if any(is_num(s) and s <= 0 for s in self.norm_std):
                bad("norm_std", "every entry must be > 0")
        if errors:
            raise ValueError("Invalid TrainConfig: " + "; ".join(errors))
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists, also inside option dicts, so a config
        compares equal to its own JSON round trip); ``from_dict`` inverts it."""
        return {name: _as_json_value(value) for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict such as ``to_dict()`` or a parsed ``config.json``.

        Unknown keys raise ``ValueError`` (typos should not be silently ignored); missing keys
        take their defaults. The result is validated.
        """
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig.from_dict needs a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig field(s): {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(names))}"
            )
        kwargs = dict(data)
        for name in _TUPLE_FIELDS:
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        for name in ("optimizer_kwargs", "model_options", "dataset_options",
                     "estimator_options", "sampler_options"):
            if isinstance(kwargs.get(name), dict):
                kwargs[name] = dict(kwargs[name])
        return cls(**kwargs).validate()

    def resume_differences(self, other: TrainConfig) -> list[str]:
        """Fields (other than :data:`RESUME_FREE_FIELDS`) whose values differ from ``other``.

        ``epochs`` may differ only with the "constant" schedule: with "step" and "cosine" the
        learning rate of every step depends on the total number of epochs.
        """
        a, b = self.to_dict(), other.to_dict()
        diffs = []
        for name in a:
            if name in RESUME_FREE_FIELDS or a[name] == b[name]:
                continue
            if name == "epochs" and a["schedule"] == b["schedule"] == "constant":
                continue
            diffs.append(f"{name}: {b[name]!r} -> {a[name]!r}")
        return diffs
