"""mL-BFGS: momentum-based, damped, block-wise stochastic L-BFGS (Niu et al., TMLR 2023,
arXiv 2307.13744), with its blocks spread over ``torch.distributed`` ranks.

Per block ``b`` (a list of parameters, flattened; see :mod:`._lbfgs_blocks`), at each step::

    g      = grad (+ weight_decay * w)            # coupled L2: the pairs see the decay too
    m_w    = beta * m_w + (1 - beta) * w          # m_w, m_g start at the first w, g
    m_g    = beta * m_g + (1 - beta) * g          # beta = avg_decay (0: m_w = w, m_g = g)
    every T steps of the block:  s = m_w - m_w(T steps ago),  y = m_g - m_g(T steps ago)
        mu = s.y / s.s; tau from the damping bounds (lo, hi), lowered further until
        y.y / s.y <= hi (ours, see _lbfgs_blocks.gradient_side_factor); y <- tau y + (1 - tau) s
        keep the newest M pairs
    d      = H g      (L-BFGS matrix of the pairs, H0 = (s.y / y.y) I of the newest; H = I
                       while the block has no pair: the warm-up is SGD with momentum)

and for every parameter (block or not; outside the blocks ``d = g``)::

    buf = momentum * buf + d   (buf = d at the first step);   w -= lr * buf

which is ``torch.optim.SGD(momentum, dampening=0)`` applied to ``d``. The order of the operations
above is the order of the code. The two-loop recursion is evaluated in compact matrix form.

Distributed (``torch.distributed`` initialised, or ``process_group`` given): blocks are assigned
to ranks largest first, each to the least-loaded rank; a rank keeps the averages and history of
its own blocks only and computes their directions; one ``all_gather`` per step (per device and
dtype) brings every direction to every rank, which then applies the same update. Gradients must
already be identical on all ranks (as after DDP's all-reduce); the optimizer does not average
them. Every term of the update travels through the gathered buffer or is computed identically on
every rank, so a 2-rank run equals a 1-rank run bit for bit on CPU.

What this optimizer cannot do:

* no line search and no closure re-evaluation: a closure is called once per step;
* ``history_size``, ``update_period`` and the blocks are fixed once a block has state;
* sparse gradients raise ``RuntimeError``; complex parameters are not supported;
* ``torch.compile(opt.step)`` is not supported (Python-int counters and host reads of the pair
  curvature, of the per-block finiteness flags and, with ``normalize``, of the global norm);
* a block whose gradient (incl. weight decay) has a NaN/inf is skipped for that step (no update
  of its parameters, no change of its curvature state; counted in ``nonfinite_skips``); the
  parameters outside the blocks behave like ``torch.optim.SGD`` (NaN goes through);
* under ``torch.distributed`` every rank must call ``step()``, with the same parameters having
  a gradient; the all-gather moves ``|model| / world_size`` elements per rank per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from tamegrad.distributed import DistContext
from tamegrad.optim import _mlbfgs_state as _st
from tamegrad.optim._common import closure_loss, foreach_heavy_ball, heavy_ball
from tamegrad.optim._lbfgs_blocks import (
    Block,
    assign_blocks,
    auto_min_block_numel,
    flat,
    flat_grad,
    lbfgs_direction,
    new_history,
    push_pair,
    split_blocks,
    split_flat,
)
from tamegrad.optim._validation import (
    check_flag,
    check_int_at_least,
    check_no_sparse,
    check_nonnegative,
    check_unit_interval,
)

__all__ = ["BLOCK_STATE_KEYS", "MLBFGS", "naive_stochastic_lbfgs", "register_all"]

BLOCK_STATE_KEYS = _st.BLOCK_STATE_KEYS
_BLOCK_MODES = ("auto", "group", "none")


class MLBFGS(Optimizer):
    """mL-BFGS: damped block-wise L-BFGS on moving averages, with heavy-ball momentum on top.

    Args:
        params: parameters or param groups. A group may override any keyword below except
            ``blocks``, ``min_block_numel`` and ``process_group``.
        lr: learning rate (>= 0). Default 0.1 (the paper's, with cosine decay).
        momentum: heavy-ball momentum on the directions, in [0, 1). Default 0.9.
        weight_decay: coupled L2 (>= 0), added to the gradient before the curvature pairs and
            the direction, for block and non-block parameters alike. Default 0.
        history_size: ``M``, pairs kept per block (int >= 1). Default 10.
        update_period: ``T``, steps between curvature pairs (int >= 1). Default 50.
        avg_decay: ``beta`` of the moving averages of weights and gradients, in [0, 1); 0 turns
            averaging off (pairs from the raw iterates and gradients T steps apart). Default
            0.999 (the public runs').
        damping_bounds: ``(lo, hi)`` with ``0 < lo < 1 < hi``: a pair's curvature ``s.y/s.s``
            is moved into ``[lo, hi]`` (the spec) and ``y.y/s.y`` below ``hi`` (ours: without
            it a pair of gradient noise can scale the step by 1e4); ``None``: no damping
            (pairs with ``s.y <= 1e-10`` dropped). Default ``(1e-3, 1.5)`` (the public code's
            ``hi``; ``lo`` is 0.01 there, lowered so a condition number of 1e3 fits undamped;
            see docs/MLBFGS.md).
        damping: caps ``tau <= 1 - damping``, in [0, 1) (the public code's ``tau0``; it damps
            even pairs already in range). Default 0 (no cap).
        normalize: divide all block directions by their joint global norm (public-code
            variant; off by default). Non-block parameters are never normalised.
        block: how a group is split into blocks when ``blocks`` is not given: ``"auto"`` (see
            ``min_block_numel``), ``"group"`` (one block per device/dtype of the group) or
            ``"none"`` (no curvature: SGD with momentum). Default ``"auto"``.
        min_block_numel: ``"auto"`` closes a block once it holds this many elements (in
            parameter order: a large weight ends its block, small tensors join the next layer,
            a small tail joins the previous block). Default ``None``:
            ``min(4096, ceil(group numel / 16))``.
        blocks: explicit blocks (lists of parameters, each inside one param group, same device
            and dtype). Parameters in no block get SGD with momentum.
        maximize: ascend instead of descend.
        foreach: multi-tensor (True) or per-tensor (False) momentum/update; None picks foreach.
        process_group: the group the blocks are spread over (default: the world group when
            ``torch.distributed`` is initialised, else a single process).

    State: per parameter ``momentum_buffer``; per block, in the state of its first parameter,
    the keys in :data:`BLOCK_STATE_KEYS` (only on the rank that owns the block). ``p.grad`` is
    never written; parameters whose ``grad`` is None are not updated.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        history_size: int = 10,
        update_period: int = 50,
        avg_decay: float = 0.999,
        damping_bounds: tuple[float, float] | None = (1e-3, 1.5),
        damping: float = 0.0,
        normalize: bool = False,
        block: str = "auto",
        min_block_numel: int | None = None,
        blocks: Sequence[Sequence[Tensor]] | None = None,
        maximize: bool = False,
        foreach: bool | None = None,
        process_group: Any = None,
    ) -> None:
        if min_block_numel is not None:
            check_int_at_least("min_block_numel", min_block_numel, 1)
        self._min_block_numel = min_block_numel
        self._ctx = DistContext.current(process_group)
        self._explicit: list[list[Tensor]] | None = None
        if blocks is not None:
            self._explicit = [list(b) for b in blocks]
            if any(len(b) == 0 for b in self._explicit):
                raise ValueError("Invalid blocks: every block needs at least one parameter")
        self._blocks: list[Block] = []
        self._param_block: dict[Tensor, tuple[int, int]] = {}  # param -> (block, position)
        self._loads = [0] * self._ctx.world_size
        self._layout: Any = None
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "history_size": history_size,
            "update_period": update_period,
            "avg_decay": avg_decay,
            "damping_bounds": damping_bounds,
            "damping": damping,
            "normalize": normalize,
            "block": block,
            "maximize": maximize,
            "foreach": foreach,
        }
        _validate_group(defaults)
        super().__init__(params, defaults)
        if self._explicit is not None:
            placed = {id(p) for b in self._blocks for p in b.params}
            missing = [i for i, b in enumerate(self._explicit) if id(b[0]) not in placed]
            if missing:
                raise ValueError(f"Invalid blocks: block {missing[0]} holds parameters that are "
                                 "in no param group")

    # -- groups and blocks ---------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated like the constructor's keywords) and make its blocks; a
        rejected group leaves the optimizer unchanged."""
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            _validate_group(group)
            self._make_blocks(len(self.param_groups) - 1, group)
        except Exception:
            self.param_groups.pop()
            raise

    def _block_lists(self, group: dict[str, Any]) -> list[list[Tensor]]:
        params = [p for p in group["params"] if p.requires_grad]
        if self._explicit is not None:
            ids = {id(p) for p in group["params"]}
            lists = []
            for k, b in enumerate(self._explicit):
                inside = [id(p) in ids for p in b]
                if all(inside):
                    lists.append(b)
                elif any(inside):
                    raise ValueError(f"Invalid blocks: block {k} spans several param groups")
            return lists
        if group["block"] == "none":
            return []
        if group["block"] == "group":
            return split_blocks(params, math.inf)  # type: ignore[arg-type]
        return split_blocks(params, self._min_block_numel or auto_min_block_numel(params))

    def _make_blocks(self, gi: int, group: dict[str, Any]) -> None:
        lists = self._block_lists(group)
        seen: set[int] = set()
        for plist in lists:
            if len({(p.device, p.dtype) for p in plist}) != 1:
                raise ValueError("Invalid blocks: the parameters of a block must share device "
                                 "and dtype")
            if any(torch.is_complex(p) for p in plist):
                raise ValueError("Invalid blocks: complex parameters are not supported")
            for p in plist:
                if p in self._param_block or id(p) in seen:
                    raise ValueError(f"Invalid blocks: a parameter of shape {tuple(p.shape)} is "
                                     "in two blocks")
                seen.add(id(p))
        new = [Block(len(self._blocks) + k, gi, list(plist)) for k, plist in enumerate(lists)]
        owners = assign_blocks([b.numel for b in new], self._ctx.world_size, self._loads)
        for blk, r in zip(new, owners):
            blk.owner = r
            for pos, p in enumerate(blk.params):
                self._param_block[p] = (blk.index, pos)
        self._blocks.extend(new)
        self._layout = None

    @property
    def blocks(self) -> list[Block]:
        """The blocks, in order (each with ``params``, ``numel``, ``group`` and ``owner``)."""
        return list(self._blocks)

    @property
    def dist_context(self) -> DistContext:
        return self._ctx

    @property
    def state_is_per_rank(self) -> bool:
        """True with more than one rank: each rank's :meth:`state_dict` holds only its own
        blocks' curvature state, so every rank must save and load its own (the trainer's
        per-rank checkpoint shards; ``tamegrad.train.extensions.is_per_rank``)."""
        return self._ctx.enabled

    def history_bytes(self) -> int:
        """Bytes of curvature state (averages, snapshots, pairs) held by this rank."""
        return _st.history_bytes(self)

    # -- step ----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None
    ) -> float | None:
        """One update; ``closure`` (re-evaluating the loss and gradients) is called once."""
        loss = closure_loss(closure)
        if self._ctx.world_size != len(self._loads):
            raise RuntimeError("MLBFGS was built for a different world size than this process's")
        local = self._block_directions()
        directions = _st.exchange(self, local) if self._ctx.enabled else local
        scale = _st.global_scale(self, directions)
        for group in self.param_groups:
            self._apply_group(group, directions, scale if group["normalize"] else None)
        return loss

    def _block_directions(self) -> dict[int, tuple[Tensor, bool, Tensor]]:
        """``{block: (direction, finite, |direction|^2 or 0)}`` for this rank's active blocks."""
        rank = self._ctx.rank
        todo: list[tuple[Block, Tensor]] = []
        for blk in self._blocks:
            if blk.owner != rank:
                continue
            grads = [p.grad for p in blk.params]
            if all(g is None for g in grads):
                continue
            check_no_sparse(type(self).__name__, [g for g in grads if g is not None])
            group = self.param_groups[blk.group]
            todo.append((blk, flat_grad(blk.params, grads, group["weight_decay"],
                                         group["maximize"])))
        if not todo:
            return {}
        # g.g is finite iff g is (or |g|^2 overflows, which is treated alike): one cheap pass
        finite = [math.isfinite(v) for v in torch.stack([torch.dot(g, g) for _, g in todo])
                  .tolist()]
        out: dict[int, tuple[Tensor, bool, Tensor]] = {}
        for (blk, g), ok in zip(todo, finite):
            st = self.state[blk.params[0]]
            if not ok:
                st["nonfinite_skips"] = st.get("nonfinite_skips", 0) + 1
                out[blk.index] = (g, False, g.new_zeros(()))
                continue
            self._update_curvature(blk, st, g)
            d = lbfgs_direction(g, st)
            sq = torch.dot(d, d) if self.param_groups[blk.group]["normalize"] else d.new_zeros(())
            out[blk.index] = (d, True, sq)
        return out

    def _update_curvature(self, blk: Block, st: dict[str, Any], g: Tensor) -> None:
        group = self.param_groups[blk.group]
        m, period, beta = group["history_size"], group["update_period"], group["avg_decay"]
        params = [p.detach() for p in blk.params]
        if "block_step" not in st:
            st.update(block_step=0, avg_param=flat(params).clone(), avg_grad=g.clone())
            st.update(new_history(m, blk.numel, params[0]))
            st.update(pairs_accepted=0, pairs_rejected=0)
            st.setdefault("nonfinite_skips", 0)
        else:
            if st["hist"].shape[0] != m:
                raise ValueError(f"Invalid history_size: {m} (block {blk.index} already holds "
                                 f"{st['hist'].shape[0]} slots; it cannot change mid-run)")
            avg_views = split_flat(st["avg_param"], params)  # no flat copy of the weights
            if beta == 0.0:
                torch._foreach_copy_(avg_views, params)
                st["avg_grad"].copy_(g)
            else:
                torch._foreach_lerp_(avg_views, params, 1.0 - beta)
                st["avg_grad"].lerp_(g, 1.0 - beta)
        st["block_step"] += 1
        if st["block_step"] % period != 0:
            return
        if "snap_param" in st:
            s = st["avg_param"] - st["snap_param"]
            y = st["avg_grad"] - st["snap_grad"]
            outcome = push_pair(st, s, y, group["damping_bounds"], 1.0 - group["damping"])
            st["pairs_accepted" if outcome.accepted else "pairs_rejected"] += 1
            st["snap_param"].copy_(st["avg_param"])
            st["snap_grad"].copy_(st["avg_grad"])
        else:
            st["snap_param"] = st["avg_param"].clone()
            st["snap_grad"] = st["avg_grad"].clone()

    def _apply_group(
        self,
        group: dict[str, Any],
        directions: dict[int, tuple[Tensor, bool, Tensor]],
        scale: float | None,
    ) -> None:
        params: list[Tensor] = []
        dirs: list[Tensor] = []
        block_views: dict[int, list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            where = self._param_block.get(p)
            if where is None:
                check_no_sparse(type(self).__name__, (p.grad,))
                d = p.grad if not group["maximize"] else -p.grad
                if group["weight_decay"] != 0:
                    d = d.add(p, alpha=group["weight_decay"])
            else:
                b, pos = where
                entry = directions.get(b)
                if entry is None or not entry[1]:
                    continue
                if b not in block_views:
                    full = entry[0] if scale is None else entry[0] * scale
                    block_views[b] = split_flat(full, self._blocks[b].params)
                d = block_views[b][pos]
            params.append(p)
            dirs.append(d)
        _heavy_ball(self.state, params, dirs, float(group["lr"]), group["momentum"],
                    group["foreach"] is not False)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """This rank's state: momentum buffers of all parameters and the curvature state of the
        blocks this rank owns, plus an ``"mlbfgs"`` entry (layout ``"shard"``, rank, world
        size, blocks as parameter indices, owners). Every rank must save its own."""
        return _st.state_dict(self, super().state_dict())

    def consolidate_state_dict(self, to: int = 0) -> dict[str, Any] | None:
        """Collective (every rank must call it): the full state (every block's curvature state,
        layout ``"full"``) on rank ``to``, None on the others. A full state loads under any
        world size (each rank keeps the blocks it owns there)."""
        return _st.consolidate(self, super().state_dict(), to)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``"shard"`` saved by this same rank and world size, or a ``"full"`` state
        (from :meth:`consolidate_state_dict` or a single process) under any world size."""
        super().load_state_dict(_st.prepare_load(self, state_dict))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_mlbfgs_layout"] = _st.layout_meta(self)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        layout = state.pop("_mlbfgs_layout", None)
        super().__setstate__(state)
        if layout is not None:
            _st.restore_layout(self, layout)


def _heavy_ball(
    state: Any, params: list[Tensor], dirs: list[Tensor], lr: float, momentum: float,
    foreach: bool,
) -> None:
    """``buf = momentum * buf + d`` (``buf = d`` at first), ``w -= lr * buf``: the operations
    of ``torch.optim.SGD(momentum, dampening=0)`` in its order (equal bit for bit)."""
    if not params:
        return
    if momentum != 0.0:
        bufs = [state[p].get("momentum_buffer") for p in params]
        if foreach:
            dirs = foreach_heavy_ball(dirs, bufs, momentum=momentum, dampening=0.0,
                                      nesterov=False)
        else:
            for j, d in enumerate(dirs):
                dirs[j], bufs[j] = heavy_ball(d, bufs[j], momentum=momentum, dampening=0.0,
                                              nesterov=False)
        for p, buf in zip(params, bufs):
            state[p]["momentum_buffer"] = buf
    if foreach:
        torch._foreach_add_(params, dirs, alpha=-lr)
    else:
        for p, d in zip(params, dirs):
            p.add_(d, alpha=-lr)


def _validate_group(group: dict[str, Any]) -> None:
    check_nonnegative("lr", group["lr"])
    group["momentum"] = check_unit_interval("momentum", group["momentum"])
    group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
    check_int_at_least("history_size", group["history_size"], 1)
    check_int_at_least("update_period", group["update_period"], 1)
    group["avg_decay"] = check_unit_interval("avg_decay", group["avg_decay"])
    group["damping"] = check_unit_interval("damping", group["damping"])
    bounds = group["damping_bounds"]
    if bounds is not None:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError(f"Invalid damping_bounds: {bounds!r} (expected (lo, hi) or None)")
        lo = check_nonnegative("damping_bounds[0]", bounds[0])
        hi = check_nonnegative("damping_bounds[1]", bounds[1])
        if not 0.0 < lo < 1.0 < hi:
            raise ValueError(f"Invalid damping_bounds: {tuple(bounds)} (need 0 < lo < 1 < hi)")
        group["damping_bounds"] = (lo, hi)
    if group["block"] not in _BLOCK_MODES:
        raise ValueError(f"Invalid block: {group['block']!r} (expected one of {_BLOCK_MODES})")
    check_flag("normalize", group["normalize"])
    check_flag("maximize", group["maximize"])
    check_flag("foreach", group["foreach"], allow_none=True)


def naive_stochastic_lbfgs(
    params: ParamsT,
    lr: float = 1.0,
    weight_decay: float = 0.0,
    *,
    history_size: int = 10,
    update_period: int = 1,
    block: str = "group",
    min_block_numel: int | None = None,
    blocks: Sequence[Sequence[Tensor]] | None = None,
    maximize: bool = False,
    process_group: Any = None,
) -> MLBFGS:
    """Naive stochastic L-BFGS, the baseline mL-BFGS fixes: pairs from consecutive iterates and
    mini-batch gradients (no averaging), no damping (pairs with ``s.y <= 1e-10`` dropped), no
    momentum, unit ``lr`` by default; one block per param group unless told otherwise."""
    return MLBFGS(
        params, lr=lr, momentum=0.0, weight_decay=weight_decay, history_size=history_size,
        update_period=update_period, avg_decay=0.0, damping_bounds=None, damping=0.0,
        block=block, min_block_numel=min_block_numel, blocks=blocks, maximize=maximize,
        process_group=process_group,
    )


def register_all(register: Callable[..., Any]) -> None:
    """Register ``mlbfgs`` and ``lbfgs-stochastic`` with ``tamegrad.optim.registry.register``."""
    register("mlbfgs", MLBFGS, "mL-BFGS: momentum-averaged, damped, block-wise stochastic L-BFGS "
             "(paper: lr 0.1 cosine, momentum 0.9, M 10, T 50)")
    register("lbfgs-stochastic", naive_stochastic_lbfgs,
             "naive stochastic L-BFGS (no averaging, damping or momentum; mL-BFGS's baseline)")
