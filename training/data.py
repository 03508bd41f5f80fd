"""Datasets for training and evaluating zoo models: Fashion-MNIST, CIFAR, image folders and synthetic data.

Every source yields `(float32 CxHxW tensor normalised with mean/std, int label)` items together with a
`DataInfo` recording the preprocessing, so that a zoo index can reproduce it when serving.

The "val" split is always held out of the *training* set (for selection and search); the test set is
only ever the source's own test data. Small in-memory datasets keep one uint8 tensor and transform
whole batches at once, because per-item Python work would dominate an epoch over 28² images.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes, has_file_allowed_extension

SPLITS = ("train", "val", "test")
SOURCE_FORMS = ("fashion-mnist", "cifar10:<dir>", "cifar100:<dir>", "folder:<dir>", "synthetic:<n>")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "PREZOO_FASHION_MNIST_DIR"
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
SMALL_DATASET_VAL_SIZE = 5000
FOLDER_VAL_FRACTION = 0.1
FOLDER_MAX_VAL_SIZE = 10000
FOLDER_IMG_SIZE = 224
FOLDER_CROP_PCT = 0.875
FOLDER_MAX_DEPTH = 16  # folders below a class folder
FOLDER_MAX_ENTRIES = 20_000_000  # files and folders an image folder's walk reads (ImageNet-21k: 14M images)
SYNTHETIC_IMG_SIZE = 224
SYNTHETIC_NUM_CLASSES = 10
INTERPOLATION = "bicubic"


@dataclass(frozen=True)
class DataInfo:
    """The preprocessing a model was trained with: what a zoo index records and a server reproduces."""

    name: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    interpolation: str
    crop_pct: float


# -- batched tensor pipeline for in-memory datasets -------------------------------------------------


@dataclass(frozen=True)
class TensorTransform:
    """uint8 (B,C,H,W) -> normalised float32, run per batch so an epoch costs almost nothing."""

    size: int
    chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = False
    crop_padding: int = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if self.crop_padding:
            x = _random_crop(x, self.crop_padding)
        if self.flip:
            x = _random_flip(x)
        if x.shape[-2:] != (self.size, self.size):
            # antialias=True gives PIL's bicubic kernel, matching the PIL-based resize a server does
            x = F.interpolate(x, size=(self.size, self.size), mode=INTERPOLATION, align_corners=False,
                              antialias=True).clamp_(0, 1)
        chans = x.shape[1]  # normalise before repeating gray: the repeated mean/std are equal per channel
        x = (x - torch.tensor(self.mean[:chans]).view(1, -1, 1, 1)) / torch.tensor(self.std[:chans]).view(1, -1, 1, 1)
        return x if chans == self.chans else x.expand(-1, self.chans, -1, -1).contiguous()


def _random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by `pad` and crop back at a random offset per image (the classic CIFAR shift)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (x.shape[0],)).tolist()
    dx = torch.randint(0, 2 * pad + 1, (x.shape[0],)).tolist()
    return torch.stack([padded[i, :, y:y + h, c:c + w] for i, (y, c) in enumerate(zip(dy, dx, strict=True))])


class TensorImageDataset(Dataset):
    """A view (`indices`) of an in-memory uint8 image tensor; `__getitems__` lets DataLoader fetch by batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 transform: TensorTransform) -> None:
        self.images = images
        self.labels = labels
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, int]]:
        rows = self.indices[torch.as_tensor(items, dtype=torch.long)]
        x = self.transform(self.images[rows])
        return list(zip(x.unbind(0), self.labels[rows].tolist(), strict=True))


