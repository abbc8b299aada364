"""WTA-CRS linear layers: store a sample of the input's rows (tokens), unbiased weight gradient.

For ``Z = H W^T + b`` with ``H`` the ``n x d_in`` input (rows = the tokens of the flattened
batch x sequence), training stores ``H`` only for ``dW = dZ^T H``. :class:`WTACRSLinear`
keeps ``k = max(ceil(keep_frac * n), min_rows)`` rows chosen with probabilities
``p_i ~ ||h_i|| * ||dz_i||`` (winner-take-all column-row sampling, Liu et al., NeurIPS 2023;
sampler in ``_crs.py``): the winners exactly, the rest drawn with replacement and reweighted,
so ``E[dW_hat] = dW``. The forward output, the input gradient (bit-identical to
``nn.Linear``'s) and the bias gradient are exact.

``||dz_i||`` is unknown in forward, when the rows are chosen: the layer uses the norms the
:class:`~tamegrad.estimators.norm_cache.GradNormCache` recorded on the example's last visit
(the trainer says which examples are in the batch with
:func:`~tamegrad.estimators.batch_context.batch_context`). Unbiased on every path:

* first visit (or ``cache=False``): ``p_i ~ ||h_i||`` (any positive probabilities are
  unbiased; only the variance suffers);
* examples of the batch not seen yet get the mean of the seen ones' norms;
* stale norms are floored at ``norm_floor`` x their mean, so a row whose gradient was 0 last
  time still has a positive probability (no row with a nonzero input has probability 0);
* winners holding almost all the mass, and ``|C| = 0``: see ``_crs.py``.

Saved for backward (through ``save_for_backward``, so the memory meter sees it): the ``m <= k``
distinct kept rows (``m x d_in`` in the input dtype), their int64 indices, their weights
(float32, float64 for float64 inputs) and the batch's example indices (int64, ``B`` of them):
at most ``k * (d_in * itemsize + 12) + 8 B`` bytes against ``n * d_in * itemsize`` for
``nn.Linear``. When ``k >= n`` (e.g. fewer rows than ``min_rows``) the layer keeps the whole
input and the weight gradient is exact.

Plain ``nn.Linear`` behaviour (nothing sampled, nothing extra stored) in ``eval()``, under
``no_grad`` and with a frozen weight. Under autocast the input, weight and bias are cast to
the autocast dtype first (as autocast does for ``F.linear``). Limits: the input's first
dimension must be the batch when a cache is used (``(B, ..., d_in)``, positions = the product
of the middle dimensions); double backward is not supported; the draws cost a few
device-to-host synchronisations per layer and step; ``topk`` is biased on purpose.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._crs import MODES, Mode, select_rows
from ._registry import EstimatorLayer, register_method
from .norm_cache import GradNormCache
from .rad import check_keep_frac, kept_count

__all__ = ["BiasedEstimatorWarning", "WTACRSLinear", "row_scores"]

MISSING_CONTEXT = ("error", "input_norm")
# the paper's layers: attention output projection and feed-forward layers, not q/k/v.
# tamegrad's gpt: blocks.N.attn.proj, blocks.N.mlp.fc, blocks.N.mlp.proj;
# Hugging Face BERT: ...attention.output.dense, ...intermediate.dense, ...output.dense
DEFAULT_INCLUDE = (
    r"re:(.*\.)?(attn\.proj|mlp\.fc|mlp\.proj|attention\.output\.dense|intermediate\.dense"
    r"|output\.dense)",
)


class BiasedEstimatorWarning(UserWarning):
    """A layer whose weight gradient is biased on purpose (the ``topk`` ablation)."""


def _check_options(keep_frac: object, min_rows: object, mode: object, missing_context: object,
                   norm_floor: object, cache: object, norm_cache: object = None) -> None:
    check_keep_frac(keep_frac)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise ValueError(f"Invalid min_rows: {min_rows!r} (must be an integer >= 1)")
    if mode not in MODES:
        raise ValueError(f"Invalid mode: {mode!r} (expected one of {', '.join(MODES)})")
    if missing_context not in MISSING_CONTEXT:
        raise ValueError(
            f"Invalid missing_context: {missing_context!r} (expected 'error' or 'input_norm')"
        )
    if isinstance(norm_floor, bool) or not isinstance(norm_floor, (int, float)) or not (
        0.0 < float(norm_floor) <= 1.0  # NaN fails the comparison
    ):
        raise ValueError(f"Invalid norm_floor: {norm_floor!r} (must be in (0, 1])")
    if not isinstance(cache, bool):
        raise ValueError(f"Invalid cache: {cache!r} (expected True or False)")
    if norm_cache is not None and not isinstance(norm_cache, GradNormCache):
        raise ValueError(f"Invalid norm_cache: {norm_cache!r} (expected a GradNormCache or None)")


def row_scores(input_norms: Tensor, grad_norms: Tensor | None, norm_floor: float) -> Tensor:
    """Sampling scores ``||h_i|| * g_i`` (float64) with every row of nonzero input positive.

    ``grad_norms``: last-visit output-gradient norms, NaN where unknown (``None``: none
    known). Unknown entries take the mean of the known ones; all entries are floored at
    ``norm_floor`` x that mean; with nothing known (or a zero mean) ``g_i = 1``.
    """
    h = input_norms.to(torch.float64)
    g = None
    if grad_norms is not None:
        gn = grad_norms.to(device=h.device, dtype=torch.float64).reshape(h.shape)
        known = ~torch.isnan(gn)
        if bool(known.any()):
            mean = gn[known].mean()
            if float(mean) > 0:
                g = torch.where(known, gn, mean).clamp_min(norm_floor * mean)
    s = h if g is None else h * g
    tiny = torch.finfo(torch.float64).tiny
    return torch.where(h > 0, s.clamp_min(tiny), torch.zeros_like(s))


class _SampledLinear(torch.autograd.Function):
    """``F.linear`` whose backward forms ``dW`` from the kept rows only (``kept=None``: from
    the whole input) and records the output-gradient row norms in the cache."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, kept: Tensor | None,
        idx: Tensor | None, weights: Tensor | None, examples: Tensor | None,
        cache: GradNormCache | None, key: str,
    ) -> Tensor:
        ctx.exact = kept is None
        ctx.record = cache is not None and examples is not None
        saved: list[Tensor | None] = [x if kept is None else kept, weight]
        if kept is not None:
            saved += [idx, weights]
        if ctx.record:
            saved.append(examples)
        ctx.save_for_backward(*saved)
        ctx.cache = cache if ctx.record else None
        ctx.key = key
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        rows, weight = saved[0], saved[1]
        go = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = go.mm(weight).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            if ctx.exact:
                grad_w = go.t().mm(rows.reshape(-1, rows.shape[-1]))
            else:
                idx, wts = saved[2], saved[3]
                sel = go.index_select(0, idx)
                sel = (sel.to(wts.dtype) * wts.unsqueeze(1)).to(go.dtype)
                grad_w = sel.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = go.sum(0)
        if ctx.record:
            examples = saved[-1]
            acc = torch.promote_types(go.dtype, torch.float32)
            norms = torch.linalg.vector_norm(go, dim=1, dtype=acc)
            ctx.cache.update(ctx.key, examples, norms.view(examples.numel(), -1))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


