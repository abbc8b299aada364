"""tamegrad.data imagefolder / cifar10-jpeg: folders and archives, decoding, caching."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tamegrad.data import DatasetCorruptError, DatasetNotFoundError, load_dataset
from tamegrad.data import imagefolder as imf
from tamegrad.data.base import channel_stats
from tamegrad.data.cifar import CIFAR10_CLASSES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["bee", "ant", "cat"]  # written in non-sorted order on purpose
H, W = 5, 6


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TAMEGRAD_CACHE", str(cache))
    return cache


def _pixels(cls: int, i: int, split: str) -> np.ndarray:
    rng = np.random.default_rng(1000 * cls + i + (500 if split == "test" else 0))
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _make_tree(root: Path, n_train: int = 4, n_test: int = 2) -> dict[str, list[tuple[str, int]]]:
    """PNG tree root/{train,test}/<class>/<i>.png; returns the expected (file, label) order."""
    expected: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_pixels(CLASSES.index(cls), i, split)).save(d / f"{i:03d}.png")
    for split in ("train", "test"):
        n = n_train if split == "train" else n_test
        for label, cls in enumerate(sorted(CLASSES)):
            expected[split] += [(f"{cls}/{i:03d}", label) for i in range(n)]
    (root / "README.txt").write_text("not an image")
    (root / "train" / "ant" / "notes.txt").write_text("ignored")
    return expected


def _expected_x(expected: list[tuple[str, int]], split: str) -> torch.Tensor:
    arrays = []
    for name, _ in expected:
        cls, i = name.split("/")
        arrays.append(_pixels(CLASSES.index(cls), int(i), split))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def _tar(src: Path, dest: Path, arcname: str | None) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        if arcname is None:
            for child in sorted(src.iterdir()):
                tf.add(child, arcname=child.name)
        else:
            tf.add(src, arcname=arcname)
    return dest


def test_folder_decodes_sorted_classes_exact_pixels_and_stats(tmp_path: Path) -> None:
    expected = _make_tree(tmp_path / "tree")
    ds = load_dataset("imagefolder", tmp_path / "tree")
    assert ds.kind == "image" and ds.name == "imagefolder"
    assert ds.classes == ["ant", "bee", "cat"] and ds.num_classes == 3
    assert ds.train_x.shape == (12, 3, H, W) and ds.test_x.shape == (6, 3, H, W)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [lab for _, lab in expected["train"]]
    assert torch.equal(ds.train_x, _expected_x(expected["train"], "train"))
    assert torch.equal(ds.test_x, _expected_x(expected["test"], "test"))
    mean, std = channel_stats(ds.train_x)
    assert ds.mean == pytest.approx(mean) and ds.std == pytest.approx(std)
    assert len(ds.mean) == 3


@pytest.mark.parametrize("wrapper", [None, "mydata"])
def test_archive_with_or_without_top_folder_equals_folder(
    tmp_path: Path, wrapper: str | None
) -> None:
    _make_tree(tmp_path / "tree")
    archive = _tar(tmp_path / "tree", tmp_path / "data.tar.gz", wrapper)
    from_folder = load_dataset("imagefolder", tmp_path / "tree")
    from_tar = load_dataset("imagefolder", archive)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(from_folder, field), getattr(from_tar, field)), field
    assert from_tar.classes == from_folder.classes
    # a folder whose only content is one wrapping folder works too
    assert torch.equal(load_dataset("imagefolder", tmp_path).train_x, from_folder.train_x)


def test_plain_tar_fast_path_agrees_with_tarfile(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    for fmt in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            tf.add(tmp_path / "tree", arcname="w" * 120 if fmt != tarfile.USTAR_FORMAT else "w")
        raw = buf.getvalue()
        fast = imf._plain_tar_files(raw)
        slow = imf._tarfile_files(raw)
        if fmt == tarfile.USTAR_FORMAT:
            assert fast == slow
        else:  # long names need GNU/pax extension headers: the fast path declines
            assert fast is None
        assert len(slow) == 3 * 6 + 2


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        Image.new("L", (W, H), 77).save(root / split / "a" / "grey.png")
        Image.new("RGBA", (W, H), (10, 20, 30, 40)).save(root / split / "a" / "rgba.png")
    ds = load_dataset("imagefolder", root)
    assert ds.train_x.shape == (2, 3, H, W)
    assert ds.train_x[0, :, 0, 0].tolist() == [77, 77, 77]  # grey.png sorts first
    assert ds.train_x[1, :, 0, 0].tolist() == [10, 20, 30]


def test_cache_hit_skips_decoding_and_changes_invalidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_cache: Path
) -> None:
    _make_tree(tmp_path / "tree")
    first = load_dataset("imagefolder", tmp_path / "tree")
    caches = list(_isolated_cache.glob("imagefolder-*.pt"))
    assert len(caches) == 1 and not list(_isolated_cache.glob(".*"))  # no temp files left

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite a valid cache")

    with monkeypatch.context() as m:
        m.setattr(imf, "_decode_all", boom)
        second = load_dataset("imagefolder", tmp_path / "tree")
    assert torch.equal(first.train_x, second.train_x) and second.mean == first.mean

    # adding an image changes the folder's key: rebuilt, new cache file
    Image.fromarray(_pixels(0, 99, "train")).save(tmp_path / "tree" / "train" / "ant" / "zzz.png")
    third = load_dataset("imagefolder", tmp_path / "tree")
    assert third.train_x.shape[0] == 13
    assert len(list(_isolated_cache.glob("imagefolder-*.pt"))) == 2

    # an archive's key follows its mtime
    archive = _tar(tmp_path / "tree", tmp_path / "a.tar.gz", None)
    load_dataset("imagefolder", archive)
    os.utime(archive, (time.time() + 10, time.time() + 10))
    monkeypatch.setattr(imf, "_decode_all", boom)
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("imagefolder", archive)


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path: Path, _isolated_cache: Path) -> None:
    _make_tree(tmp_path / "tree")
    first = load_dataset("imagefolder", tmp_path / "tree")
    (cache,) = _isolated_cache.glob("imagefolder-*.pt")
    cache.write_bytes(b"garbage, not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable image cache"):
        again = load_dataset("imagefolder", tmp_path / "tree")
    assert torch.equal(first.train_x, again.train_x)
    torch.save({"key": "other"}, cache)
    with pytest.warns(UserWarning, match="ignoring invalid image cache"):
        load_dataset("imagefolder", tmp_path / "tree")
    assert torch.load(cache, weights_only=True)["train_x"].shape == (12, 3, H, W)


def test_cache_can_be_disabled(tmp_path: Path, _isolated_cache: Path) -> None:
    _make_tree(tmp_path / "tree")
    load_dataset("imagefolder", tmp_path / "tree", cache=False)
    assert not _isolated_cache.exists()


def test_process_pool_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_tree(tmp_path / "tree")
    serial = load_dataset("imagefolder", tmp_path / "tree", workers=1, cache=False)
    monkeypatch.setattr(imf, "_CHUNK", 4)
    pooled = load_dataset("imagefolder", tmp_path / "tree", workers=2, cache=False)
    assert torch.equal(serial.train_x, pooled.train_x) and torch.equal(serial.test_x, pooled.test_x)


def test_images_of_different_sizes_are_rejected(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    Image.new("RGB", (7, 7)).save(tmp_path / "tree" / "test" / "cat" / "big.png")
    with pytest.raises(ValueError, match=r"same size: test/cat/big.png is 7x7.*6x5"):
        load_dataset("imagefolder", tmp_path / "tree")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "missing")):
        load_dataset("imagefolder", tmp_path / "missing")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("imagefolder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images found in train/<class>/"):
        load_dataset("imagefolder", tmp_path / "empty")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(DatasetCorruptError, match=r"bad\.tar\.gz is corrupt"):
        load_dataset("imagefolder", bad)
    _make_tree(tmp_path / "tree")
    good = _tar(tmp_path / "tree", tmp_path / "t.tar.gz", None).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetCorruptError, match=r"truncated\.tar\.gz is corrupt"):
        load_dataset("imagefolder", truncated)
    (tmp_path / "tree" / "train" / "bee" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetCorruptError, match=r"cannot decode image train/bee/broken\.png"):
        load_dataset("imagefolder", tmp_path / "tree")


def test_test_classes_must_exist_in_train(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "test" / "dog").mkdir()
    Image.fromarray(_pixels(0, 0, "test")).save(tmp_path / "tree" / "test" / "dog" / "0.png")
    with pytest.raises(ValueError, match="test/ has classes missing from train/: dog"):
        load_dataset("imagefolder", tmp_path / "tree")


def test_cifar10_jpeg_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "cifar10-jpeg.tar.gz")):
        load_dataset("cifar10-jpeg", tmp_path)


def test_cifar10_jpeg_uses_archive_in_data_dir(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree")
    _tar(tmp_path / "tree", tmp_path / "cifar10-jpeg.tar.gz", "cifar10")
    with pytest.raises(DatasetCorruptError, match="classes are ant, bee, cat; missing airplane"):
        load_dataset("cifar10-jpeg", tmp_path)
    ds = load_dataset("cifar10-jpeg", tmp_path, check_complete=False)
    assert ds.name == "cifar10-jpeg" and ds.train_x.shape == (12, 3, H, W)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)


def _cifar_like_tar(dest: Path, n_train: int = 2, n_test: int = 1) -> bytes:
    """A ustar archive of train/<c>/i.png then test/<c>/i.png for CIFAR-10's classes, in that
    order (as the real archive is), written gzipped to ``dest``; returns the tar's bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for split, n in (("train", n_train), ("test", n_test)):
            for k, cls in enumerate(CIFAR10_CLASSES):
                for i in range(n):
                    png = io.BytesIO()
                    Image.fromarray(_pixels(k, i, split)).save(png, format="PNG")
                    info = tarfile.TarInfo(f"cifar10/{split}/{cls}/{i:04d}.png")
                    info.size = png.tell()
                    png.seek(0)
                    tf.addfile(info, png)
    raw = buf.getvalue()
    dest.write_bytes(zlib.compress(raw, wbits=31))  # gzip
    return raw


