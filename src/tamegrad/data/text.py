"""Tiny Shakespeare as a character-level language-modelling data set.

The vocabulary is the sorted set of characters of the whole file; the first 90% of the text is
the training split, the last 10% the test split. ``span=(a, b)`` (fractions, ``0 <= a < b <= 1``)
first keeps only the characters ``[int(a*N), int(b*N))`` of the ``N`` in the file and splits that
part the same way (its first 90% train, its last 10% test), so ``span=(0, 0.5)`` and
``span=(0.5, 1)`` are two disjoint corpora with disjoint test splits and the same vocabulary
(that of the whole file, so a model trained on one part can be fine-tuned on the other).
Each split is cut into non-overlapping input windows of ``seq_len`` characters: sequence ``i``
is ``chunk = ids[i*T : i*T + T + 1]`` with ``x = chunk[:-1]`` and ``y = chunk[1:]``,
so every character after the first is a target exactly once and the final
``< T`` characters of a split are dropped.
Limits: characters only (no sub-word tokenisation); a local file is used as-is (only a
download is checksum-verified), and :func:`encode` rejects characters outside the vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tamegrad.optim._validation import check_int

from . import download as _dl
from .base import Dataset, DatasetCorruptError, default_data_dir

__all__ = ["decode", "encode", "make_sequences", "tinyshakespeare"]

TRAIN_FRACTION = 0.9


def encode(text: str, vocab: Sequence[str]) -> Tensor:
    """Characters -> int64 ids (``vocab[i]`` is the character of id ``i``; sorted vocab only).

    Raises ``ValueError`` naming the first character not in ``vocab``.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    table = np.array([ord(c) for c in vocab], dtype=np.int64)
    if table.size and np.any(np.diff(table) <= 0):
        raise ValueError("vocab must be sorted and without duplicates (as Dataset.classes is)")
    ids = np.searchsorted(table, codes)
    if codes.size:
        bad = table[np.minimum(ids, table.size - 1)] != codes if table.size else codes == codes
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"character {text[first]!r} at position {first} is not in the vocabulary"
            )
    return torch.from_numpy(ids.astype(np.int64))


def decode(ids: Tensor | Sequence[int], vocab: Sequence[str]) -> str:
    """int ids -> string. Raises ``IndexError`` for ids outside the vocabulary."""
    values = ids.reshape(-1).tolist() if isinstance(ids, Tensor) else list(ids)
    return "".join(vocab[i] for i in values)


def make_sequences(ids: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Cut a 1-D id tensor into ``(x, y)`` of shape ``(n, seq_len)`` (see the module doc)."""
    n = (ids.numel() - 1) // seq_len
    if n < 1:
        raise ValueError(
            f"text of {ids.numel()} characters is too short for one sequence of seq_len={seq_len}"
        )
    x = ids[: n * seq_len].reshape(n, seq_len).clone()
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len).clone()
    return x, y


def _check_span(span: Sequence[float]) -> tuple[float, float]:
    ok = isinstance(span, (tuple, list)) and len(span) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in span)
    if not ok or not 0 <= span[0] < span[1] <= 1:
        raise ValueError(f"Invalid span: {span!r} (must be two fractions a, b with "
                         "0 <= a < b <= 1)")
    return float(span[0]), float(span[1])


def tinyshakespeare(
    data_dir: str | Path | None = None, *, download: bool = True, seq_len: int = 128,
    span: Sequence[float] | None = None,
) -> Dataset:
    """Read ``<data_dir>/tinyshakespeare.txt`` (downloaded and sha256-verified when missing).

    Returns kind ``"text"``: int64 ``(N, seq_len)`` inputs and next-character targets;
    ``classes`` is the vocabulary (``num_classes`` its size, 65 for the real file).
    Raises :class:`DatasetNotFoundError` with the exact path and URL when the file is missing
    and cannot be downloaded. ``span=(a, b)`` selects a part of the corpus (module doc);
    ``ValueError`` for a bad span or a part too short for one window per split.
    """
    check_int("seq_len", seq_len, minimum=1)
    part = _check_span(span) if span is not None else None
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    resource = _dl.TINYSHAKESPEARE_RESOURCE
    path = _dl.ensure_file(
        resource, root / resource.filename, download_ok=download, what="tinyshakespeare"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetCorruptError(f"{path} is not UTF-8 text ({e})") from e
    if len(text) < 20:
        raise DatasetCorruptError(f"{path} holds only {len(text)} characters")
    vocab = sorted(set(text))
    ids = encode(text, vocab)
    if part is not None:
        ids = ids[int(part[0] * len(text)):int(part[1] * len(text))]
    cut = int(ids.numel() * TRAIN_FRACTION)
    train_x, train_y = make_sequences(ids[:cut], seq_len)
    test_x, test_y = make_sequences(ids[cut:], seq_len)
    return Dataset(
        name="tinyshakespeare",
        kind="text",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(vocab),
        classes=vocab,
        mean=None,
        std=None,
    )
