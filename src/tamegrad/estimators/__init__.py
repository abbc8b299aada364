"""Memory-saving gradient estimators: layers that keep less of their input for backward.

* :func:`convert` / :func:`revert` swap a model's layers for estimator layers in place and back
  (methods: :func:`available_methods`; new ones via :func:`register_method`);
* ``rad``: :class:`RADLinear`, :class:`RADConv2d` (randomized automatic differentiation);
* ``wtacrs`` (and the ablations ``crs``, ``topk``): :class:`WTACRSLinear`, with the
  gradient-norm cache :class:`GradNormCache` and :func:`batch_context` / :func:`norm_cache`;
* :class:`ActivationMeter` measures the bytes a step keeps for backward, and
  :func:`largest_batch_that_fits` finds the equal-memory batch size.

Library code: depends on torch only. See ``docs/ESTIMATORS.md``.
"""

from torch import nn

from ._registry import (
    EstimatorLayer,
    Method,
    available_methods,
    get_method,
    register_method,
)
from .batch_context import batch_context, norm_cache
from .convert import convert, converted_layers, is_converted, revert
from .lean import LEAN_FACTORIES, LeanAvgPool2d, MaskReLU
from .memory import (
    ActivationMeter,
    MemoryReport,
    largest_batch_that_fits,
    measure_activation_bytes,
    note_saved_bytes,
)
from .norm_cache import GradNormCache
from .rad import VARIANTS, RADConv2d, RADLinear, check_keep_frac, kept_count
from .wtacrs import BiasedEstimatorWarning, WTACRSLinear  # registers wtacrs, crs, topk

register_method(
    "rad",
    {nn.Linear: RADLinear.from_plain, nn.Conv2d: RADConv2d.from_plain},
    options={"keep_frac": 0.1, "variant": "different"},
    description="randomized autodiff: store keep_frac of each Linear/Conv2d input "
    "(variant: different | same | projection)",
)
register_method(
    "lean",
    LEAN_FACTORIES,
    options={},
    description="exact training with memory-lean ReLU (1-bit mask) and AvgPool2d (shape only)",
)

__all__ = [
    "VARIANTS",
    "ActivationMeter",
    "BiasedEstimatorWarning",
    "EstimatorLayer",
    "GradNormCache",
    "LeanAvgPool2d",
    "MaskReLU",
    "MemoryReport",
    "Method",
    "RADConv2d",
    "RADLinear",
    "WTACRSLinear",
    "available_methods",
    "batch_context",
    "check_keep_frac",
    "convert",
    "converted_layers",
    "get_method",
    "is_converted",
    "kept_count",
    "largest_batch_that_fits",
    "measure_activation_bytes",
    "norm_cache",
    "note_saved_bytes",
    "register_method",
    "revert",
]
