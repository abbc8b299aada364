"""The training loop: ``train(config, run_dir)``.

Run folder (only rank 0 writes it)::

    run_dir/config.json          the TrainConfig (to_dict)
    run_dir/metrics.jsonl        one JSON object per finished epoch
    run_dir/checkpoints/last.pt  everything needed to resume (atomic: temp file + os.replace)
    run_dir/summary.json         status "running" | "completed" | "failed" (+ "error")

Design choices and limits:

* **Gradient accumulation.** ``grad_accum`` micro-batches of ``batch_size`` make one optimizer
  step; each micro-batch loss is divided by the number of micro-batches in its group, so a step
  uses the mean gradient. Groups never span epochs: if the micro-batches of an epoch (after
  ``limit_train_batches``) do not divide by ``grad_accum``, the last group of the epoch is
  smaller and is still stepped (its loss divided by its own size). Steps per epoch =
  ``ceil(micro_batches / grad_accum)``.
* **Training batches.** The training loader drops the last incomplete batch of each epoch
  (``drop_last=True``: every step sees exactly ``batch_size`` samples per process, and a batch
  of one cannot break batch-norm). The dropped samples differ every epoch because the order
  is reshuffled per epoch. Evaluation uses every test sample.
* **Metrics.** ``train_loss``/``train_acc`` are running averages over the epoch's training
  micro-batches (model in train mode, weights changing), weighted by samples (tokens for text);
  ``test_*`` use the whole test split in eval mode. Text runs also get ``train_bpc`` /
  ``test_bpc`` (loss / ln 2, bits per character) and their accuracy is per token. ``lr`` is the
  learning rate of the epoch's first optimizer step. ``epoch_time`` includes evaluation;
  ``wall_time`` is the training time summed over all sessions of a resumed run (time lost
  between the last checkpoint and a crash is not counted).
* **Synchronisation.** Per micro-batch the loop only stores the detached loss, logits and
  targets; every 32 micro-batches (and before a checkpoint and at the epoch end) they are folded
  into the running sums with a handful of batched ops, at fixed positions so the float
  summation order never depends on timing or resumption. Values are read to Python only for
  the progress bar (about twice a second), at checkpoints and at epoch ends. The NaN/inf check
  reads the loss of every micro-batch on a single CPU process (free there) and raises before the
  backward pass; on CUDA and under DDP it runs at the fold points instead (all ranks agree via
  an all-reduce), so the bad step may already have been applied, but never checkpointed.
* **Resume.** Checkpoints are taken at epoch ends and, with ``checkpoint_every_steps``, after
  every k-th optimizer step; they include the running epoch metrics and the position in the
  epoch, and the data loader is deterministic in (seed, epoch, batch), so a run resumed after
  SIGKILL reproduces an uninterrupted run bit for bit on the same device with the same number
  of threads and the same library code (different thread counts, devices or torch builds can
  change float rounding). On CPU no extra flags are needed; on CUDA exact replay also needs
  ``torch.use_deterministic_algorithms(True)`` (``python -m tamegrad.train --deterministic``)
  and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which ``train`` does not set for you.
* **Distributed.** Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised
  (gloo on CPU, nccl on CUDA) unless it already is, the model is wrapped in
  ``DistributedDataParallel``, each rank reads its shard of every batch order, and metrics
  are all-reduced. ``batch_size`` is per process. Batch-norm running statistics are averaged
  over the ranks at every epoch end (before evaluation), so all ranks end each epoch with the
  same parameters and buffers; a mid-epoch checkpoint holds rank 0's buffers. Every rank reads
  the same checkpoint on resume; only rank 0 writes files. Only single-machine gloo runs have
  been tested (NCCL/CUDA untested).
* **Errors.** Problems found while setting up (unknown data set/model/optimizer names or
  options, missing data, an unusable checkpoint, a config that does not match the checkpoint)
  raise before anything in the run folder is written. Errors during training mark
  summary.json "failed" and re-raise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from tamegrad._atomic import atomic_write_text

from ..models import create_model
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from .config import TrainConfig
from .schedule import create_scheduler

logger = logging.getLogger("tamegrad.train")

_LN2 = math.log(2.0)
_PROGRESS_INTERVAL_S = 0.5
_FLUSH_EVERY = 32  # micro-batches between folds of the pending metrics (and NaN checks off CPU)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped before using it.

    ``epoch`` is 1-based, ``step`` is the optimizer step (1-based) the loss belonged to,
    ``value`` the loss. No checkpoint is written after the bad loss.
    """

    def __init__(self, epoch: int, step: int, value: float, detail: str = "") -> None:
        self.epoch, self.step, self.value = epoch, step, value
        msg = f"Non-finite training loss {value} in epoch {epoch} at optimizer step {step}"
        if detail:
            msg += f" ({detail})"
        msg += (
            "; training stopped, the last checkpoint is the last good state. "
            "Lower the learning rate or enable clip_grad_norm."
        )
        super().__init__(msg)


