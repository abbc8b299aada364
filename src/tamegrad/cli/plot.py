"""``tamegrad plot``: training curves of run folders and grid folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._errors import CLIError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "plot", parents=[common], help="draw training curves of runs or grids",
        description="Draw the mean over seeds of each label. Runs of one label whose configs "
                    "differ in more than the seed are drawn as separate curves, never averaged.",
    )
    p.add_argument("paths", nargs="+", metavar="DIR", help="run folders or grid folders")
    p.add_argument("--out", help="PNG path (default DIR/curves.png for one DIR, else curves.png)")
    p.add_argument("--title")
    p.add_argument("--band", choices=["minmax", "std"], default="minmax")


def run(args: argparse.Namespace) -> int:
    """``tamegrad plot``."""
    from tamegrad.train.plot import plot_runs

    paths = [Path(p) for p in args.paths]
    out = Path(args.out) if args.out else (
        paths[0] / "curves.png" if len(paths) == 1 else Path("curves.png")
    )
    try:
        png = plot_runs(paths, out, title=args.title, band=args.band)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    print(png)
    return 0
