"""A run SIGKILLed at random moments and resumed ends bit-identical to an uninterrupted one.

Every run is a ``python -m tamegrad.train`` subprocess on one thread (CPU), so the reference and
the interrupted runs have the same float rounding. The kill moments are random; the seed of the
draw is printed in the assertion messages so a failure can be replayed (``RESUME_TEST_SEED``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tamegrad.train import TrainConfig, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TIME_KEYS = {"epoch_time", "wall_time"}

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"
)

CONFIG = TrainConfig(
    dataset="synthetic",
    dataset_options={"n_train": 1024, "n_test": 64, "noise": 0.4},  # 3x8x8 images
    model="cnn",
    width=4,
    model_options={"depth": 2},
    optimizer="sgd",
    optimizer_kwargs={"momentum": 0.9},
    lr=0.05,
    weight_decay=5e-4,
    schedule="cosine",
    batch_size=8,
    grad_accum=2,  # 128 micro-batches = 64 optimizer steps per epoch
    epochs=6,
    checkpoint_every_steps=9,  # not a divisor of the epoch: checkpoints at varying positions
    device="cpu",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def _start(cfg_file: Path, run: Path, resume: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tamegrad.train", "--config-json", str(cfg_file),
           "--run-dir", str(run), "--threads", "1", "--no-progress", "--log-level", "WARNING"]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"run failed ({proc.returncode}):\n{err.decode()[-3000:]}"


def _metrics(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def _wait_for(pred: Any, proc: subprocess.Popen[bytes], timeout: float = 120) -> bool:
    """Poll ``pred()`` until true; False if the process exited first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("the training subprocess did not start writing in time")


def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path: Path) -> None:
    seed = int(os.environ.get("RESUME_TEST_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    why = f"(kill moments drawn with RESUME_TEST_SEED={seed})"
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(CONFIG.to_dict()))

    ref = tmp_path / "ref"
    _finish(_start(cfg_file, ref, resume=False))
    ref_summary = json.loads((ref / "summary.json").read_text())
    train_time = ref_summary["wall_time"]  # seconds of training, without start-up

    run = tmp_path / "run"
    summary_file = run / "summary.json"
    ckpt = run / "checkpoints" / "last.pt"
    kills = []
    for cycle in range(3):
        before = summary_file.stat().st_mtime_ns if summary_file.exists() else None
        proc = _start(cfg_file, run, resume=cycle > 0)
        if cycle == 0:  # wait until it has started writing the run folder
            started = _wait_for(lambda: (run / "metrics.jsonl").exists() or ckpt.exists(), proc)
        else:  # wait until the resumed process has rewritten summary.json ("running")
            started = _wait_for(
                lambda b=before: summary_file.exists() and summary_file.stat().st_mtime_ns != b,
                proc,
            )
        if not started:
            break  # finished before we could kill it
        delay = rng.uniform(0.0, train_time * 0.6)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            where = load_checkpoint(ckpt) if ckpt.exists() else None
            kills.append((round(delay, 3),
                          None if where is None else (where["epoch"], where["batch_in_epoch"])))
        else:
            proc.wait()
            break
    assert kills, f"no run was killed {why}"

    _finish(_start(cfg_file, run, resume=True))

    assert _metrics(run) == _metrics(ref), f"metrics differ after kills {kills} {why}"
    got = json.loads(summary_file.read_text())
    assert got["status"] == "completed"

    def strip(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k != "wall_time"}

    assert strip(got) == strip(ref_summary), f"{kills} {why}"
    a, b = load_checkpoint(ckpt), load_checkpoint(ref / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 6 * 64
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after {kills} {why}"
    for i, state in b["optimizer"]["state"].items():
        assert torch.equal(a["optimizer"]["state"][i]["momentum_buffer"],
                           state["momentum_buffer"]), f"optimizer state {i} {kills} {why}"
    assert sorted(os.listdir(ckpt.parent)) == ["last.pt"]  # stale temp files were cleaned
    assert sorted(os.listdir(run)) == sorted(os.listdir(ref))
