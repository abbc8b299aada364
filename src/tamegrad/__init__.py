"""tamegrad: optimizers and a training engine for small, noisy batches."""

__version__ = "0.1.0"
