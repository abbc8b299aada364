"""Migrate results folders' ``grid.json`` from version 1 to 2 (adds each entry's sweep family).

    python scripts/migrate_grid_v2.py [FOLDER ...]   (default: every results/*/ with a grid.json)

Version 2 identifies the points of a learning-rate sweep by a ``family`` field of the entry
(``tamegrad.train.grid.GridEntry``) instead of by parsing labels. For a folder written by
``tamegrad reproduce`` (it has ``suite.json``) the family of each entry is taken from the suite's
own definition (with the sweep points recorded in ``suite.json``), matched by label; other
grids get no family. ``threads`` (not recorded by version 1) is left unset. Idempotent; only
``grid.json`` is rewritten (atomically), and only when it changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tamegrad._atomic import atomic_write_text
from tamegrad.experiments import suite_run
from tamegrad.experiments.runner import EXTENSIONS_KEY, read_suite_meta
from tamegrad.experiments.sweeps import with_extensions
from tamegrad.train.grid import GRID_FILE, GRID_VERSION


def families(folder: Path) -> dict[str, str]:
    """label -> family of the suite that wrote ``folder`` ({} for other grids)."""
    meta = read_suite_meta(folder)
    if not meta:
        return {}
    spec = suite_run(str(meta["suite"]), str(meta["profile"]))
    entries = with_extensions(spec.entries, list(meta.get(EXTENSIONS_KEY, [])), spec.base)
    return {e.label: e.family for e in entries if e.family is not None}


def migrate(folder: Path) -> bool:
    """Rewrite ``folder/grid.json`` as version 2; True when it changed."""
    path = folder / GRID_FILE
    data = json.loads(path.read_text())
    fams = families(folder)
    new = dict(data)
    new["version"] = GRID_VERSION
    new.setdefault("threads", None)
    new["entries"] = []
    for entry in data["entries"]:
        entry = dict(entry)
        if entry.get("family") is None and entry["label"] in fams:
            entry["family"] = fams[entry["label"]]
        new["entries"].append(entry)
    if new == data:
        return False
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")
    return True


def main(folders: list[Path]) -> None:
    for folder in folders:
        changed = migrate(folder)
        n = sum("family" in e for e in json.loads((folder / GRID_FILE).read_text())["entries"])
        print(f"{folder}: {'migrated' if changed else 'already version 2'} "
              f"({n} sweep entries)")


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(args or sorted(p.parent for p in Path("results").glob(f"*/{GRID_FILE}")))
