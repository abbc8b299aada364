"""Activation memory and step time of WTA-CRS on tamegrad's ``gpt``, against the alternatives.

    python benchmarks/estimators_wtacrs.py [--batch 32] [--context 128] [--width 128]
        [--layers 4] [--heads 4] [--reps 7] [--threads 1] [--max-batch 1024]

Variants, measured side by side in one process on the same model (float32, CPU):
exact training; WTA-CRS at keep_frac 0.3 and 0.1 and plain CRS at 0.3 on the paper's layers
(``attn.proj``, ``mlp.fc``, ``mlp.proj``); WTA-CRS 0.3 on the feed-forward layers only (a
diagnostic: here SDPA keeps its output, which is ``attn.proj``'s input, so converting
``attn.proj`` frees nothing); ``torch.utils.checkpoint`` around every block (reentrant, so the
block inputs it keeps go through ``save_for_backward`` and the meter counts them).

* activation bytes: peak of the bytes saved for backward, measured by
  :class:`tamegrad.estimators.ActivationMeter` over forward AND backward (so checkpointing's
  recomputation of one block during backward is counted); parameters excluded. The
  gradient-norm cache (CPU, bf16, persistent) is reported separately as ``cache``.
* step time: median over ``--reps`` interleaved rounds of forward + backward + AdamW step.
* batch at budget: the largest batch whose activation bytes fit the exact step's bytes at
  ``--batch`` (``largest_batch_that_fits``), i.e. how much larger a batch each variant allows.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tamegrad.estimators import (
    ActivationMeter,
    batch_context,
    convert,
    converted_layers,
    largest_batch_that_fits,
    norm_cache,
)
from tamegrad.models import GPT, create_model

from _common import interleaved_median_times

VOCAB = 65  # Tiny Shakespeare's characters


class CheckpointedBlocks(nn.Module):
    """Wrap a GPT so each block runs under ``torch.utils.checkpoint`` (reentrant)."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.gpt
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = g.tok_emb(tokens) + g.pos_emb(pos)
        for block in g.blocks:
            x = checkpoint(block, x, use_reentrant=True)
        return g.head(g.ln_f(x))


def build(variant: str, args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(0)
    m = create_model(
        "gpt", num_classes=VOCAB, input_shape=(args.context,), width=args.width,
        n_layer=args.layers, n_head=args.heads,
    )
    if variant == "checkpoint":
        return CheckpointedBlocks(m)  # type: ignore[arg-type]
    if variant == "exact":
        return m
    method, frac = variant.split()[:2]
    include = "re:.*mlp\\.(fc|proj)" if variant.endswith("ffn") else None
    return convert(m, method, keep_frac=float(frac), include=include)


def step_fn(model: nn.Module, opt: torch.optim.Optimizer | None, context: int
            ) -> Callable[[int], None]:
    g = torch.Generator().manual_seed(1)

    def step(batch: int) -> None:
        x = torch.randint(0, VOCAB, (batch, context + 1), generator=g)
        with batch_context(model, torch.arange(batch)):
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step


def measure(model: nn.Module, step: Callable[[int], None], batch: int) -> tuple[int, dict]:
    with ActivationMeter(model) as meter:
        step(batch)
    rep = meter.report()
    return rep.activation_bytes, rep.per_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = ["exact", "wtacrs 0.3", "wtacrs 0.1", "crs 0.3", "wtacrs 0.3 ffn", "checkpoint"]
    models = {v: build(v, args) for v in variants}
    opts = {v: torch.optim.AdamW(m.parameters(), lr=1e-4) for v, m in models.items()}
    steps = {v: step_fn(models[v], opts[v], args.context) for v in variants}
    for v in variants:  # one visit each, so the WTA-CRS rows use cached gradient norms
        steps[v](args.batch)
    mem = {v: measure(models[v], steps[v], args.batch) for v in variants}
    times = interleaved_median_times(
        [lambda v=v: steps[v](args.batch) for v in variants], reps=args.reps, warmup=1
    )
    budget = mem["exact"][0]
    fits = {}
    for v in variants:
        search = step_fn(models[v], None, args.context)
        fits[v] = largest_batch_that_fits(search, budget, model=models[v],
                                          max_batch=args.max_batch)
    print(f"# WTA-CRS benchmark  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
          f"UTC  torch {torch.__version__}  {platform.processor() or platform.machine()}  "
          f"threads={args.threads}")
    print(f"# gpt: layers={args.layers} heads={args.heads} width={args.width} "
          f"context={args.context} vocab={VOCAB}; batch {args.batch} "
          f"({args.batch * args.context} tokens); budget = exact bytes at batch {args.batch}")
    exact_b, exact_layers = mem["exact"]
    conv_names = set(converted_layers(models["wtacrs 0.3"]))
    conv_exact = sum(b for n, b in exact_layers.items() if n in conv_names)
    print("| variant | activation MB | x exact | converted layers' bytes x exact | "
          "cache MB | step ms | x exact | batch at budget | x exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v, t in zip(variants, times):
        b, layers = mem[v]
        conv = sum(bb for n, bb in layers.items() if n in conv_names)
        conv_ratio = f"{conv / conv_exact:.3f}" if v.startswith(("wtacrs", "crs")) else "-"
        cache = norm_cache(models[v]) if v != "checkpoint" else None
        cache_mb = f"{cache.nbytes() / 1e6:.2f}" if cache is not None else "-"
        print(f"| {v} | {b / 1e6:.1f} | {b / exact_b:.3f} | {conv_ratio} | {cache_mb} | "
              f"{t * 1e3:.0f} | {t / times[0]:.2f} | {fits[v]} | {fits[v] / fits['exact']:.2f} |")
    print(f"# converted layers (paper's selection): {len(conv_names)}; their inputs are "
          f"{conv_exact / exact_b:.1%} of the exact step's activation bytes")


if __name__ == "__main__":
    main()
