"""Command-line interface: parsing, listing, errors, and a tiny end-to-end comparison."""

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

from tamegrad.cli import CLIError, main, parse_kv, parse_spec, parse_value
from tamegrad.train.grid import config_fields, load_grid, run_dir_for

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Tiny synthetic problem shared by the end-to-end tests.
TINY = ["--dataset", "synthetic", "--model", "mlp", "--width", "8", "--batch-size", "8",
        "--epochs", "2", "--limit-train-batches", "3", "--train-subset", "64", "--device", "cpu",
        "--threads", "1"]



@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    """main() sets torch threads and configures logging: undo both for the other test files."""
    threads = torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("tamegrad", "tamegrad.train", "tamegrad.train.compare")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    torch.set_num_threads(threads)
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lvl in levels.items():
        logging.getLogger(n).setLevel(lvl)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.9", 0.9), ("3", 3), ("1e-4", 1e-4), ("True", True), ("false", False), ("None", None),
     ("(0.9, 0.99)", (0.9, 0.99)), ("[1,2]", [1, 2]), ("'x'", "x"), ("nesterov", "nesterov"),
     ("float32", "float32")],
)
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_parse_kv() -> None:
    assert parse_kv("momentum=0.9") == ("momentum", 0.9)
    assert parse_kv("lambda-w=0.01") == ("lambda_w", 0.01)
    assert parse_kv("betas=(0.9,0.99)") == ("betas", (0.9, 0.99))
    for bad in ("momentum", "=3", "1x=2"):
        with pytest.raises(CLIError):
            parse_kv(bad)


def test_parse_spec() -> None:
    fields = config_fields()
    e = parse_spec("sgd:lr=0.1,momentum=0.9", fields)
    assert (e.label, e.optimizer, e.lr, e.optimizer_kwargs, e.overrides) == (
        "sgd:lr=0.1,momentum=0.9", "sgd", 0.1, {"momentum": 0.9}, {})
    e = parse_spec("TRAdam big=tradam:lr=1e-3,betas=(0.9, 0.99),lambda_w=1e-4,"
                   "grad_accum=4,batch_size=2", fields)
    assert e.label == "TRAdam big" and e.optimizer == "tradam" and e.lr == 1e-3
    assert e.optimizer_kwargs == {"betas": (0.9, 0.99), "lambda_w": 1e-4}
    assert e.overrides == {"grad_accum": 4, "batch_size": 2}
    e = parse_spec("Adam", fields)
    assert (e.label, e.optimizer, e.lr) == ("Adam", "adam", None)
    with pytest.raises(CLIError):
        parse_spec("sgd:lr=fast", fields)
    with pytest.raises(CLIError):
        parse_spec("=sgd", fields)


# ----------------------------------------------------------------------------- list / errors


@pytest.mark.parametrize(("what", "expected"),
                         [("optimizers", "trsgd"), ("datasets", "digits"), ("models", "mlp")])
def test_list(what: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", what]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert expected in names


def test_list_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "optimizers:" in out and "datasets:" in out and "models:" in out


@pytest.mark.parametrize(
    ("args", "kind", "valid"),
    [
        (["train", "--dataset", "nope", "--model", "mlp", "--optimizer", "sgd"], "dataset",
         "digits"),
        (["train", "--dataset", "digits", "--model", "nope", "--optimizer", "sgd"], "model",
         "resnet18"),
        (["train", "--dataset", "digits", "--model", "mlp", "--optimizer", "nope"], "optimizer",
         "trsgd"),
        (["compare", "--dataset", "digits", "--model", "mlp", "--optimizers", "sgd", "nope:lr=1"],
         "optimizer", "tradam"),
    ],
)
def test_unknown_names_exit_2(args: list[str], kind: str, valid: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"unknown {kind} 'nope'" in err and valid in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_bad_value_and_missing_args_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "digits", "--model", "mlp", "--optimizer", "sgd",
              "--batch-size", "0", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "batch_size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", "--dataset", "digits", "--model", "mlp", "--optimizers",
              "sgd:bogus=1", "--out", str(tmp_path / "y")])
    assert info.value.code == 2 and "bogus" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    with pytest.raises(SystemExit) as info:
        main(["compare", "--resume", str(tmp_path / "nothing")])
    assert info.value.code == 2 and "grid.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--resume", str(tmp_path / "nothing")])
    assert info.value.code == 2 and "config.json" in capsys.readouterr().err


def test_missing_data_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "tinyshakespeare", "--model", "char-lstm", "--optimizer",
              "sgd", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "tinyshakespeare" in err


# ----------------------------------------------------------------------------- end to end