def test_partial_archive_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    # issue 16 item 9: a copy that ends cleanly at a file boundary, before test/horse
    raw = _cifar_like_tar(tmp_path / "full.tar.gz")
    members = imf._plain_tar_files(raw) or []
    cut = next(off - 512 for name, off, _ in members if "test/horse" in name)  # its header
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10-jpeg.tar.gz").write_bytes(zlib.compress(raw[:cut], wbits=31))
    assert imf._plain_tar_files(raw[:cut]) is not None  # the tar itself reads as complete
    missing = "test/ has no images of horse, ship, truck, which train/ has"
    for kwargs in ({}, {"check_complete": False}, {"cache": False}):
        with pytest.raises(DatasetCorruptError, match=missing):
            load_dataset("cifar10-jpeg", data, **kwargs)
    with pytest.raises(DatasetCorruptError, match=missing):  # the generic loader too
        load_dataset("imagefolder", data / "cifar10-jpeg.tar.gz")
    # the complete (small) archive loads once its counts are not checked; checked, every class
    # and split whose count differs from CIFAR-10's is named
    (data / "cifar10-jpeg.tar.gz").write_bytes((tmp_path / "full.tar.gz").read_bytes())
    ds = load_dataset("cifar10-jpeg", data, check_complete=False)
    assert ds.classes == list(CIFAR10_CLASSES) and ds.test_x.shape[0] == 10
    with pytest.raises(DatasetCorruptError, match=r"train/airplane has 2 images.*test/truck has 1"):
        load_dataset("cifar10-jpeg", data)