class WTACRSLinear(EstimatorLayer, nn.Linear):
    """``nn.Linear`` that stores a WTA-CRS sample of its input rows (see the module doc).

    Options: ``keep_frac`` in (0, 1] (``k = max(ceil(keep_frac * n), min_rows)`` rows of
    ``n``); ``mode`` ``"wtacrs"`` (adaptive winners + sampling), ``"crs"`` (sampling only) or
    ``"topk"`` (the ``k`` top-scored rows unweighted: biased, warns with
    :class:`BiasedEstimatorWarning`); ``cache``: use the gradient-norm cache (needs a
    :func:`batch_context` in training forward passes); ``missing_context``: what a cached layer
    does without one, ``"error"`` (``RuntimeError``) or ``"input_norm"`` (first-visit scores
    ``||h_i||``, nothing recorded; unbiased); ``norm_floor``: floor of the cached norms,
    relative to their mean; ``norm_cache``: the :class:`GradNormCache` to use (default: the one
    :func:`norm_cache` creates for the model). Same parameters and ``state_dict`` keys as
    ``nn.Linear``.
    """

    plain_type = nn.Linear
    estimator_method = "wtacrs"
    uses_batch_context = True
    _estimator_attrs = (
        "keep_frac", "min_rows", "mode", "cache", "missing_context", "norm_floor",
        "batch_examples", "norm_cache", "cache_key", "uses_norm_cache", "last_winners",
    )

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
        dtype: Any = None, *, keep_frac: float = 0.3, min_rows: int = 10,
        mode: Mode = "wtacrs", cache: bool = True, missing_context: str = "error",
        norm_floor: float = 0.01, norm_cache: GradNormCache | None = None,
    ) -> None:
        _check_options(keep_frac, min_rows, mode, missing_context, norm_floor, cache, norm_cache)
        super().__init__(in_features, out_features, bias, device, dtype)
        self._configure(keep_frac, min_rows, mode, cache, missing_context, norm_floor, norm_cache)

    def _configure(self, keep_frac: float, min_rows: int, mode: Mode, cache: bool,
                   missing_context: str, norm_floor: float,
                   norm_cache: GradNormCache | None) -> None:
        self.keep_frac = float(keep_frac)
        self.min_rows = int(min_rows)
        self.mode: Mode = mode
        self.cache = cache
        self.uses_norm_cache = cache
        self.missing_context = missing_context
        self.norm_floor = float(norm_floor)
        self.batch_examples: Tensor | None = None
        self.norm_cache: GradNormCache | None = norm_cache if cache else None
        self.cache_key = ""
        self.last_winners = -1  # |C| of the last draw (-1: none yet / exact path)
        if mode == "topk":
            warnings.warn(
                "WTACRSLinear mode='topk' keeps the top-k rows without reweighting: its weight "
                "gradient is BIASED (an ablation, not an estimator to train with)",
                BiasedEstimatorWarning,
                stacklevel=3,
            )

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, keep_frac: float = 0.3, min_rows: int = 10,
                    mode: Mode = "wtacrs", cache: bool = True, missing_context: str = "error",
                    norm_floor: float = 0.01, norm_cache: GradNormCache | None = None,
                    ) -> WTACRSLinear:
        """A WTA-CRS layer sharing ``linear``'s parameters (``to_plain()`` goes back)."""
        _check_options(keep_frac, min_rows, mode, missing_context, norm_floor, cache, norm_cache)
        new = cls._adopt(linear)
        new._configure(keep_frac, min_rows, mode, cache, missing_context, norm_floor, norm_cache)
        return new

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, keep_frac={self.keep_frac}, mode={self.mode!r}, "
            f"min_rows={self.min_rows}, cache={self.cache}"
        )

    def estimator_extra_bytes(self) -> int:
        """Bytes of this layer's gradient-norm table (the memory meter's extra bytes)."""
        if self.norm_cache is None or not self.cache:
            return 0
        return self.norm_cache.nbytes(self.cache_key)

    def num_kept(self, rows: int) -> int:
        """``k`` for an input of ``rows`` rows (``>= rows`` means: keep all, exact)."""
        return max(kept_count(self.keep_frac, rows), self.min_rows)

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and torch.is_grad_enabled() and self.weight.requires_grad):
            return F.linear(input, self.weight, self.bias)
        x: Tensor = input
        w: Tensor = self.weight
        b: Tensor | None = self.bias
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            dt = torch.get_autocast_dtype(dev)
            x, w = x.to(dt), w.to(dt)
            b = b.to(dt) if b is not None else None
            with torch.autocast(dev, enabled=False):
                return self._sampled(x, w, b)
        return self._sampled(x, w, b)

    def _examples(self, x: Tensor) -> Tensor | None:
        if not self.cache:
            return None
        ex = self.batch_examples
        if ex is None:
            if self.missing_context == "error":
                raise RuntimeError(
                    f"WTACRSLinear {self.cache_key or '(unnamed)'}: training forward without a "
                    "batch context. Wrap it in `with tamegrad.estimators.batch_context(model, "
                    "example_indices): ...`, or build the layer with cache=False or "
                    "missing_context='input_norm' (input-norm-only sampling)."
                )
            return None
        if self.norm_cache is None:
            raise RuntimeError(
                f"WTACRSLinear {self.cache_key or '(unnamed)'}: no gradient-norm cache bound; "
                "enter batch_context(model, ...) with the model that holds this layer"
            )
        if x.dim() < 2 or x.shape[0] != ex.numel():
            raise ValueError(
                f"WTACRSLinear {self.cache_key}: input of shape {tuple(x.shape)} does not "
                f"start with the batch of {ex.numel()} examples given to batch_context"
            )
        return ex

    def _sampled(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        examples = self._examples(x)
        cache = self.norm_cache if examples is not None else None
        n = x.numel() // max(self.in_features, 1)
        k = self.num_kept(n)
        kept = idx = wts = None
        if k < n:
            with torch.no_grad():
                x2 = x.detach().reshape(n, self.in_features)
                acc = torch.promote_types(x.dtype, torch.float32)
                hn = torch.linalg.vector_norm(x2, dim=1, dtype=acc)
                zero = hn == 0
                if bool(zero.any()):  # a tiny nonzero row may underflow to norm 0
                    hn[zero] = (x2[zero] != 0).any(dim=1).to(acc) * torch.finfo(acc).tiny
                g = None
                if cache is not None and examples is not None:
                    g = cache.lookup(self.cache_key, examples, n // examples.numel())
                scores = row_scores(hn, g, self.norm_floor)
                if bool(torch.isfinite(scores).all()):
                    idx, weights, self.last_winners = select_rows(scores, k, self.mode)
                    kept = x2.index_select(0, idx)
                    wdt = torch.float64 if x.dtype == torch.float64 else torch.float32
                    wts = weights.to(wdt)
        if kept is None:
            self.last_winners = -1
        out: Tensor = _SampledLinear.apply(
            x, w, b, kept, idx, wts, examples, cache, self.cache_key
        )
        return out


def _factory(mode: Mode) -> Any:
    def build(linear: nn.Linear, **options: Any) -> WTACRSLinear:
        return WTACRSLinear.from_linear(linear, mode=mode, **options)

    return build


_OPTIONS: dict[str, Any] = {"keep_frac": 0.3, "min_rows": 10, "cache": True,
                            "missing_context": "error", "norm_floor": 0.01, "norm_cache": None}
_DESCRIPTIONS = {
    "wtacrs": "WTA-CRS: winners exact + column-row sampling of the rest (unbiased)",
    "crs": "plain column-row sampling with replacement (unbiased; ablation of WTA-CRS)",
    "topk": "deterministic top-k rows, unweighted (BIASED ablation; warns)",
}
for _mode in ("wtacrs", "crs", "topk"):
    register_method(
        _mode,
        {nn.Linear: _factory(_mode)},  # type: ignore[arg-type]
        default_include=DEFAULT_INCLUDE,
        options=_OPTIONS,
        description=_DESCRIPTIONS[_mode],
        overwrite=True,
    )
