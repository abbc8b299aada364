"""Distributed exchange and checkpoint layout of :class:`tamegrad.optim.MLBFGS`.

Exchange: for each (device, dtype) of the blocks, every rank fills one row of ``row_len``
elements: the directions of the blocks it owns (in block order, at fixed offsets), then two header
entries per owned block, ``[1 if the block produced a finite direction this step else 0,
|direction|^2]``. One ``all_gather`` gives every rank every row; each rank then reads every
block's direction from its owner's row. ``row_len`` is the largest rank's share, so a rank that
owns no block (more ranks than blocks) still sends a (zero) row.

Checkpoints: ``state_dict()`` carries an ``"mlbfgs"`` entry ``{version, layout, world_size,
rank, blocks (global parameter indices per block), owners}``. ``layout`` is ``"full"`` when every
block's state is inside (single process, or :func:`consolidate`) and ``"shard"`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from tamegrad.distributed import DistContext
from tamegrad.optim._lbfgs_blocks import Block

if TYPE_CHECKING:
    from tamegrad.optim.mlbfgs import MLBFGS

#: Keys of a block's curvature state (held in the state of the block's first parameter).
BLOCK_STATE_KEYS = (
    "block_step", "avg_param", "avg_grad", "snap_param", "snap_grad", "hist", "sy", "yy",
    "hist_head", "hist_count", "pairs_accepted", "pairs_rejected", "nonfinite_skips",
)
_VERSION = 1

Directions = dict[int, tuple[Tensor, bool, Tensor]]


@dataclass
class _Layout:
    device: torch.device
    dtype: torch.dtype
    row_len: int
    blocks: list[Block]
    offset: dict[int, int]
    header: dict[int, int]


def _layouts(opt: MLBFGS) -> list[_Layout]:
    if opt._layout is not None:
        return opt._layout  # type: ignore[no-any-return]
    world = opt._ctx.world_size
    keys: dict[tuple[torch.device, torch.dtype], list[Block]] = {}
    for blk in opt._blocks:
        keys.setdefault(blk.key, []).append(blk)
    layouts = []
    for (device, dtype), blks in keys.items():
        offset, header = {}, {}
        lengths = []
        for r in range(world):
            mine = [b for b in blks if b.owner == r]
            pos = 0
            for b in mine:
                offset[b.index] = pos
                pos += b.numel
            for b in mine:
                header[b.index] = pos
                pos += 2
            lengths.append(pos)
        layouts.append(_Layout(device, dtype, max(1, *lengths), blks, offset, header))
    opt._layout = layouts
    return layouts


def exchange(opt: MLBFGS, local: Directions) -> Directions:
    """Every block's (direction, finite, |d|^2) on every rank, from the owners' ``local``."""
    ctx: DistContext = opt._ctx
    out: Directions = {}
    for lay in _layouts(opt):
        row = torch.zeros(lay.row_len, device=lay.device, dtype=lay.dtype)
        for blk in lay.blocks:
            entry = local.get(blk.index)
            if blk.owner != ctx.rank or entry is None or not entry[1]:
                continue
            off, h = lay.offset[blk.index], lay.header[blk.index]
            row[off : off + blk.numel].copy_(entry[0])
            row[h] = 1.0
            row[h + 1] = entry[2]
        rows = ctx.all_gather(row)
        owners = torch.tensor([b.owner for b in lay.blocks], device=lay.device)
        heads = torch.tensor([lay.header[b.index] for b in lay.blocks], device=lay.device)
        flags = rows[owners, heads].tolist()
        for blk, flag in zip(lay.blocks, flags):
            r, off, h = blk.owner, lay.offset[blk.index], lay.header[blk.index]
            out[blk.index] = (rows[r, off : off + blk.numel], flag == 1.0, rows[r, h + 1])
    return out


def global_scale(opt: MLBFGS, directions: Directions) -> float | None:
    """``1 / |d|`` over the blocks of ``normalize`` groups, summed in block order on every rank
    (the same bits everywhere); None when no group normalises or the norm is 0."""
    total, used = 0.0, False
    for blk in opt._blocks:
        if not opt.param_groups[blk.group]["normalize"]:
            continue
        entry = directions.get(blk.index)
        if entry is not None and entry[1]:
            total += float(entry[2])
            used = True
    if not used or not (total > 0.0 and math.isfinite(total)):
        return None
    return 1.0 / math.sqrt(total)


def history_bytes(opt: MLBFGS) -> int:
    total = 0
    for blk in opt._blocks:
        st = opt.state.get(blk.params[0], {})
        for k in BLOCK_STATE_KEYS:
            v = st.get(k)
            if isinstance(v, Tensor):
                total += v.numel() * v.element_size()
    return total


# -- checkpoint layout -------------------------------------------------------------------------


def _param_indices(opt: MLBFGS) -> dict[int, int]:
    index: dict[int, int] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            index.setdefault(id(p), len(index))
    return index


def layout_meta(opt: MLBFGS) -> dict[str, Any]:
    index = _param_indices(opt)
    world = opt._ctx.world_size
    return {
        "version": _VERSION,
        "layout": "full" if world == 1 else "shard",
        "world_size": world,
        "rank": opt._ctx.rank,
        "blocks": [[index[id(p)] for p in b.params] for b in opt._blocks],
        "groups": [b.group for b in opt._blocks],
        "owners": [b.owner for b in opt._blocks],
        "min_block_numel": opt._min_block_numel,
    }


def state_dict(opt: MLBFGS, sd: dict[str, Any]) -> dict[str, Any]:
    sd["mlbfgs"] = layout_meta(opt)
    return sd


def consolidate(opt: MLBFGS, sd: dict[str, Any], to: int) -> dict[str, Any] | None:
    ctx: DistContext = opt._ctx
    if not 0 <= to < ctx.world_size:
        raise ValueError(f"Invalid to: {to} (world size {ctx.world_size})")
    meta = layout_meta(opt)
    meta["layout"] = "full"
    if not ctx.enabled:
        sd["mlbfgs"] = meta
        return sd
    first = {b.index: meta["blocks"][b.index][0] for b in opt._blocks}
    mine = {}
    for blk in opt._blocks:
        st = sd["state"].get(first[blk.index])
        if blk.owner == ctx.rank and st is not None:
            mine[first[blk.index]] = {
                k: (v.detach().cpu() if isinstance(v, Tensor) else v)
                for k, v in st.items() if k in BLOCK_STATE_KEYS
            }
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.rank == to else None
    dist.gather_object(mine, gathered, dst=ctx._global_rank(to), group=ctx.group)
    if gathered is None:
        return None
    state = {k: dict(v) for k, v in sd["state"].items()}
    for piece in gathered:
        for idx, block_state in piece.items():
            state.setdefault(idx, {}).update(block_state)
    return {"state": state, "param_groups": sd["param_groups"], "mlbfgs": meta}


def prepare_load(opt: MLBFGS, sd: dict[str, Any]) -> dict[str, Any]:
    meta = sd.get("mlbfgs")
    if not isinstance(meta, dict):
        raise ValueError("Invalid state_dict: it has no 'mlbfgs' entry (not saved by MLBFGS)")
    mine = layout_meta(opt)
    if meta.get("version") != _VERSION or meta["blocks"] != mine["blocks"]:
        raise ValueError(
            "Invalid state_dict: its blocks differ from this optimizer's (another model, other "
            f"param groups or block settings): saved {len(meta['blocks'])} blocks, "
            f"here {len(mine['blocks'])}"
        )
    if meta["layout"] == "shard" and (
        meta["world_size"] != mine["world_size"] or meta["rank"] != mine["rank"]
        or meta["owners"] != mine["owners"]
    ):
        raise ValueError(
            f"Invalid state_dict: a shard saved by rank {meta['rank']} of {meta['world_size']} "
            f"cannot be loaded by rank {mine['rank']} of {mine['world_size']}; load the shard "
            "each rank saved, or save consolidate_state_dict() to change the world size"
        )
    rank = opt._ctx.rank
    state = {}
    foreign = {
        meta["blocks"][b.index][0] for b in opt._blocks if b.owner != rank
    }
    for idx, st in sd["state"].items():
        if idx in foreign:
            st = {k: v for k, v in st.items() if k not in BLOCK_STATE_KEYS}
        state[idx] = st
    return {"state": state, "param_groups": sd["param_groups"]}


def restore_layout(opt: MLBFGS, meta: dict[str, Any]) -> None:
    """Rebuild the blocks after unpickling (deepcopy / pickle): same blocks and owners; the
    process group is the current default one (or none)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    ctx = DistContext.current()
    if ctx.world_size != meta["world_size"]:
        ctx = DistContext.single() if meta["world_size"] == 1 else ctx
    opt._ctx = ctx
    opt._min_block_numel = meta["min_block_numel"]
    opt._explicit = None
    opt._layout = None
    opt._blocks = []
    opt._param_block = {}
    opt._loads = [0] * meta["world_size"]
    for i, (idx, gi, owner) in enumerate(zip(meta["blocks"], meta["groups"], meta["owners"])):
        blk = Block(i, gi, [params[j] for j in idx], owner)
        opt._blocks.append(blk)
        opt._loads[owner] += blk.numel
        for pos, p in enumerate(blk.params):
            opt._param_block[p] = (i, pos)