# ---------------------------------------------------------------------------------------------
# small helpers


class _Pending:
    """Per-micro-batch results not yet folded into the running sums (kept as tensors: no sync)."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []
        self.logits: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.sizes: list[int] = []
        self.steps: list[int] = []

    def add(self, loss: Tensor, logits: Tensor, y: Tensor, step: int) -> None:
        self.losses.append(loss.detach())
        self.logits.append(logits.detach())
        self.targets.append(y)
        self.sizes.append(y.numel())
        self.steps.append(step)

    def clear(self) -> None:
        self.losses.clear()
        self.logits.clear()
        self.targets.clear()
        self.sizes.clear()
        self.steps.clear()


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _setup_distributed(device_pref: str) -> _Dist:
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device_pref.startswith("cuda") or (
        device_pref == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA (device ``local_rank``) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} requested but CUDA is not available")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _write_lines_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _append_line(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _load_data(config: TrainConfig) -> Any:
    from ..data import dataset_options, load_dataset

    options = dict(config.dataset_options)
    if "seq_len" in dataset_options(config.dataset):  # text data sets cut windows of seq_len
        options.setdefault("seq_len", config.seq_len)
    return load_dataset(
        config.dataset,
        config.data_dir,
        train_subset=config.train_subset,
        seed=config.seed,
        **options,
    )


def _augment_for(config: TrainConfig, ds: Any) -> Any:
    """Crop (4 px zero padding) + h-flip only for RGB-like 32x32 images; none for other data."""
    from ..data import Augment

    x = ds.train_x
    if (
        config.augment
        and ds.kind == "image"
        and x.ndim == 4
        and x.shape[1] == 3
        and x.shape[2] == x.shape[3] == 32
    ):
        return Augment(crop_padding=4, hflip=True)
    return None


# ---------------------------------------------------------------------------------------------
# the run


class _Run:
    """One call of :func:`train` (one session of a possibly resumed run)."""

    def __init__(
        self, config: TrainConfig, run_dir: Path, resume: bool, progress: bool | None
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.resume = resume
        self.dist = _Dist()
        self.show_progress = _progress_enabled(progress)
        self.paths = {
            "config": run_dir / "config.json",
            "metrics": run_dir / "metrics.jsonl",
            "ckpt": run_dir / "checkpoints" / "last.pt",
            "summary": run_dir / "summary.json",
        }
        self.history: list[dict[str, Any]] = []
        self.global_step = 0
        self.start_epoch = 0
        self.start_batch = 0
        self.wall_offset = 0.0
        self.session_start = time.perf_counter()
        self.files_ready = False  # rank 0 has set up the run folder (so it may write "failed")

    # -- setup ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.dist = _setup_distributed(cfg.device)
        try:
            return self._run()
        finally:
            self.dist.shutdown()

    def _run(self) -> dict[str, Any]:
        cfg = self.config
        d = self.dist
        self.device = resolve_device(cfg.device, d.local_rank)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        if cfg.amp and not self.use_amp:
            logger.warning("amp=True ignored: automatic mixed precision needs a CUDA device")

        ckpt = self._read_previous_run()  # all ranks, before anyone writes
        d.barrier()

        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(cfg.seed)

        self._build(ckpt)
        d.barrier()
        if d.is_main:
            self._prepare_folder()
        self.files_ready = True
        try:
            self._loop()
        except BaseException as exc:
            if d.is_main:
                self._write_summary("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        summary = self._write_summary("completed")
        return summary

    def _read_previous_run(self) -> dict[str, Any] | None:
        ckpt_path = self.paths["ckpt"]
        if not self.resume:
            existing = [
                p.name for k, p in self.paths.items() if k != "config" and p.exists()
            ]
            if existing:
                raise FileExistsError(
                    f"{self.run_dir} already holds a run ({', '.join(existing)}); pass "
                    "resume=True (--resume) to continue it or choose another run folder"
                )
            return None
        if not ckpt_path.exists():
            logger.info("no checkpoint in %s: starting from scratch", self.run_dir)
            return None
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
        for key in ("model", "optimizer", "scheduler", "epoch", "batch_in_epoch",
                    "global_step", "metrics", "config", "running"):
            if key not in ckpt:
                raise CheckpointError(ckpt_path, f"missing entry {key!r}")
        try:
            stored = TrainConfig.from_dict(ckpt["config"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(ckpt_path, f"stored config is invalid: {exc}") from exc
        diffs = self.config.resume_differences(stored)
        if diffs:
            raise ValueError(
                f"Cannot resume {self.run_dir}: the config differs from the checkpointed run in "
                + "; ".join(diffs)
            )
        return ckpt

    def _build(self, ckpt: dict[str, Any] | None) -> None:
        from ..data import BatchLoader
        from ..optim import create as create_optimizer

        cfg, d, dev = self.config, self.dist, self.device
        if d.enabled and not d.is_main:
            d.barrier()  # let rank 0 download / build caches first
        ds = _load_data(cfg)
        if d.enabled and d.is_main:
            d.barrier()
        self.dataset = ds
        self.is_text = ds.kind == "text"
        mean = cfg.norm_mean if cfg.norm_mean is not None else ds.mean
        std = cfg.norm_std if cfg.norm_std is not None else ds.std
        if ds.kind != "image":
            mean = std = None
        self.train_loader = BatchLoader(
            ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
            augment=_augment_for(cfg, ds), drop_last=True, rank=d.rank,
            world_size=d.world_size, device=dev, mean=mean, std=std,
        )
        self.test_loader = BatchLoader(
            ds.test_x[d.rank :: d.world_size], ds.test_y[d.rank :: d.world_size],
            cfg.eval_batch_size, shuffle=False, seed=cfg.seed, augment=None,
            drop_last=False, device=dev, mean=mean, std=std,
        )
        n = len(self.train_loader)
        if cfg.limit_train_batches is not None:
            n = min(n, cfg.limit_train_batches)
        if n < 1:
            raise ValueError(
                f"no training batches: {ds.train_x.shape[0]} training samples are fewer than "
                f"batch_size={cfg.batch_size} x world_size={d.world_size}"
            )
        self.n_micro = n
        self.steps_per_epoch = math.ceil(n / cfg.grad_accum)

        input_shape = tuple(ds.train_x.shape[1:])
        model = create_model(
            cfg.model, num_classes=ds.num_classes, input_shape=input_shape, width=cfg.width,
            **cfg.model_options,
        ).to(dev)
        self.model = model
        self.optimizer = create_optimizer(
            cfg.optimizer, model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
            **cfg.optimizer_kwargs,
        )
        self.scheduler = create_scheduler(
            self.optimizer, cfg.schedule, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.count = 0
        self.epoch_time_before = 0.0
        self.pending = _Pending()
        if ckpt is not None:
            self._restore(ckpt)
        self.ddp: nn.Module = model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        path = self.paths["ckpt"]
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(path, f"state does not fit this model/optimizer: {exc}") from exc
        scaler_state = ckpt.get("scaler") or {}
        if self.use_amp and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        rng = ckpt.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        cuda_states = rng.get("cuda") or []
        if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self.start_epoch = int(ckpt["epoch"])
        self.start_batch = int(ckpt["batch_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = list(ckpt["metrics"])
        self.wall_offset = float(ckpt.get("wall_time", 0.0))
        running = ckpt["running"]
        self.loss_sum.copy_(running["loss_sum"])
        self.correct.copy_(running["correct"])
        self.count = int(running["count"])
        self.epoch_time_before = float(running["epoch_time"])
        if self.start_batch > self.n_micro:
            raise CheckpointError(
                path, f"batch_in_epoch={self.start_batch} exceeds {self.n_micro} batches per epoch"
            )
        logger.info(
            "resuming %s at epoch %d, batch %d (step %d)",
            self.run_dir, self.start_epoch + 1, self.start_batch, self.global_step,
        )

    def _prepare_folder(self) -> None:
        self.paths["ckpt"].parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.paths["ckpt"])
        _write_json_atomic(self.paths["config"], self.config.to_dict())
        # metrics.jsonl is rewritten from the checkpoint: drops epochs finished after it and
        # any line torn by a crash.
        _write_lines_atomic(self.paths["metrics"], self.history)
        self._write_summary("running")

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        cfg = self.config
        self.session_start = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.epochs):
            start_batch = self.start_batch if epoch == self.start_epoch else 0
            self._train_epoch(epoch, start_batch)

    def _elapsed(self) -> float:
        return self.wall_offset + (time.perf_counter() - self.session_start)

    def _train_epoch(self, epoch: int, start_batch: int) -> None:
        cfg, d = self.config, self.dist
        model, opt, sched, scaler = self.ddp, self.optimizer, self.scheduler, self.scaler
        n, accum = self.n_micro, cfg.grad_accum
        params = [p for g in opt.param_groups for p in g["params"]]
        check_each = self.device.type == "cpu" and not d.enabled  # .item() is free there
        ckpt_every = cfg.checkpoint_every_steps
        if start_batch == 0:
            self._reset_running()
        epoch_start = time.perf_counter()
        epoch_lr = self._lr_at_epoch_start(epoch)
        autocast = self._autocast()
        pend = self.pending
        pbar = self._progress_bar(epoch, start_batch)
        next_refresh = time.monotonic() + _PROGRESS_INTERVAL_S
        model.train()

        batches: Iterator[tuple[Tensor, Tensor]] = self.train_loader.epoch(
            epoch, start_batch=start_batch
        )
        for b in range(start_batch, n):
            x, y = next(batches)
            group_start = b - b % accum
            group_size = min(accum, n - group_start)
            last_in_group = b - group_start == group_size - 1
            sync_ctx: Any = (
                model.no_sync()  # type: ignore[operator]
                if d.enabled and not last_in_group
                else contextlib.nullcontext()
            )
            with sync_ctx:
                with autocast:
                    logits = model(x)
                    if logits.ndim == 2:
                        loss = F.cross_entropy(logits, y)
                    else:
                        loss = F.cross_entropy(logits.flatten(0, -2), y.flatten())
                if check_each:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise NonFiniteLossError(epoch + 1, self.global_step + 1, value)
                scaled = loss / group_size if group_size > 1 else loss
                if self.use_amp:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            pend.add(loss, logits, y, self.global_step + 1)

            if last_in_group:
                if cfg.clip_grad_norm is not None:
                    if self.use_amp:
                        scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                if self.use_amp:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                self.global_step += 1
                if ckpt_every is not None and self.global_step % ckpt_every == 0 and b + 1 < n:
                    self._flush(epoch)  # on every rank: it may all-reduce
                    self._save(epoch, b + 1, self.epoch_time_before
                               + time.perf_counter() - epoch_start)
            if b % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                self._flush(epoch)

            if pbar is not None:
                pbar.update(1)
                now = time.monotonic()
                if now >= next_refresh:
                    next_refresh = now + _PROGRESS_INTERVAL_S
                    count = max(self.count, 1)
                    pbar.set_postfix(
                        loss=f"{self.loss_sum.item() / count:.4f}",
                        acc=f"{self.correct.item() / count:.4f}",
                        refresh=False,
                    )
        if pbar is not None:
            pbar.close()
        self._flush(epoch)
        self._end_epoch(epoch, epoch_lr, self.epoch_time_before + time.perf_counter() - epoch_start)

    def _reset_running(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        self.epoch_time_before = 0.0
        self.pending.clear()

    def _flush(self, epoch: int) -> None:
        """Fold the pending micro-batch results into the running sums; check for NaN/inf.

        Called at fixed positions (every ``_FLUSH_EVERY`` micro-batches of the epoch, before a
        checkpoint, at the epoch end) so the float summation order, hence the metrics, do not
        depend on timing or on whether the run was resumed. Under DDP every rank calls it at
        the same positions and they agree on the non-finite check through an all-reduce.
        """
        pend = self.pending
        if not pend.losses:
            if self.dist.enabled:  # still take part in the collective
                self._check_pending(epoch, None)
            return
        losses = torch.stack(pend.losses).detach().double()
        self._check_pending(epoch, losses)
        weights = torch.tensor(pend.sizes, dtype=torch.float64).to(self.device)
        with torch.no_grad():
            self.loss_sum += (losses * weights).sum()
            pred = torch.cat(pend.logits).argmax(-1)
            self.correct += (pred == torch.cat(pend.targets)).sum()
        self.count += sum(pend.sizes)
        pend.clear()

    def _check_pending(self, epoch: int, losses: Tensor | None) -> None:
        if self.device.type == "cpu" and not self.dist.enabled:
            return  # already checked at every micro-batch
        bad = (
            torch.zeros((), dtype=torch.int32, device=self.device)
            if losses is None
            else (~torch.isfinite(losses)).any().to(torch.int32)
        )
        if self.dist.enabled:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bool(bad.item()):
            return
        if losses is not None and not bool(torch.isfinite(losses).all()):
            i = int((~torch.isfinite(losses)).nonzero()[0, 0])
            raise NonFiniteLossError(
                epoch + 1, self.pending.steps[i], float(losses[i]),
                "detected at the next metrics sync, after that step was applied",
            )
        raise NonFiniteLossError(
            epoch + 1, self.global_step, float("nan"), "on another rank; detected at a sync"
        )

    def _autocast(self) -> Any:
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _lr_at_epoch_start(self, epoch: int) -> float:
        from .schedule import lr_factor

        base = float(self.scheduler.base_lrs[0])
        return base * lr_factor(
            self.config.schedule, epoch * self.steps_per_epoch,
            epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
        )

    def _progress_bar(self, epoch: int, start_batch: int) -> Any:
        if not (self.show_progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.n_micro, initial=start_batch, desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr,
        )

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """DDP: average floating buffers (BN running stats) over ranks, so that every rank
        evaluates and ends the epoch with the same model (DDP itself only broadcasts rank 0's
        buffers at the start of the next forward)."""
        if not self.dist.enabled:
            return
        world = self.dist.world_size
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf.div_(world)
            else:
                dist.broadcast(buf, src=0)

    @torch.no_grad()
    def _evaluate(self) -> tuple[float, float]:
        model = self.model
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = 0
        autocast = self._autocast()
        for x, y in self.test_loader.epoch(0):
            with autocast:
                logits = model(x)
            flat = logits.reshape(-1, logits.shape[-1]).float()
            loss_sum += F.cross_entropy(flat, y.reshape(-1), reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum()
            count += y.numel()
        model.train(was_training)
        totals = torch.stack([loss_sum, correct.double(), torch.tensor(
            float(count), dtype=torch.float64, device=self.device)])
        if self.dist.enabled:
            dist.all_reduce(totals)
        loss, corr, cnt = totals.tolist()
        return loss / max(cnt, 1.0), corr / max(cnt, 1.0)

    def _end_epoch(self, epoch: int, lr: float, train_time: float) -> None:
        cfg = self.config
        totals = torch.stack([
            self.loss_sum, self.correct.double(),
            torch.tensor(float(self.count), dtype=torch.float64, device=self.device),
        ])
        if self.dist.enabled:
            dist.all_reduce(totals)
        loss_sum, corr, cnt = totals.tolist()
        self._sync_buffers()
        eval_start = time.perf_counter()
        test_loss, test_acc = self._evaluate()
        epoch_time = train_time + (time.perf_counter() - eval_start)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": lr,
            "train_loss": loss_sum / cnt,
            "train_acc": corr / cnt,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }
        if self.is_text:
            row["train_bpc"] = row["train_loss"] / _LN2
            row["test_bpc"] = test_loss / _LN2
        row["epoch_time"] = epoch_time
        row["wall_time"] = self._elapsed()
        self.history.append(row)
        self._reset_running()
        if self.dist.is_main:
            _append_line(self.paths["metrics"], row)
            self._save(epoch + 1, 0, 0.0)
            self._write_summary("running")
        logger.info(
            "epoch %d/%d step %d lr %.4g train_loss %.4f train_acc %.4f "
            "test_loss %.4f test_acc %.4f (%.1fs)",
            epoch + 1, cfg.epochs, self.global_step, lr, row["train_loss"], row["train_acc"],
            test_loss, test_acc, epoch_time,
        )

    # -- files ---------------------------------------------------------------------------------

    def _save(self, epoch: int, batch_in_epoch: int, epoch_time: float) -> None:
        if not self.dist.is_main:
            return
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "global_step": self.global_step,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "running": {
                "loss_sum": self.loss_sum.detach().cpu().clone(),
                "correct": self.correct.detach().cpu().clone(),
                "count": self.count,
                "epoch_time": epoch_time,
            },
            "metrics": list(self.history),
            "wall_time": self._elapsed(),
            "config": self.config.to_dict(),
        }
        save_checkpoint(self.paths["ckpt"], payload)

    def _write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        accs = [r["test_acc"] for r in self.history]
        summary: dict[str, Any] = {
            "status": status,
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": max(accs) if accs else None,
            "best_epoch": (accs.index(max(accs)) + 1) if accs else None,
            "final_test_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "final_train_acc": last.get("train_acc"),
            "wall_time": last.get("wall_time", self.wall_offset),
            "epochs": len(self.history),
            "steps": self.global_step,
        }
        if "test_bpc" in last:
            summary["final_test_bpc"] = last["test_bpc"]
        if error is not None:
            summary["error"] = error
        if self.dist.is_main and self.files_ready:
            _write_json_atomic(self.paths["summary"], summary)
        return summary


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``config`` and write the run folder ``run_dir``; return the summary dict.

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` (mid-epoch if the checkpoint
    was taken mid-epoch) after checking that ``config`` matches the stored one in every field
    that changes the trajectory (``data_dir``, ``device``, ``eval_batch_size``,
    ``checkpoint_every_steps`` may change; ``epochs`` too with the constant schedule); without a
    checkpoint it starts from scratch. A completed run resumes to an immediate return.
    ``resume=False`` refuses (``FileExistsError``) a folder that already holds a run.
    ``progress``: show a tqdm bar (None: only when stderr is a terminal).

    Raises ``NonFiniteLossError`` on a NaN/inf loss and ``CheckpointError`` for an unusable
    checkpoint (the file is left untouched); on any error during training summary.json gets
    status "failed" and the error message, and the last checkpoint remains the last good one.
    Seeds torch's global RNG with ``config.seed``. Not thread-safe; one run per process at a time.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return _Run(config, run_dir, resume, progress).run()