@dataclass(frozen=True)
class _TensorSource:
    """A whole dataset held in memory: uint8 (N,C,H,W) images and int64 labels for train and test."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    labels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


# -- Fashion-MNIST (Debian's dataset-fashion-mnist) -------------------------------------------------


def _fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzip IDX file (big-endian header: magic, then one uint32 per dimension, then uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"Fashion-MNIST file {path} is not a readable gzip file ({e}); reinstall the dataset") from e
    got = int.from_bytes(raw[:4], "big")
    if len(raw) < 4 or got != magic:
        raise ValueError(f"Fashion-MNIST file {path} has IDX magic number {got}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"Fashion-MNIST file {path} is truncated inside its IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(f"Fashion-MNIST file {path} holds {len(raw) - header} data bytes but its header "
                         f"(dims {dims}) promises {expected}: the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_idx_pair(directory: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_path = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = directory / f"{prefix}-labels-idx1-ubyte.gz"
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST files {images_path} and {labels_path} disagree: "
                         f"{len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_LABELS):
        raise ValueError(f"Fashion-MNIST file {labels_path} has label {labels.max()}; labels must be 0..9")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist(directory: str) -> _TensorSource:
    """Parse the four IDX files once per process; about 55 MB as uint8."""
    root = Path(directory)
    names = [f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST not found: {root} lacks {missing}. Install it with "
                                f"`sudo apt-get install dataset-fashion-mnist`, or set {FASHION_MNIST_ENV} "
                                "to a directory holding those files")
    train_images, train_labels = _read_idx_pair(root, "train")
    test_images, test_labels = _read_idx_pair(root, "t10k")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"Fashion-MNIST in {root}: train images are {tuple(train_images.shape[2:])} "
                         f"but test images are {tuple(test_images.shape[2:])}")
    return _TensorSource("fashion-mnist", train_images, train_labels, test_images, test_labels,
                         FASHION_MNIST_LABELS, mean=(0.2860,), std=(0.3530,))


# -- CIFAR-10 / CIFAR-100 (python pickle form) ----------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    subdir: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                            "batches.meta", b"labels", b"label_names",
                            mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names",
                             mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def _cifar_dir(root: Path, layout: _CifarLayout) -> Path:
    """Accept either the batches directory itself or its parent."""
    for candidate in (root, root / layout.subdir):
        if (candidate / layout.meta_file).is_file():
            return candidate
    files = [*layout.train_files, layout.test_file, layout.meta_file]
    raise FileNotFoundError(f"no CIFAR data in {root}: expected {layout.meta_file} there or in "
                            f"{root / layout.subdir} (files {files})")


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file {path} is missing")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except Exception as e:  # unpickling a damaged file can raise almost any exception type
        raise ValueError(f"CIFAR file {path} cannot be unpickled ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"CIFAR file {path} holds a {type(data).__name__}, expected a dict")
    return data


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _read_pickle(path)
    if b"data" not in batch or label_key not in batch:
        raise ValueError(f"CIFAR file {path} lacks key b'data' or {label_key!r}; keys: {sorted(batch)}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR file {path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"CIFAR file {path}: {len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"CIFAR file {path}: labels must lie in 0..{num_classes - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _load_cifar(directory: str, kind: str) -> _TensorSource:
    layout = CIFAR_LAYOUTS[kind]
    root = _cifar_dir(Path(directory), layout)
    meta_path = root / layout.meta_file
    meta = _read_pickle(meta_path)
    if layout.names_key not in meta:
        raise ValueError(f"CIFAR file {meta_path} lacks key {layout.names_key!r}; keys: {sorted(meta)}")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key])
    train = [_cifar_batch(root / f, layout.label_key, len(names)) for f in layout.train_files]
    test_images, test_labels = _cifar_batch(root / layout.test_file, layout.label_key, len(names))
    return _TensorSource(kind, torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]),
                         test_images, test_labels, names, layout.mean, layout.std)


# -- splits and in-memory datasets ------------------------------------------------------------------


def _check_val_size(val_size: int, n_train: int, name: str) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise ValueError(f"val_size must be a non-negative int, got {val_size!r}")
    if val_size >= n_train:
        raise ValueError(f"val_size {val_size} leaves no training data: {name} has {n_train} training images")
    return val_size


def _split_indices(n_train: int, split: str, val_size: int, seed: int) -> torch.Tensor:
    """Seeded permutation of the training set: its first `val_size` entries are val, the rest train."""
    if split == "val" and val_size == 0:
        raise ValueError("split 'val' is empty because val_size=0; pass a positive val_size")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return (perm[:val_size] if split == "val" else perm[val_size:]).sort().values


def _tensor_dataset(src: _TensorSource, split: str, *, img_size: int | None, in_chans: int | None, augment: bool,
                    random_crop_padding: int, val_size: int | None, seed: int) -> tuple[Dataset, DataInfo]:
    native_chans, native_size = src.train_images.shape[1], src.train_images.shape[-1]
    chans = in_chans or native_chans
    if chans != native_chans and native_chans != 1:
        raise ValueError(f"in_chans={chans} cannot be made from {src.name}'s {native_chans} channels "
                         "(only gray images are repeated to more channels)")
    mean, std = (src.mean * chans, src.std * chans) if native_chans != chans else (src.mean, src.std)
    size = img_size or native_size
    transform = TensorTransform(size, chans, mean, std, flip=augment, crop_padding=random_crop_padding)
    if split == "test":
        images, labels, indices = src.test_images, src.test_labels, torch.arange(len(src.test_images))
    else:
        n_val = _check_val_size(SMALL_DATASET_VAL_SIZE if val_size is None else val_size,
                                len(src.train_images), src.name)
        images, labels = src.train_images, src.train_labels
        indices = _split_indices(len(images), split, n_val, seed)
    info = DataInfo(src.name, len(src.labels), chans, size, mean, std, src.labels, INTERPOLATION, crop_pct=1.0)
    return TensorImageDataset(images, labels, indices, transform), info


# -- image folders (ImageNet layout) ---------------------------------------------------------------


def _open_rgb(path: str) -> Image.Image:
    """ImageFolder's loader, but a broken file names itself instead of failing deep inside PIL."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _folder_classes(directory: Path) -> tuple[str, ...]:
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {directory} does not exist (expected <dir>/<class>/<images>)")
    try:
        classes = tuple(find_classes(str(directory))[0])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image folder {directory} has no class subdirectories") from e
    if len(classes) < 2:
        raise ValueError(f"image folder {directory} has {len(classes)} class folder ({', '.join(classes)}): "
                         "a classifier needs at least 2 (<dir>/<class>/<images>)")
    return classes


