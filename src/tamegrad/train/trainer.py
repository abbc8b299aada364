"""The training loop: ``train(config, run_dir, extensions=...)``.

The run folder's format belongs to :mod:`tamegrad.train.run_folder` (only rank 0 writes it;
every rank writes its own checkpoint shard in distributed runs). The pieces the loop calls are
plain functions and small objects: :mod:`.build` (data, model + layer conversion, optimizer,
DDP), :mod:`.loss` (per-example loss, reduced in one place), :mod:`.metrics` (running metrics,
NaN guard, evaluation), :mod:`.checkpoint` (named states, per-rank shards), and
:class:`~tamegrad.train.extensions.RunExtensions` (sampler, layer conversion, batch context,
extra states and metrics).

Design choices and limits:

* **Gradient accumulation.** ``grad_accum`` micro-batches of ``batch_size`` make one optimizer
  step; each micro-batch loss is divided by the number of micro-batches in its group. Groups
  never span epochs: the last group of an epoch may be smaller (its loss divided by its own
  size). Steps per epoch = ``ceil(micro_batches / grad_accum)``.
* **Training batches.** The loader drops the last incomplete batch of each epoch (every step
  sees exactly ``batch_size`` samples per process); evaluation uses every test sample. With a
  sampler (``extensions.make_sampler``) the sampler picks each batch's examples and weights, and
  the lr schedule follows the fractional epoch reached (epochs may change length, as InfoBatch's
  do), so it ends exactly at the run's last step.
* **Metrics.** See :mod:`.metrics`. ``lr`` is the learning rate of the epoch's first step;
  ``epoch_time`` includes evaluation; ``wall_time`` sums the training time of every session of
  a resumed run (time lost between the last checkpoint and a crash is not counted).
* **Resume.** Checkpoints at epoch ends and, with ``checkpoint_every_steps``, after every k-th
  step; they hold the running metrics, the position in the epoch, every named state, the RNG
  state of every rank and the intra-op thread count, which a resumed run restores (float
  rounding depends on it). The loader is deterministic in (seed, epoch, batch), so a run
  resumed after SIGKILL reproduces an uninterrupted run bit for bit on the same device and
  library code. On CUDA exact replay also needs ``torch.use_deterministic_algorithms(True)``
  and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which ``train`` does not set for you.
* **Distributed.** Under ``torchrun`` the process group is initialised (gloo on CPU, nccl on
  CUDA) unless it already is, the model is wrapped in DDP, each rank reads its shard of every
  batch, metrics are all-reduced, and batch-norm running statistics are averaged over the ranks
  at every epoch end, so all ranks end each epoch with the same model. ``batch_size`` is per
  process. Only single-machine gloo runs have been tested (NCCL/CUDA untested).
* **Errors.** Problems found while setting up (unknown names, missing data, an unusable
  checkpoint, a config that does not match the checkpoint) raise before anything in the run
  folder is written. Errors during training mark summary.json "failed" (Ctrl-C: "interrupted",
  which a grid resumes) and re-raise; the last checkpoint stays the last good state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from typing import Any

import torch

from ..distributed import init_from_env
from .build import (
    autocast_for,
    build_data,
    build_model,
    build_optimizer,
    resolve_device,
    sync_buffers,
    wrap_ddp,
)
from .checkpoint import CheckpointError, read_run_checkpoint, write_run_checkpoint
from .config import TrainConfig
from .extensions import RunExtensions, SamplerSpec
from .loss import training_loss
from .metrics import FLUSH_EVERY, LN2, NonFiniteLossError, RunningMetrics, evaluate
from .plugins import extensions_for, merge
from .run_folder import RunFolder
from .run_state import RunState, restore_states, summary_of
from .schedule import create_scheduler, lr_factor, lr_factor_at

logger = logging.getLogger("tamegrad.train")

__all__ = ["NonFiniteLossError", "resolve_device", "train"]

_PROGRESS_INTERVAL_S = 0.5


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Run:
    """One call of :func:`train` (one session of a possibly resumed run)."""

    def __init__(self, config: TrainConfig, folder: RunFolder, resume: bool,
                 progress: bool | None, ext: RunExtensions | None) -> None:
        self.config, self.folder, self.resume, self.user_ext = config, folder, resume, ext
        self.show_progress = _progress_enabled(progress)
        self.state = RunState()
        self.epoch = self.epoch_first_step = 0  # where the running epoch started (schedule)
        self.files_ready = False  # rank 0 has set up the run folder (so it may write "failed")

    def run(self) -> dict[str, Any]:
        self.dist = init_from_env(self.config.device)
        try:
            self.ext = merge(extensions_for(self.config, self.dist), self.user_ext)
            return self._run()
        finally:
            self.__dict__.pop("ddp", None)  # the DDP wrapper holds the process group
            self.dist.shutdown()

    def _run(self) -> dict[str, Any]:
        cfg, d = self.config, self.dist
        self.device = resolve_device(cfg.device, d.local_rank)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        if cfg.amp and not self.use_amp:
            logger.warning("amp=True ignored: automatic mixed precision needs a CUDA device")
        ckpt = self._read_previous_run()  # all ranks, before anyone writes
        d.barrier()
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(cfg.seed)
        self._build()
        if ckpt is not None:
            self._restore(ckpt)
        self.ddp = wrap_ddp(self.model, d, self.device)
        d.barrier()
        if d.is_main:
            self._prepare_folder()
        self.files_ready = True
        try:
            self._loop()
        except KeyboardInterrupt:
            self._write_summary("interrupted", error="KeyboardInterrupt")
            raise
        except BaseException as exc:
            self._write_summary("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        return self._write_summary("completed")

    # -- setup ---------------------------------------------------------------------------------

    def _read_previous_run(self) -> dict[str, Any] | None:
        folder = self.folder
        if not self.resume:
            existing = folder.existing_run_files()
            if existing:
                raise FileExistsError(
                    f"{folder.path} already holds a run ({', '.join(existing)}); pass "
                    "resume=True (--resume) to continue it or choose another run folder"
                )
            return None
        if not folder.has_checkpoint():
            logger.info("no checkpoint in %s: starting from scratch", folder.path)
            return None
        ckpt = read_run_checkpoint(folder, self.dist)
        path = folder.checkpoint_path
        for key in ("model", "optimizer", "scheduler", "epoch", "batch_in_epoch",
                    "global_step", "metrics", "config", "running"):
            if key not in ckpt:
                raise CheckpointError(path, f"missing entry {key!r}")
        try:
            stored = TrainConfig.from_dict(ckpt["config"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(path, f"stored config is invalid: {exc}") from exc
        diffs = self.config.resume_differences(stored)
        if diffs:
            raise ValueError(
                f"Cannot resume {folder.path}: the config differs from the checkpointed run in "
                + "; ".join(diffs)
            )
        return ckpt

    def _build(self) -> None:
        cfg, d, dev, ext = self.config, self.dist, self.device, self.ext
        self.data = build_data(cfg, d, dev)
        self.sampler = None
        if ext.make_sampler is not None:
            spec = SamplerSpec(self.data.train.num_samples, cfg.batch_size, cfg.seed, d,
                               score=self._score)
            self.sampler = ext.make_sampler(spec)
            self.sampler.set_epoch(0)
        self.n_micro = self._micro_batches()
        self.steps_per_epoch = math.ceil(self.n_micro / cfg.grad_accum)
        self.model = build_model(cfg, self.data.dataset, dev, ext.convert_model)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = create_scheduler(  # a sampler's epochs may change length
            self.optimizer, cfg.schedule, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch,
            progress=self._progress if self.sampler is not None else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.metrics = RunningMetrics(dev, d)
        self.named_states = dict(ext.states)
        if self.sampler is not None:
            self.named_states["sampler"] = self.sampler

    def _progress(self) -> float:
        """Fractional epoch reached: epochs done + this epoch's optimizer steps done / its steps
        (read by the schedule after each step; its epochs may differ in length)."""
        st = self.state
        steps_in_epoch = math.ceil(self.n_micro / self.config.grad_accum)
        return self.epoch + (st.global_step - self.epoch_first_step) / steps_in_epoch

    @torch.no_grad()
    def _score(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-example losses of the current model (eval mode, no gradients) on training examples
        ``indices``, loaded as training batch -1 of the epoch (its own augmentation stream)."""
        x, y = self.data.train.load(indices, self.epoch, -1)
        was_training = self.model.training
        self.model.eval()
        with autocast_for(self.use_amp):
            _, losses = training_loss(self.model(x), y, per_example=True)
        self.model.train(was_training)
        assert losses is not None
        return losses.float()

    def _micro_batches(self) -> int:
        cfg = self.config
        n = len(self.sampler) if self.sampler is not None else len(self.data.train)
        if cfg.limit_train_batches is not None:
            n = min(n, cfg.limit_train_batches)
        if n < 1:
            raise ValueError(
                f"no training batches: {self.data.train.num_samples} training samples are fewer "
                f"than batch_size={cfg.batch_size} x world_size={self.dist.world_size}"
            )
        return n

    def _restore(self, ckpt: dict[str, Any]) -> None:
        path = self.folder.checkpoint_path
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            restore_states(self.named_states, ckpt.get("states") or {})
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(path, f"state does not fit this model/optimizer: {exc}") from exc
        if self.use_amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state.restore(ckpt)
        self.metrics.load_state_dict(ckpt["running"])
        if self.sampler is not None:
            self.sampler.set_epoch(self.state.start_epoch)
            self.n_micro = self._micro_batches()
        if self.state.start_batch > self.n_micro:
            raise CheckpointError(path, f"batch_in_epoch={self.state.start_batch} exceeds "
                                  f"{self.n_micro} batches per epoch")
        logger.info("resuming %s at epoch %d, batch %d (step %d)", self.folder.path,
                    self.state.start_epoch + 1, self.state.start_batch, self.state.global_step)

    def _prepare_folder(self) -> None:
        f = self.folder
        f.checkpoint_dir.mkdir(parents=True, exist_ok=True)  # and the run folder
        f.remove_stale_temp_files()
        f.write_config(self.config.to_dict())
        # rewritten from the checkpoint: drops epochs finished after it and a torn last line
        f.write_metrics(self.state.history)
        self._write_summary("running")

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        st = self.state
        st.session_start = time.perf_counter()
        for epoch in range(st.start_epoch, self.config.epochs):
            start_batch = st.start_batch if epoch == st.start_epoch else 0
            if self.sampler is not None and epoch != st.start_epoch:
                self.sampler.set_epoch(epoch)
                self.n_micro = self._micro_batches()
            self._train_epoch(epoch, start_batch)

    def _batches(self, epoch: int, start_batch: int) -> Any:
        from ..data import Batch

        if self.sampler is None:
            yield from self.data.train.batches(epoch, start_batch)
            return
        drawn = iter(self.sampler)
        for b in range(start_batch, self.n_micro):
            index, weight = next(drawn)
            x, y = self.data.train.load(index, epoch, b)
            yield Batch(x, y, index, weight)

    def _train_epoch(self, epoch: int, start_batch: int) -> None:
        cfg, d, st, met = self.config, self.dist, self.state, self.metrics
        model, opt = self.ddp, self.optimizer
        n, accum, ckpt_every = self.n_micro, cfg.grad_accum, cfg.checkpoint_every_steps
        params = [p for g in opt.param_groups for p in g["params"]]
        if start_batch == 0:
            met.reset()
            st.epoch_time_before = 0.0
        self.epoch = epoch
        self.epoch_first_step = st.global_step - math.ceil(start_batch / accum)
        epoch_start = time.perf_counter()
        epoch_lr = float(self.scheduler.base_lrs[0]) * (
            lr_factor(cfg.schedule, epoch * self.steps_per_epoch, epochs=cfg.epochs,
                      steps_per_epoch=self.steps_per_epoch) if self.sampler is None
            else lr_factor_at(cfg.schedule, float(epoch), epochs=cfg.epochs))
        pbar = self._progress_bar(epoch, start_batch)
        next_refresh = time.monotonic() + _PROGRESS_INTERVAL_S
        model.train()
        batches = self._batches(epoch, start_batch)
        for b in range(start_batch, n):
            batch = next(batches)
            group_start = b - b % accum
            group_size = min(accum, n - group_start)
            last_in_group = b - group_start == group_size - 1
            sync: Any = (model.no_sync() if d.enabled and not last_in_group  # type: ignore[operator]
                         else contextlib.nullcontext())
            with sync, self._batch_context(batch):
                with autocast_for(self.use_amp):
                    logits = model(batch.x)
                    loss, per_example = training_loss(
                        logits, batch.y, batch.weights, per_example=self.sampler is not None)
                met.check(loss, epoch, st.global_step + 1)
                if self.sampler is not None and per_example is not None:
                    self.sampler.update(batch.indices, per_example)
                scaled = loss / group_size if group_size > 1 else loss
                (self.scaler.scale(scaled) if self.use_amp else scaled).backward()
            met.add(loss, logits, batch.y, st.global_step + 1)
            if last_in_group:
                self._optimizer_step(params)
                if ckpt_every is not None and st.global_step % ckpt_every == 0 and b + 1 < n:
                    met.flush(epoch, st.global_step)  # on every rank: it may all-reduce
                    self._save(epoch, b + 1,
                               st.epoch_time_before + time.perf_counter() - epoch_start)
            if b % FLUSH_EVERY == FLUSH_EVERY - 1:
                met.flush(epoch, st.global_step)
            if pbar is not None:
                pbar.update(1)
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + _PROGRESS_INTERVAL_S
                    pbar.set_postfix(**met.progress(), refresh=False)
        if pbar is not None:
            pbar.close()
        met.flush(epoch, st.global_step)
        self._end_epoch(epoch, epoch_lr, st.epoch_time_before + time.perf_counter() - epoch_start)

    def _batch_context(self, batch: Any) -> Any:
        if self.ext.batch_context is None:
            return contextlib.nullcontext()
        return self.ext.batch_context(self.model, batch)

    def _optimizer_step(self, params: list[torch.Tensor]) -> None:
        cfg, opt, scaler = self.config, self.optimizer, self.scaler
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
        self.state.global_step += 1  # before the schedule reads the progress
        self.scheduler.step()

    def _progress_bar(self, epoch: int, start_batch: int) -> Any:
        if not (self.show_progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.n_micro, initial=start_batch, leave=False, dynamic_ncols=True,
                    desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch", file=sys.stderr)

    def _end_epoch(self, epoch: int, lr: float, train_time: float) -> None:
        cfg, st = self.config, self.state
        train_loss, train_acc = self.metrics.epoch_totals()
        extra: dict[str, Any] = {}
        for fn in self.ext.epoch_metrics:
            extra.update(fn())
        sync_buffers(self.model, self.dist)
        eval_start = time.perf_counter()
        test_loss, test_acc = evaluate(self.model, self.data.test.epoch(0), self.device,
                                       self.dist, autocast_for(self.use_amp))
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": st.global_step, "lr": lr,
            "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc,
        }
        if self.data.is_text:
            row["train_bpc"] = train_loss / LN2
            row["test_bpc"] = test_loss / LN2
        row["epoch_time"] = train_time + (time.perf_counter() - eval_start)
        row["wall_time"] = st.elapsed()
        row.update(extra)
        st.history.append(row)
        self.metrics.reset()
        st.epoch_time_before = 0.0
        if self.dist.is_main:
            self.folder.append_metrics(row)
        self._save(epoch + 1, 0, 0.0)
        self._write_summary("running")
        logger.info(
            "epoch %d/%d step %d lr %.4g train_loss %.4f train_acc %.4f "
            "test_loss %.4f test_acc %.4f (%.1fs)", epoch + 1, cfg.epochs, st.global_step, lr,
            train_loss, train_acc, test_loss, test_acc, row["epoch_time"],
        )

    # -- files ---------------------------------------------------------------------------------

    def _save(self, epoch: int, batch_in_epoch: int, epoch_time: float) -> None:
        """Every rank calls this (distributed checkpoints have a shard per rank)."""
        shared, own = self.state.checkpoint_parts(
            epoch, batch_in_epoch, epoch_time, self.config, self.model, self.optimizer,
            self.scheduler, self.scaler, self.metrics, self.named_states)
        write_run_checkpoint(self.folder, self.dist, shared, own, self.state.global_step)

    def _write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        summary = summary_of(self.state, status, error)
        if self.dist.is_main and self.files_ready:
            self.folder.write_summary(summary)
        return summary


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool | None = None,
    extensions: RunExtensions | None = None,
) -> dict[str, Any]:
    """Train ``config`` and write the run folder ``run_dir``; return the summary dict.

    ``resume=True`` continues from the run's checkpoint (mid-epoch if it was taken mid-epoch)
    after checking that ``config`` matches the stored one in every field that changes the
    trajectory (``data_dir``, ``device``, ``eval_batch_size``, ``checkpoint_every_steps`` may
    change; ``epochs`` too with the constant schedule); without a checkpoint it starts from
    scratch. A completed run resumes to an immediate return. ``resume=False`` refuses
    (``FileExistsError``) a folder that already holds a run. ``progress``: show a tqdm bar
    (None: only when stderr is a terminal). ``extensions``: a sampler, a layer conversion, a
    per-batch context, extra checkpointed states and metrics (:mod:`.extensions`), added to
    what the config's ``estimator`` / ``sampler`` fields ask for (:mod:`.plugins`); pass the
    same extensions when resuming.

    Raises ``NonFiniteLossError`` on a NaN/inf loss and ``CheckpointError`` for an unusable
    checkpoint (the file is left untouched); on any error during training summary.json gets
    status "failed" (``KeyboardInterrupt``: "interrupted") and the error message, and the last
    checkpoint remains the last good one. Seeds torch's global RNG with ``config.seed``. Not
    thread-safe; one run per process at a time.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    folder = RunFolder(run_dir)  # created only once the run is set up (a bad input writes nothing)
    return _Run(config, folder, resume, progress, extensions).run()

