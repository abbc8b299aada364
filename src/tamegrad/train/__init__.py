"""Training engine: ``train(TrainConfig(...), run_dir)`` writes a resumable run folder.

See :mod:`tamegrad.train.trainer` for the run-folder layout and the design choices
(gradient accumulation, metrics, resume, distributed).
"""

from .build import resolve_device
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .extensions import RunExtensions
from .metrics import NonFiniteLossError
from .schedule import create_scheduler, lr_factor
from .trainer import train

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "RunExtensions",
    "TrainConfig",
    "create_scheduler",
    "load_checkpoint",
    "lr_factor",
    "resolve_device",
    "save_checkpoint",
    "train",
]
