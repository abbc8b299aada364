"""Distributed training: 2 CPU processes (gloo) launched with torchrun on 127.0.0.1.

The driver initialises the process group itself (``train`` then uses the existing group) and
trains two small runs; each rank saves its final model so the test can compare ranks. It ends
with ``tamegrad._clean_exit.destroy_process_group`` and checks the gloo threads are gone, so an
exit that could abort at random fails here every time instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from tamegrad.train import TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)

# MLP without batch statistics: DDP with 2 ranks x batch 2 x grad_accum 2 sees exactly the
# samples of a single-process batch of 8 (same permutation), so the runs must agree.
MLP = TrainConfig(
    dataset="synthetic",
    dataset_options={"n_train": 128, "n_test": 63, "as_vectors": True, "noise": 0.4},
    model="mlp", width=16, optimizer="sgd", optimizer_kwargs={"momentum": 0.9}, lr=0.05,
    batch_size=2, grad_accum=2, epochs=2, device="cpu", checkpoint_every_steps=5,
)
# A conv net with batch-norm buffers (broadcast from rank 0 by DDP).
CNN = TrainConfig(
    dataset="synthetic", dataset_options={"n_train": 96, "n_test": 32}, model="cnn", width=4,
    model_options={"depth": 2}, optimizer="adam", lr=0.01, batch_size=4, epochs=2,
    device="cpu",
)

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from tamegrad._clean_exit import destroy_process_group, gloo_thread_names
    from tamegrad.train import RunExtensions, TrainConfig, train

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")
    models = []
    def capture(model):  # the model-building seam: keep a handle on this rank's model
        models.append(model)
        return model
    for name in ("mlp", "cnn"):
        cfg = TrainConfig.from_dict(json.load(open(os.path.join(out, name + ".json"))))
        summary = train(cfg, os.path.join(out, name), progress=False,
                        extensions=RunExtensions(convert_model=capture))
        torch.save({"model": models[-1].state_dict(), "summary": summary,
                    "still_initialised": dist.is_initialized()},
                   os.path.join(out, f"{name}_rank{rank}.pt"))
    # the group was created before torch._dynamo was imported (by the optimizer), so torch keeps
    # it in default arguments: this destroy must still free it, or the exit may abort (SIGABRT)
    destroy_process_group()
    alive = gloo_thread_names()
    assert not alive, f"rank {rank}: gloo threads {alive} outlive destroy_process_group()"
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    (out / "driver.py").write_text(DRIVER)
    (out / "mlp.json").write_text(json.dumps(MLP.to_dict()))
    (out / "cnn.json").write_text(json.dumps(CNN.to_dict()))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(out / "driver.py"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    return out


def _rank_files(out: Path, name: str) -> list[dict[str, Any]]:
    return [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_ranks_end_identical_and_folder_written_once(ddp_out: Path, name: str) -> None:
    r0, r1 = _rank_files(ddp_out, name)
    assert r0["still_initialised"] and r1["still_initialised"]  # train() left our group alone
    assert r0["model"].keys() == r1["model"].keys()
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # params and BN buffers
    run = ddp_out / name
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    for k in r0["model"]:
        assert torch.equal(ck["model"][k], r0["model"][k]), k
    assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "metrics.jsonl",
                                       "summary.json"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step = rows[-1]["step"]  # the shared file and one shard per rank, of the last checkpoint
    assert sorted(os.listdir(run / "checkpoints")) == [
        "last.pt", f"rank0-step{step}.pt", f"rank1-step{step}.pt"]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: no duplicated lines
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    # metrics are all-reduced, so both ranks report the same summary
    def strip(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k != "wall_time"}

    assert strip(r0["summary"]) == strip(r1["summary"]) == strip(summary)
    cfg = MLP if name == "mlp" else CNN
    global_batch = cfg.batch_size * 2 * cfg.grad_accum
    n_train = cfg.dataset_options["n_train"]
    assert rows[-1]["step"] == 2 * (n_train // global_batch)


def test_ddp_matches_single_process_with_the_same_global_batch(
    ddp_out: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    single = TrainConfig.from_dict({**MLP.to_dict(), "batch_size": 8, "grad_accum": 1})
    train(single, tmp_path)
    ref = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    r0, _ = _rank_files(ddp_out, "mlp")
    for k in ref:
        torch.testing.assert_close(r0["model"][k], ref[k], rtol=1e-5, atol=1e-6)
    ddp_rows = [json.loads(x) for x in (ddp_out / "mlp" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(ddp_rows, ref_rows):
        assert a["step"] == b["step"]
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
