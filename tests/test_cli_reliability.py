"""Issue 16 on the CLI: resume refuses changed options, no debris after rejected input,
interrupts (Ctrl-C, SIGTERM, a killed parent) leave resumable runs and no orphaned workers."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tamegrad.cli import main
from tamegrad.train.grid import read_grid, run_dir_for

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--dataset", "synthetic", "--model", "mlp", "--width", "8", "--batch-size", "8",
        "--epochs", "2", "--limit-train-batches", "3", "--train-subset", "64", "--device", "cpu",
        "--threads", "1"]
# Runs long enough to be interrupted mid-way (about 0.05 s per epoch when not loaded).
SLOW = ["--dataset", "synthetic", "--model", "mlp", "--width", "64", "--train-subset", "256",
        "--epochs", "60", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    threads = torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    torch.set_num_threads(threads)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("tamegrad", "tamegrad.train", "tamegrad.train.compare"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def _exit_code(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    code = info.value.code
    return int(code) if isinstance(code, int) else 1, capsys.readouterr().err


def test_resume_refuses_options_that_change_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16.3: --lr, --optimizer, --opt, --seed with --resume are refused, naming the option."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--optimizer", "sgd", "--lr", "0.1", "--opt", "momentum=0.9",
                 "--out", str(run)]) == 0
    # Giving the stored values again, or options that do not change the run, is fine.
    assert main(["train", "--resume", str(run), "--lr", "0.1", "--opt", "momentum=0.9",
                 "--eval-batch-size", "32"]) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    for option, field in ((["--lr", "0.01"], "lr"), (["--optimizer", "adam"], "optimizer"),
                          (["--opt", "momentum=0.5"], "optimizer_kwargs"),
                          (["--seed", "3"], "seed")):
        code, err = _exit_code(["train", "--resume", str(run), *option], capsys)
        assert code == 2, option
        assert f"{option[0]} ({field}:" in err and "cannot change" in err, err
    code, err = _exit_code(["train", "--resume", str(run), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--out" in err and not (tmp_path / "x").exists()
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # the refused commands wrote nothing


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_threads_must_be_positive(threads: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_code(["train", *TINY[:-2], "--threads", threads, "--out",
                            str(tmp_path / "r")], capsys)
    assert code == 2 and "--threads" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra", [
    ["--dataset", "digits", "--model", "char-lstm"],  # a text model on images
    ["--dataset", "tinyshakespeare", "--model", "resnet18", "--seq-len", "16"],
    ["--dataset", "digits", "--model", "mlp", "--model-opt", "depth=0"],
    ["--dataset", "digits", "--model", "mlp", "--dataset-opt", "bogus=1"],
])
def test_rejected_input_leaves_no_run_folder(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16.10: a model that does not fit the data, or a rejected option, fails before anything
    is written (exit 2, one line, no folder), for train and compare alike."""
    out = tmp_path / "new" / "run"
    code, err = _exit_code(["train", *extra, "--epochs", "1", "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
    if "char-lstm" in extra:
        assert "does not fit" in err and "image" in err
    code, err = _exit_code(["compare", *extra, "--epochs", "1", "--optimizers", "sgd",
                            "--out", str(out)], capsys)
    assert code == 2 and not (tmp_path / "new").exists()


def test_input_error_raised_by_the_trainer_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16.10: bad input that only the trainer sees (here: fewer examples than one batch)
    exits 2, and the folders this command created are removed again."""
    out = tmp_path / "new" / "run"
    code, err = _exit_code(["train", "--dataset", "synthetic", "--model", "mlp", "--width", "8",
                            "--train-subset", "4", "--batch-size", "8", "--device", "cpu",
                            "--out", str(out)], capsys)
    assert code == 2 and "batch" in err and not (tmp_path / "new").exists()


def test_bad_optimizer_value_is_refused_before_the_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid value (not only an unknown keyword) exits 2 before any cell is written."""
    out = tmp_path / "grid"
    code, err = _exit_code(["compare", *TINY, "--optimizers", "sgd:lr=0.1",
                            "trsgd:lr=0.1,lambda_w=-1", "--out", str(out)], capsys)
    assert code == 2 and "lambda_w" in err and not out.exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def _wait_for_epochs(metrics: list[Path], n: int, proc: subprocess.Popen[bytes],
                     timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command ended before it could be interrupted"
        if all(m.exists() and len(m.read_text().splitlines()) >= n for m in metrics):
            return
        time.sleep(0.02)
    raise AssertionError("no progress")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _status(run: Path) -> str:
    return str(json.loads((run / "summary.json").read_text())["status"])


@pytest.mark.slow
def test_sigterm_to_train_leaves_an_interrupted_resumable_run(tmp_path: Path) -> None:
    """16.1 (train): SIGTERM (like Ctrl-C) records "interrupted", exits 130, resumes exactly."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tamegrad", "--log-level", "WARNING", "train", *SLOW,
           "--optimizer", "sgd", "--lr", "0.05", "--out", str(run)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        _wait_for_epochs([run / "metrics.jsonl"], 2, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert _status(run) == "interrupted" and b"--resume" in out
    assert main(["--log-level", "WARNING", "train", "--resume", str(run)]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == list(range(1, 61)) and _status(run) == "completed"


def _start_grid(args: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tamegrad", "--log-level", "INFO", "--quiet-epochs",
           "compare", *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _claim_pids(cells: list[Path]) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return [int(json.loads((c / ".claim").read_text())["pid"]) for c in cells]
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
    raise AssertionError("no claims")


@pytest.mark.slow
def test_interrupted_grid_workers_stop_and_resume(tmp_path: Path) -> None:
    """16.1 and 16.8: Ctrl-C (SIGINT to the process group) and SIGKILL of the parent each stop
    both workers; their cells are "interrupted", never "failed", and
    the next session resumes them (not skipped, not restarted) with the recorded thread
    count."""
    out = tmp_path / "grid"
    grid = [*SLOW, "--optimizers", "sgd:lr=0.05", "adam:lr=1e-3", "--seeds", "0",
            "--workers", "2", "--no-plot"]
    cells = [run_dir_for(out, label, 0) for label in ("sgd:lr=0.05", "adam:lr=1e-3")]
    metrics = [c / "metrics.jsonl" for c in cells]
    resume = ["--resume", str(out), "--workers", "2", "--no-plot"]
    done = 0
    # (SIGTERM to the parent takes the parent's Ctrl-C path: main() turns it into the same
    # KeyboardInterrupt, see test_sigterm_to_train_leaves_an_interrupted_resumable_run.)
    for how, args in (("sigint-group", [*grid, "--out", str(out)]), ("sigkill-parent", resume)):
        proc = _start_grid(args)
        try:
            _wait_for_epochs(metrics, done + 2, proc)
            workers = _claim_pids(cells)
            if how == "sigint-group":
                os.killpg(proc.pid, signal.SIGINT)
            else:  # the workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=120)
            assert _wait_gone(workers), f"{how}: workers outlived their parent"
        finally:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == (-9 if how == "sigkill-parent" else 130), (how, err)
        for c in cells:
            assert _status(c) == "interrupted", how
            assert not (c / ".claim").exists()
        if how != "sigint-group":
            assert err.count(b"resuming ") == 2, err  # resumed, neither skipped nor restarted
        for m in metrics:  # continued where it stopped: epochs 1..k, none twice
            epochs = [json.loads(line)["epoch"] for line in m.read_text().splitlines()]
            assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 60
        done = min(len(m.read_text().splitlines()) for m in metrics)
    assert read_grid(out).threads == 1
    # A different thread count would change the remaining runs: refused. (Resuming to the end
    # is covered by test_cli.py::test_killed_worker_is_resumed.)
    with pytest.raises(SystemExit) as info:
        main(["compare", "--resume", str(out), "--threads", "2"])
    assert info.value.code == 2
