"""tamegrad.data: registry, subsets, digits, synthetic, text, CIFAR pickles and downloads.

No test touches the network: downloads go through a monkeypatched ``open_url``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from tamegrad.data import (
    BatchLoader,
    Dataset,
    DatasetCorruptError,
    DatasetNotFoundError,
    available_datasets,
    balanced_subset,
    dataset_options,
    decode,
    default_cache_dir,
    default_data_dir,
    encode,
    load_dataset,
)
from tamegrad.data import download as dl
from tamegrad.data.base import channel_stats

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAMEGRAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TAMEGRAD_DATA", str(tmp_path / "data"))

    def no_network(url: str, timeout: float = 60.0) -> None:
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(dl, "open_url", no_network)


# ----------------------------------------------------------------------------- registry
def test_available_datasets_lists_the_contract_names() -> None:
    names = available_datasets()
    assert names == sorted(names)
    for n in ("cifar10", "cifar100", "imagefolder", "digits", "synthetic", "tinyshakespeare"):
        assert n in names
    assert "cifar10-jpeg" in names


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown dataset 'nope'.*cifar10.*tinyshakespeare"):
        load_dataset("nope")


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown option\(s\).*'synthetic': bogus.*n_train"):
        load_dataset("synthetic", bogus=1)
    with pytest.raises(ValueError, match="valid options: test_size"):
        load_dataset("digits", seq_len=3)
    assert "seq_len" in dataset_options("tinyshakespeare")
    assert "name" not in dataset_options("imagefolder")


def test_default_dirs_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAMEGRAD_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("TAMEGRAD_CACHE", str(tmp_path / "c"))
    assert default_data_dir() == (tmp_path / "d").resolve()
    assert default_cache_dir() == (tmp_path / "c").resolve()
    monkeypatch.delenv("TAMEGRAD_DATA")
    monkeypatch.delenv("TAMEGRAD_CACHE")
    assert default_data_dir() == Path.home() / ".cache" / "tamegrad" / "data"
    assert default_cache_dir() == Path.home() / ".cache" / "tamegrad" / "cache"


# ----------------------------------------------------------------------------- subsets
def test_balanced_subset_is_balanced_seeded_and_sorted() -> None:
    y = torch.arange(1000) % 10
    y = y[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    idx = balanced_subset(y, 200, seed=3)
    assert idx.dtype == torch.int64 and idx.numel() == 200
    assert torch.equal(idx, torch.sort(idx).values)
    assert idx.unique().numel() == 200
    assert torch.bincount(y[idx], minlength=10).tolist() == [20] * 10
    assert torch.equal(idx, balanced_subset(y, 200, seed=3))
    assert not torch.equal(idx, balanced_subset(y, 200, seed=4))
    counts = torch.bincount(y[balanced_subset(y, 23, seed=0)], minlength=10)
    assert counts.tolist() == [3, 3, 3] + [2] * 7


def test_balanced_subset_rejects_impossible_sizes() -> None:
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="positive"):
        balanced_subset(y, 0, seed=0)
    with pytest.raises(ValueError, match="only 6 samples"):
        balanced_subset(y, 7, seed=0)
    with pytest.raises(ValueError, match=r"class 1, which has only 2.*at most 4"):
        balanced_subset(y, 6, seed=0)
    with pytest.raises(ValueError, match="1-D"):
        balanced_subset(torch.zeros(3, 2, dtype=torch.long), 2, seed=0)


def test_load_dataset_train_subset_is_balanced_and_keeps_test() -> None:
    full = load_dataset("digits")
    sub = load_dataset("digits", train_subset=100, seed=5)
    assert sub.train_x.shape == (100, 1, 8, 8)
    assert torch.bincount(sub.train_y, minlength=10).tolist() == [10] * 10
    assert torch.equal(sub.test_x, full.test_x) and sub.mean == full.mean
    idx = balanced_subset(full.train_y, 100, seed=5)
    assert torch.equal(sub.train_x, full.train_x[idx])


# ----------------------------------------------------------------------------- digits, synthetic
def test_digits_split_shapes_scaling_and_stats() -> None:
    ds = load_dataset("digits", data_dir="/ignored")
    assert ds.kind == "image" and ds.num_classes == 10 and ds.classes == [str(i) for i in range(10)]
    assert ds.train_x.shape == (1497, 1, 8, 8) and ds.test_x.shape == (300, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    test_counts = torch.bincount(ds.test_y, minlength=10)
    assert int(test_counts.min()) >= 29 and int(test_counts.max()) <= 31  # stratified
    again = load_dataset("digits")
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)
    xf = ds.train_x.double() / 255
    assert ds.mean is not None and ds.std is not None
    assert ds.mean[0] == pytest.approx(float(xf.mean()), abs=1e-9)
    assert ds.std[0] == pytest.approx(float(xf.std(unbiased=False)), abs=1e-9)
    # every sklearn sample appears exactly once across the two splits
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().data * 255 / 16).astype(np.uint8)
    both = torch.cat([ds.train_x, ds.test_x]).reshape(-1, 64).numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, raw))


def test_channel_stats_is_exact() -> None:
    x = torch.randint(0, 256, (50, 3, 4, 5), dtype=torch.uint8)
    mean, std = channel_stats(x)
    xf = x.double() / 255
    for c in range(3):
        assert mean[c] == pytest.approx(float(xf[:, c].mean()), abs=1e-12)
        assert std[c] == pytest.approx(float(xf[:, c].std(unbiased=False)), abs=1e-12)


def test_synthetic_is_deterministic_and_learnable() -> None:
    ds = load_dataset("synthetic", n_train=256, n_test=64, num_classes=4, image_size=6)
    assert ds.train_x.shape == (256, 3, 6, 6) and ds.train_x.dtype == torch.uint8
    assert torch.bincount(ds.train_y).tolist() == [64] * 4
    assert torch.equal(
        ds.train_x,
        load_dataset("synthetic", n_train=256, n_test=64, num_classes=4, image_size=6).train_x,
    )
    assert not torch.equal(
        ds.train_x,
        load_dataset(
            "synthetic", n_train=256, n_test=64, num_classes=4, image_size=6, data_seed=1
        ).train_x,
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 36, 4))
    loader = BatchLoader(ds.train_x, ds.train_y, 32, shuffle=True, seed=0, mean=ds.mean, std=ds.std)
    losses = []
    for epoch in range(3):
        for xb, yb in loader.epoch(epoch):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            model.zero_grad()
            loss.backward()
            with torch.no_grad():  # plain SGD (torch.optim's first step imports dynamo: slow)
                for p in model.parameters():
                    p -= 0.1 * p.grad
            losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    test_loader = BatchLoader(
        ds.test_x, ds.test_y, 64, shuffle=False, seed=0, mean=ds.mean, std=ds.std
    )
    xb, yb = next(test_loader.epoch(0))
    assert (model(xb).argmax(1) == yb).float().mean() > 0.9


def test_synthetic_vectors_and_option_validation() -> None:
    ds = load_dataset("synthetic", as_vectors=True, n_train=40, n_test=8, channels=1)
    assert ds.kind == "vector" and ds.train_x.dtype == torch.float32
    assert ds.train_x.shape == (40, 64) and ds.mean is None
    assert float(ds.train_x.max()) <= 1.0
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("synthetic", num_classes=1)


# ----------------------------------------------------------------------------- text
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 5


def _write_text(root: Path, text: str = TEXT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "tinyshakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_tinyshakespeare_sequences_vocab_and_split(tmp_path: Path) -> None:
    _write_text(tmp_path)
    ds = load_dataset("tinyshakespeare", tmp_path, download=False, seq_len=16)
    vocab = sorted(set(TEXT))
    assert ds.kind == "text" and ds.classes == vocab and ds.num_classes == len(vocab)
    assert ds.train_x.dtype == torch.int64 and ds.train_x.shape[1] == 16
    cut = int(len(TEXT) * 0.9)
    n_train, n_test = (cut - 1) // 16, (len(TEXT) - cut - 1) // 16
    assert ds.train_x.shape == ds.train_y.shape == (n_train, 16)
    assert ds.test_x.shape == (n_test, 16)
    # x rows are consecutive, non-overlapping windows; y is x shifted by one character
    assert decode(ds.train_x.reshape(-1), ds.classes) == TEXT[: n_train * 16]
    assert decode(ds.train_y.reshape(-1), ds.classes) == TEXT[1 : n_train * 16 + 1]
    assert decode(ds.test_x.reshape(-1), ds.classes) == TEXT[cut : cut + n_test * 16]
    assert torch.equal(encode("Speak", vocab), torch.tensor([vocab.index(c) for c in "Speak"]))
    with pytest.raises(ValueError, match="'~' at position 1"):
        encode("a~", vocab)
    with pytest.raises(ValueError, match="too short"):
        load_dataset("tinyshakespeare", tmp_path, download=False, seq_len=10_000)
    sub = load_dataset("tinyshakespeare", tmp_path, download=False, seq_len=16, train_subset=5)
    assert sub.train_x.shape == (5, 16)


def test_tinyshakespeare_missing_without_download_names_path_and_url(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("tinyshakespeare", tmp_path / "none", download=False)
    msg = str(err.value)
    assert str(tmp_path / "none" / "tinyshakespeare.txt") in msg
    assert dl.TINYSHAKESPEARE_RESOURCE.url in msg and "sha256" in msg


def test_download_failure_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float = 60.0) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(dl, "open_url", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("tinyshakespeare", tmp_path)
    assert isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert str(tmp_path / "tinyshakespeare.txt") in msg and dl.TINYSHAKESPEARE_RESOURCE.url in msg
    assert not any(tmp_path.iterdir())  # no partial file left behind


def test_download_verifies_checksum_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = TEXT.encode()
    resource = dl.Resource(
        url="https://example.invalid/t.txt",
        filename="tinyshakespeare.txt",
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    monkeypatch.setattr(dl, "TINYSHAKESPEARE_RESOURCE", resource)
    monkeypatch.setattr(dl, "open_url", lambda url, timeout=60.0: io.BytesIO(payload))
    ds = load_dataset("tinyshakespeare", tmp_path, seq_len=8)
    assert (tmp_path / "tinyshakespeare.txt").read_bytes() == payload
    assert ds.classes == sorted(set(TEXT))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt"]

    bad = dl.Resource(url=resource.url, filename=resource.filename, sha256="0" * 64)
    monkeypatch.setattr(dl, "TINYSHAKESPEARE_RESOURCE", bad)
    with pytest.raises(DatasetCorruptError, match="sha256"):
        load_dataset("tinyshakespeare", tmp_path / "other")
    assert not (tmp_path / "other" / "tinyshakespeare.txt").exists()
    assert not any((tmp_path / "other").iterdir())


def test_real_tinyshakespeare_if_available() -> None:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    ds = load_dataset("tinyshakespeare", SHARED_DATA, download=False)
    assert ds.num_classes == 65 and ds.train_x.shape == (7842, 128)
    assert ds.test_x.shape == (871, 128)


# ----------------------------------------------------------------------------- CIFAR pickles
def _official_pickle(obj: object) -> bytes:
    """Pickle like the official (Python 2, numpy 1) files: protocol 2, numpy.core globals."""
    data = pickle.dumps(obj, protocol=2)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _fake_cifar(root: Path, *, hundred: bool, per_batch: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    k = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for fname in [*names, "test"] if hundred else [*names, "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, per_batch)]
        d: dict[bytes, object] = {
            b"batch_label": b"fake",
            b"data": data,
            b"filenames": [b"img%d.png" % i for i in range(per_batch)],
        }
        if hundred:
            d[b"fine_labels"] = labels
            d[b"coarse_labels"] = [v // 5 for v in labels]
        else:
            d[b"labels"] = labels
        (folder / fname).write_bytes(_official_pickle(d))
        xs.append(data)
        ys.append(np.array(labels))
    if hundred:
        meta = {
            b"fine_label_names": [b"c%02d" % i for i in range(100)],
            b"coarse_label_names": [b"s%d" % i for i in range(20)],
        }
        (folder / "meta").write_bytes(_official_pickle(meta))
    else:
        names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        meta = {
            b"label_names": [n.encode() for n in names],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        }
        (folder / "batches.meta").write_bytes(_official_pickle(meta))
    return {
        "train_x": np.concatenate(xs[:-1]),
        "train_y": np.concatenate(ys[:-1]),
        "test_x": xs[-1],
        "test_y": ys[-1],
    }


def test_cifar10_reads_official_pickle_format(tmp_path: Path) -> None:
    ref = _fake_cifar(tmp_path, hundred=False)
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.name == "cifar10" and ds.kind == "image" and ds.num_classes == 10
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert ds.train_x.shape == (30, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (6, 3, 32, 32)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    row = ref["train_x"][7]
    assert int(ds.train_x[7, 0, 0, 0]) == row[0] and int(ds.train_x[7, 1, 0, 0]) == row[1024]
    assert int(ds.train_x[7, 2, 31, 31]) == row[3071] and int(ds.train_x[7, 0, 1, 2]) == row[34]
    assert ds.train_y.tolist() == ref["train_y"].tolist()
    assert ds.test_y.tolist() == ref["test_y"].tolist()


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    ref = _fake_cifar(tmp_path, hundred=True)
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert ds.num_classes == 100 and ds.classes[:2] == ["c00", "c01"]
    assert ds.train_y.tolist() == ref["train_y"].tolist()
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)


def _archive_of(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return dest


def test_cifar_missing_without_download_names_exact_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    assert str(tmp_path / "cifar-10-python.tar.gz") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg


def test_cifar_download_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float = 60.0) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(dl, "open_url", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", tmp_path)
    msg = str(err.value)
    assert "network unreachable" in msg and str(tmp_path / "cifar-100-python.tar.gz") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg


def test_cifar_download_verify_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    ref = _fake_cifar(src, hundred=False)
    archive = _archive_of(src / "cifar-10-batches-py", tmp_path / "fake.tar.gz")
    payload = archive.read_bytes()
    fake = dl.Resource(
        url="https://example.invalid/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5=hashlib.md5(payload).hexdigest(),
    )
    monkeypatch.setattr(dl, "CIFAR10_RESOURCE", fake)
    calls: list[str] = []

    def serve(url: str, timeout: float = 60.0) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(dl, "open_url", serve)
    root = tmp_path / "data"
    ds = load_dataset("cifar10", root)
    assert calls == [fake.url]
    assert (root / "cifar-10-python.tar.gz").read_bytes() == payload
    assert ds.train_y.tolist() == ref["train_y"].tolist()
    assert sorted(p.name for p in root.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]
    load_dataset("cifar10", root)  # now present: no second download
    assert len(calls) == 1

    # an archive already in data_dir is verified and extracted without downloading
    root2 = tmp_path / "data2"
    root2.mkdir()
    (root2 / "cifar-10-python.tar.gz").write_bytes(payload)
    assert load_dataset("cifar10", root2, download=False).train_x.shape == (30, 3, 32, 32)
    # ... and a damaged one is reported as such
    root3 = tmp_path / "data3"
    root3.mkdir()
    (root3 / "cifar-10-python.tar.gz").write_bytes(payload[:-100])
    with pytest.raises(DatasetCorruptError, match="corrupt or incomplete: md5"):
        load_dataset("cifar10", root3, download=False)


def test_cifar_download_with_bad_checksum_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "open_url", lambda url, timeout=60.0: io.BytesIO(b"not cifar"))
    with pytest.raises(DatasetCorruptError, match="md5"):
        load_dataset("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cifar_corrupt_or_malicious_pickles_are_refused(tmp_path: Path) -> None:
    _fake_cifar(tmp_path, hundred=False)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DatasetCorruptError, match="data_batch_2"):
        load_dataset("cifar10", tmp_path, download=False)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    batch.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetCorruptError, match="refusing to load"):
        load_dataset("cifar10", tmp_path, download=False)


def test_safe_extract_rejects_path_traversal_and_links(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("top/../../escape.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DatasetCorruptError, match="unsafe path"):
        dl.safe_extract(evil, tmp_path / "out", expect="top")
    assert not (tmp_path / "escape.txt").exists()

    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("top/passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DatasetCorruptError, match="link"):
        dl.safe_extract(link, tmp_path / "out", expect="top")

    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"x" * 100)
    with pytest.raises(DatasetCorruptError, match="corrupt or not a tar archive"):
        dl.safe_extract(garbage, tmp_path / "out", expect="top")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # temp folders cleaned up


def test_dataset_checks_split_lengths() -> None:
    with pytest.raises(ValueError, match="train_x has 3 samples but train_y has 2"):
        Dataset(
            "x",
            "vector",
            torch.zeros(3, 2),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(1, 2),
            torch.zeros(1, dtype=torch.long),
            2,
            ["a", "b"],
            None,
            None,
        )