def test_cached_content_is_checked_too(tmp_path: Path, _isolated_cache: Path) -> None:
    _make_tree(tmp_path / "tree")
    load_dataset("imagefolder", tmp_path / "tree")
    (cache,) = _isolated_cache.glob("imagefolder-*.pt")
    content = torch.load(cache, weights_only=True)
    keep = content["test_y"] != 2  # as if a partial archive had been cached before the check
    content["test_x"], content["test_y"] = content["test_x"][keep], content["test_y"][keep]
    torch.save(content, cache)
    with pytest.raises(DatasetCorruptError, match="test/ has no images of cat"):
        load_dataset("imagefolder", tmp_path / "tree")


@pytest.mark.slow
def test_real_cifar10_jpeg_decodes_and_caches(tmp_path: Path) -> None:
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not available")
    t0 = time.perf_counter()
    ds = load_dataset("cifar10-jpeg", SHARED_DATA)
    first = time.perf_counter() - t0
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8
    assert ds.classes == [
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
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    # decoded pixels agree with Pillow for a sample image (first training 'cat')
    raw = zlib.decompress(archive.read_bytes(), wbits=47)
    members = imf._plain_tar_files(raw) or imf._tarfile_files(raw)
    _, off, size = next(m for m in members if m[0].endswith("train/cat/0000.jpg"))
    ref = np.array(Image.open(io.BytesIO(raw[off : off + size])).convert("RGB"))
    assert torch.equal(ds.train_x[3 * 5000], torch.from_numpy(ref).permute(2, 0, 1))
    t0 = time.perf_counter()
    again = load_dataset("cifar10-jpeg", SHARED_DATA)
    second = time.perf_counter() - t0
    assert torch.equal(again.test_x, ds.test_x)
    assert second < 5.0 and second < first / 3, (first, second)
    print(f"cifar10-jpeg: first load {first:.1f}s, cached load {second:.2f}s")
