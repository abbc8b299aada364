"""Print the tables of docs/REPRODUCTION.md from the committed results folders.

    python scripts/tr_cifar10_tables.py [RESULTS_DIR]

Reads ``results/tr-cifar10-cpu``, ``results/tr-cifar10-search-cpu`` and
``results/tr-cifar10-search-cpu-heldout`` (as written by ``tamegrad reproduce``) and prints the
paired per-seed differences, the search's tuning table (seed 0) and its held-out table.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from tamegrad.experiments import mean_step_multiplier
from tamegrad.train.grid import GridEntry, load_grid
from tamegrad.train.results import summarize

MATCHED = "SGD lr-matched (0.0293)"
SELECTED = "TRSGD no-decay lr=0.0293 lw=0.00293"
PAIRS = [
    ("TRSGD", "SGD"), ("TRAdam", "Adam"), (MATCHED, "SGD"), ("TRSGD", MATCHED),
    ("TRSGD", "Lookahead(SGD)"), ("TRSGD", "SGD accum x16 (eff. batch 128)"),
    ("TRAdam", "Adam lr-matched (0.000293)"), ("Lookahead(SGD)", MATCHED), (SELECTED, MATCHED),
]


def accuracies(folders: list[Path]) -> dict[str, dict[int, float]]:
    """label -> {seed: final test accuracy in %}, merged over the folders."""
    out: dict[str, dict[int, float]] = {}
    for folder in folders:
        for row in summarize(folder):
            seeds_values = zip(row["completed_seeds"], row["final_test_acc_values"], strict=True)
            out.setdefault(row["label"], {}).update({s: 100 * v for s, v in seeds_values})
    return out


def paired_table(acc: dict[str, dict[int, float]]) -> str:
    lines = ["| difference (final test acc, points) | per seed (0, 1, 2) | mean ± std | A wins |",
             "|---|---|---|---|"]
    for a, b in PAIRS:
        seeds = sorted(set(acc[a]) & set(acc[b]))
        diffs = [acc[a][s] - acc[b][s] for s in seeds]
        std = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        lines.append(f"| {a} − {b} | {', '.join(f'{d:+.2f}' for d in diffs)} "
                     f"| {statistics.fmean(diffs):+.2f} ± {std:.2f} "
                     f"| {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    return "\n".join(lines)


def search_table(acc: dict[str, dict[int, float]], main: list[GridEntry],
                 search: list[GridEntry]) -> str:
    lines = ["| setting | lr | lambda_w | S | inner decay | mean step "
             "| seed 0 final test acc (%) |", "|---|---|---|---|---|---|---|"]
    by_label = {e.label: e for e in main}
    rows = [(by_label["TRSGD"], "TRSGD (paper's setting, from tr-cifar10)")]
    rows += [(e, e.label) for e in search]
    for entry, name in rows:
        kw = entry.optimizer_kwargs
        steps, decay = int(kw.get("inner_steps", 10)), bool(kw.get("inner_decay", True))
        lr = float(entry.lr or 0.0)
        step = lr * (mean_step_multiplier(steps) if decay else 1.0)
        lines.append(f"| {name} | {lr:.3g} | {kw['lambda_w']:.3g} | {steps} "
                     f"| {'on' if decay else 'off'} | {step:.3g} | {acc[entry.label][0]:.2f} |")
    lr = float(by_label[MATCHED].lr or 0.0)
    lines.append(f"| SGD lr-matched (control, from tr-cifar10) | {lr:.3g} | – | – | – | {lr:.3g} "
                 f"| {acc[MATCHED][0]:.2f} |")
    return "\n".join(lines)


def heldout_table(acc: dict[str, dict[int, float]]) -> str:
    lines = ["| configuration | seed 1 | seed 2 | mean ± std (held-out) |", "|---|---|---|---|"]
    for label in (SELECTED, MATCHED, "TRSGD", "Lookahead(SGD)", "Adam"):
        xs = [acc[label][s] for s in (1, 2)]
        lines.append(f"| {label} | {xs[0]:.2f} | {xs[1]:.2f} "
                     f"| {statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f} |")
    return "\n".join(lines)


def main(results: Path) -> None:
    main_dir = results / "tr-cifar10-cpu"
    search_dir = results / "tr-cifar10-search-cpu"
    held_dir = results / "tr-cifar10-search-cpu-heldout"
    acc = accuracies([main_dir, search_dir, held_dir])
    _, main_entries, _ = load_grid(main_dir)
    _, search_entries, _ = load_grid(search_dir)
    print(paired_table(acc), search_table(acc, main_entries, search_entries),
          heldout_table(acc), sep="\n\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results"))
