"""Data sources: real Fashion-MNIST, fake CIFAR pickles and image folders, splits, transforms and loaders."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

import training.data
from training.data import FASHION_MNIST_ENV, FASHION_MNIST_LABELS, load_data, make_loader

# -- Fashion-MNIST: the real Debian package ---------------------------------------------------------


def test_fashion_mnist_default_splits_and_info():
    sizes = {split: len(load_data("fashion-mnist", split)[0]) for split in ("train", "val", "test")}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    _, info = load_data("fashion-mnist", "test")
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == ("fashion-mnist", 10, 1, 28)
    assert info.labels == FASHION_MNIST_LABELS and info.crop_pct == 1.0
    assert info.mean == (0.2860,) and info.std == (0.3530,)


def test_fashion_mnist_full_epoch_through_a_loader_covers_every_item_once():
    train, _ = load_data("fashion-mnist", "train", augment=True)
    batches = list(make_loader(train, 256, shuffle=True))
    labels = torch.cat([y for _, y in batches])
    assert batches[-1][0].shape == (55000 % 256, 1, 28, 28) and batches[-1][0].dtype == torch.float32
    assert len(labels) == 55000 and labels.min() == 0 and labels.max() == 9
    assert torch.equal(labels.sort().values, train.labels[train.indices].sort().values)


def test_fashion_mnist_val_is_a_seeded_disjoint_part_of_train():
    train, _ = load_data("fashion-mnist", "train")
    val, _ = load_data("fashion-mnist", "val")
    train_ids, val_ids = set(train.indices.tolist()), set(val.indices.tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 60000
    assert torch.equal(load_data("fashion-mnist", "val")[0].indices, val.indices)
    assert not torch.equal(load_data("fashion-mnist", "val", seed=1)[0].indices, val.indices)
    small_val, _ = load_data("fashion-mnist", "val", val_size=100, seed=3)
    assert len(small_val) == 100 and len(load_data("fashion-mnist", "train", val_size=0)[0]) == 60000


def test_fashion_mnist_is_normalised():
    train, _ = load_data("fashion-mnist", "train")
    x = torch.stack([img for img, _ in train.__getitems__(list(range(0, 55000, 20)))])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_flip_only_when_augmenting():
    plain, _ = load_data("fashion-mnist", "train")
    augmented, _ = load_data("fashion-mnist", "train", augment=True)
    x = plain[7][0]
    assert torch.equal(plain[7][0], x)
    torch.manual_seed(0)
    draws = [augmented[7][0] for _ in range(40)]
    flipped = [torch.equal(d, x.flip(-1)) for d in draws]
    assert all(f or torch.equal(d, x) for f, d in zip(flipped, draws, strict=True))
    assert 0 < sum(flipped) < len(draws)


def test_random_crop_padding_shifts_within_padding():
    plain, info = load_data("fashion-mnist", "train")
    augmented, _ = load_data("fashion-mnist", "train", augment=True, random_crop_padding=2)
    background = -info.mean[0] / info.std[0]  # zero pixels, normalised
    padded = torch.nn.functional.pad(plain[0][0], (2, 2, 2, 2), value=background)
    candidates = [v[:, dy:dy + 28, dx:dx + 28] for v in (padded, padded.flip(-1)) for dy in range(5) for dx in range(5)]
    torch.manual_seed(0)
    for _ in range(10):
        x = augmented[0][0]
        assert x.shape == (1, 28, 28) and any(torch.allclose(x, c, atol=1e-6) for c in candidates)
    with pytest.raises(ValueError, match="random_crop_padding"):
        load_data("fashion-mnist", "train", random_crop_padding=2)


def test_fashion_mnist_upscaled_to_224_rgb():
    test, info = load_data("fashion-mnist", "test", img_size=224, in_chans=3)
    x, y = test[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert (info.img_size, info.in_chans, info.mean, info.std) == (224, 3, (0.2860,) * 3, (0.3530,) * 3)
    # the upscaled image is the native one, smoothly resized: block averages match closely
    native = load_data("fashion-mnist", "test")[0][0][0][0]
    assert (x[0].view(28, 8, 28, 8).mean((1, 3)) - native).abs().mean() < 0.1


def test_augment_refused_outside_train():
    with pytest.raises(ValueError, match="train split"):
        load_data("fashion-mnist", "val", augment=True)
    with pytest.raises(ValueError, match="auto_augment"):
        load_data("fashion-mnist", "train", augment=True, auto_augment="rand-m9-mstd0.5")
    with pytest.raises(ValueError, match="split must be one of"):
        load_data("fashion-mnist", "dev")


# -- Fashion-MNIST: missing and damaged files ------------------------------------------------------


def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fake_fashion_mnist(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(2051, rng.integers(0, 256, (n, 28, 28)))))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(2049, np.arange(n) % 10)))
    return root


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", "train")


def test_fake_idx_files_parse(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(_write_fake_fashion_mnist(tmp_path)))
    train, _ = load_data("fashion-mnist", "train", val_size=5)
    test, _ = load_data("fashion-mnist", "test")
    assert (len(train), len(test)) == (25, 10)
    assert [test[i][1] for i in range(10)] == list(range(10))
    with pytest.raises(ValueError, match="val_size 5000 leaves no training data"):
        load_data("fashion-mnist", "train")


@pytest.mark.parametrize("damage", ["truncated-gzip", "not-gzip", "wrong-magic", "short-data", "count-mismatch"])
def test_damaged_idx_file_is_named(tmp_path, monkeypatch, damage):
    root = _write_fake_fashion_mnist(tmp_path)
    target = root / ("train-labels-idx1-ubyte.gz" if damage == "count-mismatch" else "train-images-idx3-ubyte.gz")
    raw = gzip.decompress(target.read_bytes())
    damaged = {
        "truncated-gzip": lambda: gzip.compress(raw)[:200],
        "not-gzip": lambda: b"this is not gzip data",
        "wrong-magic": lambda: gzip.compress((2049).to_bytes(4, "big") + raw[4:]),
        "short-data": lambda: gzip.compress(raw[:-100]),
        "count-mismatch": lambda: gzip.compress(_idx_bytes(2049, np.arange(29) % 10)),
    }[damage]()
    target.write_bytes(damaged)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    with pytest.raises(ValueError, match=target.name):
        load_data("fashion-mnist", "train", val_size=5)


# -- CIFAR: tiny pickles in the real format ----------------------------------------------------------


def _cifar_rows(n: int, offset: int) -> np.ndarray:
    return ((np.arange(n * 3072).reshape(n, 3072) + offset) % 256).astype(np.uint8)


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj))


def _write_cifar10(root: Path) -> Path:
    batches = root / "cifar-10-batches-py"
    batches.mkdir()
    for i in range(1, 6):
        _dump(batches / f"data_batch_{i}", {b"data": _cifar_rows(20, i), b"labels": [j % 10 for j in range(20)]})
    _dump(batches / "test_batch", {b"data": _cifar_rows(10, 0), b"labels": list(range(10))})
    _dump(batches / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return batches


def test_cifar10_from_parent_or_batches_dir(tmp_path):
    batches = _write_cifar10(tmp_path)
    for source in (f"cifar10:{tmp_path}", f"cifar10:{batches}"):
        train, info = load_data(source, "train", val_size=10)
        val, _ = load_data(source, "val", val_size=10)
        test, _ = load_data(source, "test")
        assert (len(train), len(val), len(test)) == (90, 10, 10)
        assert info.labels == tuple(f"c{i}" for i in range(10)) and info.in_chans == 3 and info.img_size == 32
    x, y = test[3]
    assert x.shape == (3, 32, 32) and y == 3
    expected = torch.from_numpy(_cifar_rows(10, 0)[3].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    assert torch.allclose(x, (expected - mean) / std, atol=1e-5)


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _dump(root / "train", {b"data": _cifar_rows(50, 1), b"fine_labels": [i * 2 for i in range(50)]})
    _dump(root / "test", {b"data": _cifar_rows(10, 0), b"fine_labels": [99] * 10})
    _dump(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    train, info = load_data(f"cifar100:{tmp_path}", "train", val_size=5, img_size=16)
    test, _ = load_data(f"cifar100:{tmp_path}", "test")
    assert len(train) == 45 and train[0][0].shape == (3, 16, 16) and info.img_size == 16
    assert info.num_classes == 100 and info.labels[99] == "f99" and test[0][1] == 99


def test_cifar_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        load_data(f"cifar10:{tmp_path}", "test")
    _write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="in_chans=1"):
        load_data(f"cifar10:{tmp_path}", "test", in_chans=1)
    (tmp_path / "broken").mkdir()
    broken = _write_cifar10(tmp_path / "broken")
    (broken / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="test_batch"):
        load_data(f"cifar10:{broken}", "test")
    _dump(broken / "test_batch", {b"data": _cifar_rows(10, 0), b"labels": [10] * 10})
    with pytest.raises(ValueError, match=r"test_batch: labels must lie in 0\.\.9"):
        load_data(f"cifar10:{broken}", "test")


# -- image folders -------------------------------------------------------------------------------------


def _write_folder(root: Path, split: str, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(len(split))
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


@pytest.fixture
def folder(tmp_path) -> Path:
    _write_folder(tmp_path, "train", ["cat", "dog", "emu"], 4)
    _write_folder(tmp_path, "val", ["cat", "dog", "emu"], 2)
    return tmp_path


def test_folder_splits_and_classes(folder):
    train, info = load_data(f"folder:{folder}", "train", img_size=32, val_size=3, augment=True)
    val, _ = load_data(f"folder:{folder}", "val", img_size=32, val_size=3)
    test, _ = load_data(f"folder:{folder}", "test", img_size=32)
    assert (len(train), len(val), len(test)) == (9, 3, 6)
    assert not set(train.indices) & set(val.indices)
    assert info.labels == ("cat", "dog", "emu") and info.num_classes == 3 and info.crop_pct == 0.875
    x, y = test[5]
    assert x.shape == (3, 32, 32) and y == 2 and train[0][0].shape == (3, 32, 32)
    assert len(load_data(f"folder:{folder}", "val", img_size=32)[0]) == 1  # default: 10% of 12


def test_folder_test_dir_preferred_and_must_match_classes(folder):
    _write_folder(folder, "test", ["cat", "dog"], 1)
    with pytest.raises(ValueError, match=r"missing \['emu'\]"):
        load_data(f"folder:{folder}", "test")


def test_folder_corrupt_image_is_named_when_read(folder):
    bad = folder / "val" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    test, _ = load_data(f"folder:{folder}", "test", img_size=32)
    index = [Path(p).name for p, _ in test.samples].index("broken.png")
    with pytest.raises(ValueError, match="broken.png"):
        test[index]


def test_folder_missing_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        load_data(f"folder:{tmp_path}", "train")


def _train_size(root: Path) -> int:
    return len(load_data(f"folder:{root}", "train", val_size=0)[0])


def test_folder_walk_keeps_imagefolders_order(folder):
    (folder / "train" / "cat" / "sub").mkdir()
    (folder / "train" / "cat" / "sub-x").mkdir()
    for name in ("sub/a.png", "sub-x/b.jpg"):
        Image.new("RGB", (4, 4)).save(folder / "train" / "cat" / name)
    ours = load_data(f"folder:{folder}", "train", val_size=0)[0].dataset.samples
    assert ours == ImageFolder(str(folder / "train")).samples and len(ours) == 14


@pytest.mark.parametrize("target, message", [(".", "symlink loop: .*train/dog/loop leads back to"),
                                             ("..", "symlink loop: .*train/dog/loop leads back to"),
                                             ("../..", "the link .*train/dog/loop leads out of it")])
def test_folder_symlink_loop_is_refused_naming_the_link(folder, target, message):
    """os.walk(followlinks=True) went round such a loop up to the kernel's link limit (each image counted dozens of
    times; two such links: no end)."""
    os.symlink(target, folder / "train" / "dog" / "loop")
    with pytest.raises(ValueError, match=message):
        load_data(f"folder:{folder}", "train")


def test_folder_symlink_loop_pair_ends_at_once(folder):
    for name in ("up", "up2"):
        os.symlink("..", folder / "train" / "dog" / name)
    code = f"from training.data import load_data; load_data('folder:{folder}', 'train')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "symlink loop" in run.stderr


def test_folder_links_inside_count_each_image_once(folder):
    (folder / "train" / "cat" / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(folder / "train" / "cat" / "sub" / "x.png")
    os.symlink("sub", folder / "train" / "cat" / "again")  # a second way into one folder
    os.symlink("0.png", folder / "train" / "cat" / "copy.png")  # a second name for one image
    os.link(folder / "train" / "dog" / "0.png", folder / "train" / "dog" / "hard.png")  # a hard link: its own file
    assert _train_size(folder) == 12 + 1 + 1


def test_folder_links_out_of_the_folder_are_refused(folder, tmp_path_factory):
    """Paths from data never leave their folder: a link out is refused, not skipped (no image silently missing)."""
    outside = tmp_path_factory.mktemp("outside")
    Image.new("RGB", (4, 4)).save(outside / "x.png")
    os.symlink(outside / "x.png", folder / "train" / "cat" / "x.png")
    with pytest.raises(ValueError, match=r"the link .*cat/x.png leads out of it"):
        _train_size(folder)
    (folder / "train" / "cat" / "x.png").unlink()
    os.symlink(outside, folder / "train" / "cat" / "more")
    with pytest.raises(ValueError, match=r"the link .*cat/more leads out of it"):
        _train_size(folder)
    (folder / "train" / "cat" / "more").unlink()
    os.symlink("../../val/cat/0.png", folder / "train" / "cat" / "from-val.png")  # the split folder is the bound
    with pytest.raises(ValueError, match="leads out of it"):
        _train_size(folder)


@pytest.mark.parametrize("make, message", [
    (lambda cat: os.symlink("../dog", cat / "dog"), "one label"),
    (lambda cat: os.symlink("../dog/0.png", cat / "d.png"), "one label"),
    (lambda cat: os.symlink("nothing.png", cat / "x.png"), "leads nowhere"),
    (lambda cat: os.symlink("x.png", cat / "x.png"), "leads nowhere"),
    (lambda cat: os.mkfifo(cat / "x.png"), "not a regular file"),  # reading it would wait for ever
])
def test_folder_entries_that_cannot_be_one_image_of_one_class_are_refused(folder, make, message):
    make(folder / "train" / "cat")
    with pytest.raises(ValueError, match=message):
        _train_size(folder)


def test_folder_walk_is_bounded(folder, monkeypatch):
    deep = folder / "train" / "cat" / ("d/" * 17)
    deep.mkdir(parents=True)
    with pytest.raises(ValueError, match="folders deep"):
        _train_size(folder)
    monkeypatch.setattr(training.data, "FOLDER_MAX_ENTRIES", 10)
    (folder / "train" / "cat" / "d").rename(folder / "d")
    with pytest.raises(ValueError, match="holds over 10 entries"):
        _train_size(folder)


def test_folder_needs_two_classes_and_says_when_its_default_val_split_is_empty(tmp_path):
    _write_folder(tmp_path / "one", "train", ["cat"], 20)
    with pytest.raises(ValueError, match=r"1 class folder \(cat\): a classifier needs at least 2"):
        load_data(f"folder:{tmp_path / 'one'}", "train")
    _write_folder(tmp_path / "small", "train", ["cat", "dog"], 3)
    with pytest.raises(ValueError, match=r"has 6 images: its default validation split .* give val_size"):
        load_data(f"folder:{tmp_path / 'small'}", "val")
    assert len(load_data(f"folder:{tmp_path / 'small'}", "val", val_size=2)[0]) == 2


# -- synthetic, sources, loaders --------------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
    data, info = load_data("synthetic:8", "train")
    assert len(data) == 8 and data[0][0].shape == (3, 224, 224) and info.num_classes == 10
    assert torch.equal(data[3][0], load_data("synthetic:8", "train")[0][3][0])
    small, _ = load_data("synthetic:8", "test", img_size=16, in_chans=1)
    assert small[0][0].shape == (1, 16, 16) and 0 <= small[0][1] < 10
    assert not torch.equal(small[0][0], load_data("synthetic:8", "train", img_size=16, in_chans=1)[0][0][0])
    with pytest.raises(ValueError, match="no validation images unless val_size is given"):
        load_data("synthetic:8", "val")
    assert len(load_data("synthetic:8", "val", val_size=2)[0]) == 2


@pytest.mark.parametrize("source", ["mnist", "cifar10", "cifar10:", "synthetic:x", "fashion-mnist:/tmp", ""])
def test_unknown_source_lists_accepted_forms(source):
    with pytest.raises(ValueError, match=r"cifar10:<dir>|positive image count"):
        load_data(source, "train")


def test_loader_order_depends_on_seed_and_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(100))

    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat([b for (b,) in make_loader(data, 16, shuffle=True, seed=seed, epoch=epoch)]).tolist()

    assert order(0, 0) == order(0, 0) and sorted(order(0, 0)) == list(range(100))
    assert order(0, 1) != order(0, 0) and order(1, 0) != order(0, 0)
    assert [b for (b,) in make_loader(data, 50, shuffle=False)][0].tolist() == list(range(50))
