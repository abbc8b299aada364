"""Building a run's objects from its config: data, model (with an optional layer conversion),
optimizer, schedule, and the DDP wrapper. Plain functions, called by the trainer in this order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import Augment, BatchLoader, Dataset, dataset_options, load_dataset
from ..distributed import DistContext
from ..models import create_model
from .config import TrainConfig

logger = logging.getLogger("tamegrad.train")

__all__ = ["DataBundle", "autocast_for", "build_data", "build_model", "build_optimizer",
           "resolve_device", "sync_buffers", "wrap_ddp"]


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


@dataclass
class DataBundle:
    """The data set with this rank's training and test loaders."""

    dataset: Dataset
    train: BatchLoader
    test: BatchLoader

    @property
    def is_text(self) -> bool:
        return self.dataset.kind == "text"


def _load(config: TrainConfig) -> Dataset:
    options = dict(config.dataset_options)
    if "seq_len" in dataset_options(config.dataset):  # text data sets cut windows of seq_len
        options.setdefault("seq_len", config.seq_len)
    return load_dataset(
        config.dataset, config.data_dir, train_subset=config.train_subset, seed=config.seed,
        **options,
    )


def augment_for(config: TrainConfig, ds: Dataset) -> Augment | None:
    """Crop (4 px zero padding) + h-flip only for RGB-like 32x32 images; none for other data."""
    x = ds.train_x
    if (config.augment and ds.kind == "image" and x.ndim == 4 and x.shape[1] == 3
            and x.shape[2] == x.shape[3] == 32):
        return Augment(crop_padding=4, hflip=True)
    return None


def build_data(config: TrainConfig, dist: DistContext, device: torch.device) -> DataBundle:
    """Load the data set (rank 0 first, so it alone downloads and builds caches) and make the
    training loader (drop_last, this rank's shard of every global batch) and this rank's
    strided share of the test split."""
    if dist.enabled and not dist.is_main:
        dist.barrier()
    ds = _load(config)
    if dist.enabled and dist.is_main:
        dist.barrier()
    mean = config.norm_mean if config.norm_mean is not None else ds.mean
    std = config.norm_std if config.norm_std is not None else ds.std
    if ds.kind != "image":
        mean = std = None
    r, w = dist.rank, dist.world_size
    train = BatchLoader(
        ds.train_x, ds.train_y, config.batch_size, shuffle=True, seed=config.seed,
        augment=augment_for(config, ds), drop_last=True, rank=r, world_size=w, device=device,
        mean=mean, std=std,
    )
    test = BatchLoader(
        ds.test_x[r::w], ds.test_y[r::w], config.eval_batch_size, shuffle=False,
        seed=config.seed, augment=None, drop_last=False, device=device, mean=mean, std=std,
    )
    return DataBundle(ds, train, test)


def build_model(
    config: TrainConfig, ds: Dataset, device: torch.device,
    convert: Callable[[nn.Module], nn.Module] | None = None,
) -> nn.Module:
    """Create the model (seeded by the caller), load ``config.init_from``'s weights
    (:mod:`.init_from`), apply ``convert`` (the layer-conversion seam), then move it to
    ``device``."""
    from .init_from import load_init_weights

    model = create_model(
        config.model, num_classes=ds.num_classes, input_shape=tuple(ds.train_x.shape[1:]),
        width=config.width, **config.model_options,
    )
    load_init_weights(model, config)
    if convert is not None:
        model = convert(model)
        if not isinstance(model, nn.Module):
            raise TypeError(f"convert_model must return an nn.Module, got {type(model).__name__}")
    return model.to(device)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    from ..optim import create

    return create(
        config.optimizer, model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
        **config.optimizer_kwargs,
    )


def wrap_ddp(model: nn.Module, dist: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when there is more than one rank, else ``model``."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids: Any = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, process_group=dist.group)


@torch.no_grad()
def sync_buffers(model: nn.Module, dist: DistContext) -> None:
    """Average floating buffers (batch-norm running statistics) over the ranks and broadcast
    the others from rank 0, so every rank evaluates and ends the epoch with the same model (DDP
    itself only broadcasts rank 0's buffers at the start of the next forward)."""
    if not dist.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce_(buf).div_(dist.world_size)
        else:
            dist.broadcast_(buf, src=0)


def autocast_for(use_amp: bool) -> Any:
    """float16 autocast on CUDA when ``use_amp``, else a no-op context."""
    if use_amp:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