def test_train_and_resume_corrupt_checkpoint(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", *TINY, "--optimizer", "trsgd", "--lr", "0.1", "--opt", "momentum=0.9",
                 "--opt", "lambda_w=0.01", "--out", str(run)]) == 0
    assert "completed" in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["optimizer_kwargs"] == {"momentum": 0.9, "lambda_w": 0.01}
    # --resume with --epochs extends a constant-schedule run.
    assert main(["train", "--resume", str(run), "--epochs", "3", "--threads", "1"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main(["train", "--resume", str(run)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "last.pt" in err and "Traceback" not in err
    assert ckpt.read_bytes() == b"garbage, not a checkpoint"


def test_nan_loss_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", *TINY, "--optimizer", "sgd", "--lr", "1e30", "--out", str(tmp_path / "r")])
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "nan" in err.lower() or "finite" in err.lower()


def test_compare_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    args = ["compare", *TINY, "--optimizers", "sgd:lr=0.1,momentum=0.9",
            "TRSGD=trsgd:lr=0.1,lambda_w=0.01", "--seeds", "0", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    md = (out / "results.md").read_text()
    for text in (printed, md):
        assert "| sgd:lr=0.1,momentum=0.9 | 2/2 |" in text and "| TRSGD | 2/2 |" in text
    assert (out / "curves.png").stat().st_size > 10_000
    assert (out / "results.json").is_file()
    summary = run_dir_for(out, "TRSGD", 1) / "summary.json"
    assert json.loads(summary.read_text())["status"] == "completed"
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert len(mtimes) == 4

    # Rerunning (same command or --resume) trains nothing again.
    assert main(["compare", "--resume", str(out), "--no-plot", "--threads", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == mtimes

    # `tamegrad plot` redraws the figure from the finished runs.
    png = tmp_path / "again.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_two_worker_processes_share_a_grid(tmp_path: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid"
    assert main(["compare", *TINY, "--epochs", "1", "--optimizers", "sgd:lr=0.1", "adam:lr=1e-3",
                 "--seeds", "0", "1", "--out", str(out), "--workers", "2", "--no-plot"]) == 0
    err = capfd.readouterr().err  # both worker processes log to the inherited stderr
    _, entries, seeds = load_grid(out)
    for e in entries:
        for s in seeds:
            assert err.count(f"running {e.label} seed {s} ->") == 1, err
            run = run_dir_for(out, e.label, s)
            assert json.loads((run / "summary.json").read_text())["status"] == "completed"
            lines = (run / "metrics.jsonl").read_text().splitlines()
            epochs = [json.loads(line)["epoch"] for line in lines]
            assert epochs == [1]  # trained exactly once
    assert not list(out.rglob(".claim"))


def test_demo_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "1", "--epochs", "1", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    for label in ("SGD", "TRSGD", "Adam", "TRAdam", "SGD lr-matched (0.0293)",
                  "Adam lr-matched (0.000293)"):
        assert f"| {label} | 1/1 |" in printed
    # the line under the table says what the comparison controls for, and where to read more
    table_end = printed.index("| TRAdam | 1/1 |")
    assert "lr-matched" in printed[table_end:] and "docs/REPRODUCTION.md" in printed[table_end:]
    matched = json.loads((run_dir_for(out, "SGD lr-matched (0.0293)", 0) / "config.json")
                         .read_text())
    assert (matched["optimizer"], matched["optimizer_kwargs"]) == ("sgd", {"momentum": 0.9})
    assert matched["lr"] == pytest.approx(0.1 * sum(1 / k for k in range(1, 11)) / 10)
    assert (out / "curves.png").is_file() and (out / "results.md").is_file()
    cfg = json.loads((run_dir_for(out, "TRAdam", 0) / "config.json").read_text())
    assert (cfg["dataset"], cfg["batch_size"], cfg["lr"]) == ("digits", 8, 1e-3)
    assert cfg["optimizer_kwargs"] == {"lambda_w": 1e-4, "inner_steps": 10}
    assert cfg["weight_decay"] == 1e-4


def test_python_dash_m(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-m", "tamegrad", "list", "models"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "resnet18" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tamegrad", "train", "--dataset", "nope"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_killed_worker_is_resumed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """SIGKILL a grid process mid-run: its stale claim is broken and the run resumes."""
    out = tmp_path / "grid"
    args = ["compare", "--dataset", "synthetic", "--model", "mlp", "--width", "8",
            "--train-subset", "128", "--epochs", "40", "--device", "cpu", "--threads", "1",
            "--optimizers", "sgd:lr=0.05", "--seeds", "0", "--out", str(out), "--no-plot"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "tamegrad", "--log-level", "WARNING", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir_for(out, "sgd:lr=0.05", 0) / "metrics.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    claim = metrics.parent / ".claim"
    assert json.loads(claim.read_text())["pid"] == proc.pid  # left behind by the dead process
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < 40
    capfd.readouterr()
    assert main(["compare", "--resume", str(out), "--no-plot", "--threads", "1"]) == 0
    err = capfd.readouterr().err
    assert "resuming sgd:lr=0.05 seed 0" in err
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, 41))
    assert not claim.exists()


def test_every_trainconfig_field_is_a_train_option() -> None:
    """The train options are derived from TrainConfig (a new field needs no CLI change)."""
    import dataclasses

    from tamegrad.cli import build_parser
    from tamegrad.cli.options import config_options, given_fields
    from tamegrad.train.config import TrainConfig

    options = config_options()
    assert [o.field for o in options] == [f.name for f in dataclasses.fields(TrainConfig)]
    parser = build_parser()
    for opt in options:
        value = {"dict": ["k=1"], "bool": [], "list": ["1"]}.get(
            opt.kind, [str(opt.choices[0]) if opt.choices else "1"])
        args = parser.parse_args(["train", opt.flag, *value])
        assert opt.field in given_fields(args), opt.flag
    schedule = next(o for o in options if o.field == "schedule")
    assert set(schedule.choices or ()) == {"constant", "step", "cosine"}
