"""How far mL-BFGS's direction can exceed the gradient, per block (docs/MLBFGS.md, "The second
damping bound" and "Limits").

``python scripts/mlbfgs_direction_gain.py --lr 8.33e-3 --steps 1250 [--batch 8]
[--damping-bounds 1e-3 1.5] [--normalize]``

Trains the cpu profile's ResNet-18 (width 16, the 10,000-image CIFAR-10 subset, augmentation,
weight decay 2e-4, constant lr) with ``MLBFGS`` (the suite's options otherwise) and reports:

* for every block and step the gain ``|d| / |g|`` of its direction over its gradient (incl.
  weight decay); printed: the largest gain and the number of block-steps above 20x, per 50 steps,
  with the block holding the largest one;
* for every curvature pair the raw curvature ``mu = s.y / s.s`` before damping (the fraction
  below the damping's ``lo`` is what the batch-norm mechanism produces);
* the weights' norm every 50 steps.

An instrumented subclass reads what the optimizer computes; the optimizer itself is unchanged.
Needs ``$TAMEGRAD_DATA`` (or ``--data-dir``) with ``cifar10-jpeg.tar.gz``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tamegrad.distributed import DistContext
from tamegrad.experiments.mlbfgs import MLBFGS_OPTIONS
from tamegrad.optim import MLBFGS
from tamegrad.optim._lbfgs_blocks import Block, flat_grad
from tamegrad.train.build import build_data, build_model
from tamegrad.train.config import TrainConfig


class GainMeter(MLBFGS):
    """``MLBFGS`` that records each block's direction gain and each pair's raw curvature."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gains: list[tuple[float, int]] = []  # (|d| / |g|, block size) of the last step
        self.pair_mus: list[float] = []

    def _block_directions(self) -> dict[int, tuple[Tensor, bool, Tensor]]:
        out = super()._block_directions()
        self.gains = []
        by_index = {b.index: b for b in self.blocks}
        for index, (d, ok, _) in out.items():
            blk = by_index[index]
            group = self.param_groups[blk.group]
            g = flat_grad(blk.params, [p.grad for p in blk.params], group["weight_decay"],
                          group["maximize"])
            if ok and float(g.norm()) > 0:
                self.gains.append((float(d.norm() / g.norm()), blk.numel))
        return out

    def _update_curvature(self, blk: Block, st: dict[str, Any], g: Tensor) -> None:
        group = self.param_groups[blk.group]
        due = ("snap_param" in st and (st["block_step"] + 1) % group["update_period"] == 0)
        if due:  # the averages this step will have, as _update_curvature computes them
            beta = group["avg_decay"]
            w = torch.cat([p.detach().reshape(-1) for p in blk.params])
            avg_w = st["avg_param"].lerp(w, 1.0 - beta) if beta else w
            avg_g = st["avg_grad"].lerp(g, 1.0 - beta) if beta else g
            s, y = avg_w - st["snap_param"], avg_g - st["snap_grad"]
            self.pair_mus.append(float(torch.dot(s, y) / torch.dot(s, s)))
        super()._update_curvature(blk, st, g)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lr", type=float, default=8.33e-3)
    p.add_argument("--steps", type=int, default=1250)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--damping-bounds", type=float, nargs=2, default=None)
    p.add_argument("--normalize", action="store_true")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="cifar10-jpeg", data_dir=args.data_dir, model="resnet18",
                      width=16, train_subset=10_000, batch_size=args.batch, epochs=1,
                      schedule="constant", weight_decay=2e-4, augment=True, seed=0)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, DistContext.single(), torch.device("cpu"))
    model = build_model(cfg, data.dataset, torch.device("cpu"))
    options = dict(MLBFGS_OPTIONS, normalize=args.normalize)
    if args.damping_bounds is not None:
        options["damping_bounds"] = tuple(args.damping_bounds)
    opt = GainMeter(model.parameters(), lr=args.lr, weight_decay=cfg.weight_decay, **options)
    print(f"# mlbfgs direction gain: lr {args.lr}, batch {args.batch}, options {options}")
    worst, worst_size, above, step = 0.0, 0, 0, 0
    while step < args.steps:
        for batch in data.train.batches(step // len(data.train)):
            loss = F.cross_entropy(model(batch.x), batch.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            for gain, size in opt.gains:
                above += gain > 20
                if gain > worst:
                    worst, worst_size = gain, size
            if step % 50 == 0:
                norm = math.sqrt(sum(float(q.detach().pow(2).sum()) for q in model.parameters()))
                print(f"step {step}: loss {loss.item():.3f} |w| {norm:.2f} max gain {worst:.3g} "
                      f"(block of {worst_size} elements), block-steps above 20x: {above}",
                      flush=True)
                worst, worst_size, above = 0.0, 0, 0
            if step >= args.steps:
                break
    lo = (options.get("damping_bounds") or (float("nan"),))[0]
    mus = opt.pair_mus
    print(f"pairs: {len(mus)}; raw curvature below lo={lo}: {sum(m < lo for m in mus)}; "
          f"below 0: {sum(m < 0 for m in mus)}")


if __name__ == "__main__":
    main()
