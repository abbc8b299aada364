"""Files written atomically get the permissions the umask gives a plain open(path, "w")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tamegrad._atomic import atomic_write_text


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "run.json", "{}\n")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "run.json").stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert (tmp_path / "run.json").read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_resume_cleanup_removes_temp_files_a_kill_left_in_the_run_folder(tmp_path: Path) -> None:
    # SIGKILL during the atomic write of summary.json leaves .summary.json.<random>.tmp beside
    # it (the random-kill resume test once hit that moment); the next start removes it, and
    # the temp files of checkpoints/, and leaves every real file (incl. a grid's .claim) alone.
    from tamegrad.train.run_folder import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.checkpoint_dir.mkdir(parents=True)
    stale = [folder.path / ".summary.json.kp0s0vk5.tmp", folder.path / ".metrics.jsonl.x.tmp",
             folder.checkpoint_dir / ".last.pt.abc.tmp"]
    kept = [folder.path / "summary.json", folder.path / ".claim",
            folder.checkpoint_dir / "last.pt"]
    for p in stale + kept:
        p.write_text("x")
    folder.remove_stale_temp_files()
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
