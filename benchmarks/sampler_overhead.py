"""Sampler bookkeeping per step (draw + update) against a whole CPU training step, and the bytes
the distributed update all-gathers.

    python benchmarks/sampler_overhead.py [--n 50000] [--batch 128] [--reps 15] [--threads 2]
        [--big-n 1281167] [--ranks 2] [--dist-steps 200]

1. One process, interleaved round-robin (machine noise hits every row alike): a training step
   of ResNet-18 width 16 (batch 128, 3x32x32, SGD momentum, forward + backward + step) and
   ``--inner`` sampler steps of each strategy (next batch + ``update`` with that batch's losses;
   InfoBatch includes its per-epoch plan when an epoch ends). Prints median ms per step and the
   ratio to the training step. The pre-sample row counts the sampler's bookkeeping only; its
   scoring pass (a forward of B = 3b examples) is timed separately, since it is model cost.
2. ``--ranks`` gloo processes on this machine: bytes each rank sends and receives per step in
   ``update`` and the time of the exchange, from the sampler's own ``stats()``; then the bytes
   and a ring all-gather time model at 8 and 64 ranks (per-rank batch fixed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tamegrad.models import create_model
from tamegrad.sampling import InfoBatchSampler, PrioritySampler, TableSampler

from _common import interleaved_median_times

# assumed network for the extrapolation (not measured here): per-message latency and bandwidth
ALPHA_S = 50e-6  # 50 us per hop (TCP/gloo between machines)
BETA_BPS = 1.25e9  # 10 Gbit/s Ethernet


def _stepper(sampler: TableSampler, losses: torch.Tensor, inner: int) -> Callable[[], None]:
    """``inner`` sampler steps (draw + update) per call, restarting epochs as they end."""
    state: dict[str, Iterator] = {"it": iter(sampler)}

    def step() -> None:
        for _ in range(inner):
            try:
                idx, _w = next(state["it"])
            except StopIteration:
                sampler.set_epoch(sampler.epoch + 1)
                state["it"] = iter(sampler)
                idx, _w = next(state["it"])
            sampler.update(idx, losses[idx])

    return step


def _samplers(n: int, b: int) -> dict[str, TableSampler]:
    pre = PrioritySampler(n, b, presample=3, tau_threshold=0.0, steps_per_epoch=10**9)
    table = torch.rand(n, generator=torch.Generator().manual_seed(1))
    pre.set_scorer(lambda idx: table[idx])
    return {
        "priority, with replacement": PrioritySampler(n, b, steps_per_epoch=10**9),
        "priority, without replacement": PrioritySampler(n, b, replacement=False,
                                                         steps_per_epoch=10**9),
        "priority, pre-sample B=3b (bookkeeping)": pre,
        "infobatch (incl. per-epoch plan)": InfoBatchSampler(n, b, epochs=10**6, anneal_frac=0.0),
    }


def _train_step_fn(b: int) -> tuple[Callable[[], None], Callable[[], None]]:
    model = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    xs = torch.randn(3 * b, 3, 32, 32, generator=g)
    ys = torch.randint(0, 10, (3 * b,), generator=g)
    w = torch.ones(b)

    def train_step() -> None:
        model.train()
        per_ex = F.cross_entropy(model(x), y, reduction="none")
        opt.zero_grad(set_to_none=True)
        (w * per_ex).mean().backward()
        opt.step()

    def score_pass() -> None:
        with torch.no_grad():
            F.cross_entropy(model(xs), ys, reduction="none")

    return train_step, score_pass


def local_table(n: int, b: int, reps: int, inner: int, big_n: int) -> list[tuple[str, float]]:
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(max(n, big_n), generator=g) * 3
    train_step, score_pass = _train_step_fn(b)
    names, fns = ["ResNet-18 w16 train step (b=128)", "pre-sample scoring pass (3b forward)"], [
        train_step, score_pass]
    for name, s in _samplers(n, b).items():
        names.append(f"{name}, N={n}")
        fns.append(_stepper(s, losses, inner))
    if big_n:
        names.append(f"priority, with replacement, N={big_n}")
        fns.append(_stepper(PrioritySampler(big_n, b, steps_per_epoch=10**9), losses, inner))
    med = interleaved_median_times(fns, reps, warmup=2)
    out = []
    for i, (name, t) in enumerate(zip(names, med)):
        out.append((name, t / (inner if i >= 2 else 1)))
    return out


def _dist_worker(rank: int, world: int, port: int, n: int, b: int, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        s = PrioritySampler(n, b * world, steps_per_epoch=10**9)
        losses = torch.rand(n, generator=torch.Generator().manual_seed(0))
        it = iter(s)
        for _ in range(20):  # warm-up
            idx, _ = next(it)
            s.update(idx, losses[idx])
        s.set_epoch(1)
        it = iter(s)
        upd = 0.0
        for _ in range(steps):
            idx, _ = next(it)
            t0 = time.perf_counter()
            s.update(idx, losses[idx])
            upd += time.perf_counter() - t0
        st = s.stats()
        st["update_seconds"] = upd
        torch.save(st, f"{out}/r{rank}.pt")
    finally:
        dist.destroy_process_group()


def dist_stats(ranks: int, n: int, b: int, steps: int) -> dict:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_dist_worker, args=(ranks, port, n, b, steps, d), nprocs=ranks, join=True)
        return torch.load(f"{d}/r0.pt", weights_only=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--inner", type=int, default=20, help="sampler steps per timed call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--big-n", type=int, default=1_281_167, help="0 to skip")
    ap.add_argument("--ranks", type=int, default=2, help="0 to skip the gloo part")
    ap.add_argument("--dist-steps", type=int, default=200)
    ap.add_argument("--only-dist", action="store_true", help="skip the one-process table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  torch {torch.__version__}  "
          f"{platform.processor() or platform.machine()}  threads={args.threads}  "
          f"reps={args.reps}  inner={args.inner}")
    if not args.only_dist:
        rows = local_table(args.n, args.batch, args.reps, args.inner, args.big_n)
        base = rows[0][1]
        print("\n| what (per step) | median ms | / train step |\n|---|---:|---:|")
        for name, t in rows:
            print(f"| {name} | {1e3 * t:.3f} | {100 * t / base:.2f}% |")
    if args.ranks > 1:
        st = dist_stats(args.ranks, args.n, args.batch, args.dist_steps)
        steps = st["steps"]
        sent, recv = st["bytes_sent_per_step"], st["bytes_received_per_step"]
        upd_ms = 1e3 * st["update_seconds"] / steps
        print(f"\n{args.ranks} gloo ranks on this machine, per-rank batch {args.batch} "
              f"(global {args.batch * args.ranks}), {steps} steps, rank 0:")
        print(f"  bytes sent per step {sent:.0f}, received {recv:.0f}; update incl. "
              f"all-gather {upd_ms:.3f} ms/step; bookkeeping "
              f"{1e3 * st['bookkeeping_seconds'] / steps:.3f} ms/step")
        per_rank = sent  # header row + b rows (int32 index, float32 loss bits), 8 bytes each
        print("\nExtrapolation, per-rank batch fixed (ring all-gather, 1 collective per step, "
              f"assumed alpha={ALPHA_S * 1e6:.0f} us, beta={BETA_BPS / 1e9:.2f} GB/s):")
        print("| ranks | bytes sent/rank/step | bytes received/rank/step | model time/step |")
        print("|---:|---:|---:|---:|")
        for w in (args.ranks, 8, 64):
            t = (w - 1) * ALPHA_S + (w - 1) * per_rank / BETA_BPS
            print(f"| {w} | {per_rank:.0f} | {w * per_rank:.0f} | {1e3 * t:.2f} ms |")


if __name__ == "__main__":
    main()