class _FolderWalk:
    """One walk of a split's image folder (`train/`, `test/`; ImageFolder's layout and order). Links are followed,
    but never out of that folder ("paths from data never leave their folder": such a link is refused, not skipped, so
    that no image silently goes missing, and no test image leaks into train), never round a loop, and never twice to
    one image: each file counts once, under one class. The walk is bounded in depth and entries, so no folder can
    keep it going for ever."""

    def __init__(self, top: Path, extensions: tuple[str, ...]) -> None:
        self.top = top.resolve()
        self.extensions = extensions
        self.folders: dict[str, tuple[str, str]] = {}  # real folder walked -> (class, the path it was walked as)
        self.links: dict[str, tuple[str, str]] = {}  # real image a link leads to -> (class, the link)
        self.entries = 0

    def samples(self, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
        """(path, class index) of every image, classes in order, each class's by folder path, then name."""
        found = [(path, label) for label in sorted(class_to_idx) for path in self._class(label)]
        found += [(link, label) for real, (label, link) in self.links.items() if self._first(real, label, link)]
        empty = sorted(set(class_to_idx) - {label for _, label in found})
        if empty:
            raise FileNotFoundError(f"class folder(s) {', '.join(empty)} hold no images "
                                    f"({', '.join(self.extensions)})")
        found.sort(key=lambda s: (class_to_idx[s[1]], os.path.dirname(s[0]), os.path.basename(s[0])))
        return [(path, class_to_idx[label]) for path, label in found]

    def _class(self, label: str) -> list[str]:
        """The images of one class folder found without a file link (those wait in `links`)."""
        images, stack = [], [(self.top / label, (str(self.top),))]
        while stack:
            folder, above = stack.pop()
            real = self._target(folder) if folder.is_symlink() else os.path.join(above[-1], folder.name)
            if real in above:
                raise ValueError(f"image folder {self.top}: symlink loop: {folder} leads back to {real}, a folder "
                                 "it is in")
            if len(above) > FOLDER_MAX_DEPTH:
                raise ValueError(f"image folder {self.top}: {folder} is over {FOLDER_MAX_DEPTH} folders deep")
            if not self._claim(real, label, folder):
                continue
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            self.entries += len(entries)
            if self.entries > FOLDER_MAX_ENTRIES:
                raise ValueError(f"image folder {self.top} holds over {FOLDER_MAX_ENTRIES:,} entries")
            folders = {e.name for e in entries if _is_dir(e)}
            stack += [(Path(e.path), (*above, real)) for e in reversed(entries) if e.name in folders]
            images += [path for e in entries if e.name not in folders and (path := self._image(e, label))]
        return images

    def _image(self, e: os.DirEntry, label: str) -> str | None:
        """The path of a file entry that is an image counted here (a file link's waits in `links`), else None."""
        if not has_file_allowed_extension(e.name, self.extensions):
            return None
        target = self._target(Path(e.path)) if e.is_symlink() else None
        if not e.is_file():  # reading a pipe would wait for ever, a device for ever or to no end
            raise ValueError(f"image folder {self.top}: {e.path} is not a regular file")
        if target is None:
            return e.path
        if target in self.links:
            self._same_class(self.links[target], label, e.path, target)
        else:
            self.links[target] = (label, e.path)
        return None

    def _target(self, link: Path) -> str:
        """Where a link leads: refused when it dangles, loops or leaves the folder."""
        try:
            real = link.resolve(strict=True)
        except (OSError, RuntimeError) as e:  # RuntimeError: Python 3.11's resolve() on a loop of links
            raise ValueError(f"image folder {self.top}: the link {link} leads nowhere ({e})") from None
        if not real.is_relative_to(self.top):
            raise ValueError(f"image folder {self.top}: the link {link} leads out of it (to {real}); paths from "
                             "data never leave their folder: copy or move the files in")
        return str(real)

    def _claim(self, real: str, label: str, path: Path) -> bool:
        """Whether the folder `real` is walked now (not seen before, when its images already counted)."""
        if real in self.folders:
            self._same_class(self.folders[real], label, str(path), real)
            return False
        self.folders[real] = (label, str(path))
        return True

    def _first(self, real: str, label: str, link: str) -> bool:
        """Whether a file link's image is not also in a walked folder, where it counts already."""
        folder = os.path.dirname(real)
        if folder not in self.folders or not has_file_allowed_extension(real, self.extensions):
            return True
        first_label, first_path = self.folders[folder]
        self._same_class((first_label, os.path.join(first_path, os.path.basename(real))), label, link, real)
        return False

    def _same_class(self, first: tuple[str, str], label: str, path: str, real: str) -> None:
        """Refuse one file or folder met as two classes' (`first`: the class and path it was met as first)."""
        if first[0] != label:
            raise ValueError(f"image folder {self.top}: {path} (class {label}) and {first[1]} (class {first[0]}) "
                             f"are both {real}: an image has one label")


def _is_dir(entry: os.DirEntry) -> bool:
    """DirEntry.is_dir(), but False for a link it cannot follow (a loop of links raises ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


class _ContainedImageFolder(ImageFolder):
    """ImageFolder, walked by `_FolderWalk` instead of os.walk(followlinks=True), which goes round a symlink loop
    until the kernel's link limit (duplicated images; two loop links: no end)."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return _FolderWalk(Path(directory), extensions).samples(class_to_idx)


def _image_folder(directory: Path, transform) -> ImageFolder:
    try:
        return _ContainedImageFolder(str(directory), transform=transform, loader=_open_rgb)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image folder {directory}: {e}") from e


def _folder_dataset(root: Path, split: str, *, img_size: int | None, in_chans: int | None, augment: bool,
                    auto_augment: str | None, val_size: int | None, seed: int) -> tuple[Dataset, DataInfo]:
    if in_chans not in (None, 3):
        raise ValueError(f"folder sources are read as RGB; in_chans must be 3, got {in_chans}")
    size = img_size or FOLDER_IMG_SIZE
    try:
        transform = create_transform(size, is_training=augment, interpolation=INTERPOLATION,
                                     auto_augment=auto_augment, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                                     crop_pct=FOLDER_CROP_PCT)
    except AssertionError as e:  # timm asserts on an auto_augment string it does not know
        raise ValueError(f"auto_augment {auto_augment!r} is not a timm policy ({e}); e.g. rand-m9-mstd0.5-inc1") \
            from None
    train_dir = root / "train"
    classes = _folder_classes(train_dir)
    info = DataInfo(root.resolve().name, len(classes), 3, size, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
                    classes, INTERPOLATION, FOLDER_CROP_PCT)
    if split == "test":
        test_dir = root / "test" if (root / "test").is_dir() else root / "val"
        test_classes = _folder_classes(test_dir)
        if test_classes != classes:
            raise ValueError(f"test folder {test_dir} has other classes than {train_dir}: "
                             f"missing {sorted(set(classes) - set(test_classes))}, "
                             f"extra {sorted(set(test_classes) - set(classes))}")
        return _image_folder(test_dir, transform), info
    train = _image_folder(train_dir, transform)
    default_val = min(int(len(train) * FOLDER_VAL_FRACTION), FOLDER_MAX_VAL_SIZE)
    if split == "val" and val_size is None and default_val == 0:
        raise ValueError(f"image folder {train_dir} has {len(train)} images: its default validation split "
                         f"({FOLDER_VAL_FRACTION:.0%} of them) holds none; give val_size (--val-size)")
    n_val = _check_val_size(default_val if val_size is None else val_size, len(train), str(train_dir))
    return Subset(train, _split_indices(len(train), split, n_val, seed).tolist()), info


# -- synthetic data (throughput benchmarks) --------------------------------------------------------


class SyntheticImages(Dataset):
    """Random images generated per item from (stream, index): deterministic and memory-free at any size."""

    def __init__(self, count: int, img_size: int, in_chans: int, stream: int) -> None:
        self.count, self.img_size, self.in_chans, self.stream = count, img_size, in_chans, stream

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -self.count <= i < self.count:
            raise IndexError(f"index {i} out of range for {self.count} synthetic images")
        g = torch.Generator().manual_seed(self.stream * 1_000_003 + i % self.count)
        x = torch.rand(self.in_chans, self.img_size, self.img_size, generator=g)
        return (x - 0.5) / 0.5, int(torch.randint(SYNTHETIC_NUM_CLASSES, (), generator=g))


def _synthetic_dataset(count: int, split: str, *, img_size: int | None, in_chans: int | None,
                       val_size: int | None, seed: int) -> tuple[Dataset, DataInfo]:
    size, chans = img_size or SYNTHETIC_IMG_SIZE, in_chans or 3
    info = DataInfo("synthetic", SYNTHETIC_NUM_CLASSES, chans, size, (0.5,) * chans, (0.5,) * chans,
                    tuple(f"class_{i}" for i in range(SYNTHETIC_NUM_CLASSES)), INTERPOLATION, crop_pct=1.0)
    if split == "test":
        return SyntheticImages(count, size, chans, stream=1), info
    if split == "val" and val_size is None:
        raise ValueError("synthetic data holds no validation images unless val_size is given (train --val-size)")
    n_val = _check_val_size(0 if val_size is None else val_size, count, "synthetic")
    indices = _split_indices(count, split, n_val, seed).tolist()
    return Subset(SyntheticImages(count, size, chans, stream=0), indices), info


# -- public entry points ---------------------------------------------------------------------------


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _check_options(kind: str, split: str, augment: bool, auto_augment: str | None, random_crop_padding: int) -> None:
    """Augmentation belongs to the train split only; refuse it elsewhere rather than silently skew evaluation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if augment and split != "train":
        raise ValueError(f"augment=True only applies to the train split, not {split!r}")
    if auto_augment and not augment:
        raise ValueError("auto_augment needs augment=True")
    if auto_augment and kind != "folder":
        raise ValueError(f"auto_augment works on PIL images, i.e. folder sources only, not {kind!r}")
    if isinstance(random_crop_padding, bool) or not isinstance(random_crop_padding, int) or random_crop_padding < 0:
        raise ValueError(f"random_crop_padding must be a non-negative int, got {random_crop_padding!r}")
    if random_crop_padding and (not augment or kind == "folder"):
        raise ValueError("random_crop_padding needs augment=True and an in-memory source (fashion-mnist, cifar)")
    if augment and kind == "synthetic":
        raise ValueError("synthetic data has nothing to augment; pass augment=False")


def _parse_source(source: str) -> tuple[str, str]:
    kind, sep, arg = source.partition(":") if isinstance(source, str) else ("", "", "")
    valid = (kind == "fashion-mnist" and not sep) or (kind in ("cifar10", "cifar100", "folder", "synthetic") and arg)
    if not valid:
        raise ValueError(f"unknown data source {source!r}; accepted forms: {', '.join(SOURCE_FORMS)}")
    return kind, arg


def _synthetic_count(arg: str) -> int:
    if not arg.isdigit() or int(arg) <= 0:
        raise ValueError(f"synthetic:<n> needs a positive image count, got {arg!r}")
    return int(arg)


def load_data(source: str, split: str, *, img_size: int | None = None, in_chans: int | None = None,
              augment: bool = False, val_size: int | None = None, seed: int = 0, auto_augment: str | None = None,
              random_crop_padding: int = 0) -> tuple[Dataset, DataInfo]:
    """Load one split of a data source as `(normalised float CxHxW tensor, int label)` items.

    `split` "val" is a seeded held-out part of the training data, "train" the rest (`val_size` images
    in val; default 5000 for Fashion-MNIST/CIFAR, 10% up to 10000 for folders, 0 for synthetic).
    `img_size`/`in_chans` resize and repeat gray channels so small datasets can feed 224² RGB models.
    """
    kind, arg = _parse_source(source)
    _check_options(kind, split, augment, auto_augment, random_crop_padding)
    _check_positive("img_size", img_size)
    _check_positive("in_chans", in_chans)
    common = dict(img_size=img_size, in_chans=in_chans, val_size=val_size, seed=seed)
    if kind == "synthetic":
        return _synthetic_dataset(_synthetic_count(arg), split, **common)
    if kind == "folder":
        return _folder_dataset(Path(arg), split, augment=augment, auto_augment=auto_augment, **common)
    src = _load_fashion_mnist(str(_fashion_mnist_dir())) if kind == "fashion-mnist" else _load_cifar(arg, kind)
    return _tensor_dataset(src, split, augment=augment, random_crop_padding=random_crop_padding, **common)


def _loader_seed(seed: int, epoch: int) -> int:
    """Mix (seed, epoch) into one generator seed, so nearby pairs give unrelated orders."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                drop_last: bool = False, num_workers: int = 0, start_batch: int = 0, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """A DataLoader whose order (and worker seeds) depend only on (seed, epoch): a resumed run replays it.

    `start_batch` skips that many batches without loading them (resuming mid-epoch); with
    `world_size` > 1 each global batch of `batch_size * world_size` items is split across ranks.
    Build a fresh loader per epoch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}")
    generator = torch.Generator().manual_seed(_loader_seed(seed, epoch))
    order = torch.randperm(len(dataset), generator=generator) if shuffle else torch.arange(len(dataset))
    step = batch_size * world_size
    n_batches = len(order) // step if drop_last else -(-len(order) // step)
    batches = [order[b * step + rank * batch_size:b * step + (rank + 1) * batch_size].tolist()
               for b in range(start_batch, n_batches)]
    return DataLoader(dataset, batch_sampler=[b for b in batches if b], generator=generator,
                      num_workers=num_workers)
