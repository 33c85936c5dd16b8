"""Where each data set comes from: torchvision, the shipped subset, Debian, or a seed."""

from __future__ import annotations

import gzip
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ._dataset import DatasetNotAvailableError, ImageDataset
from ._stream import StreamingDataset, image_folder

__all__ = ["load_dataset", "list_datasets", "default_root", "read_idx"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# Per-channel statistics of the 50,000 training images, [0, 1] units
# (population standard deviation over all pixels).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# Searched for the Fashion-MNIST idx files after <root>/FashionMNIST/raw and
# <root>; Debian's package dataset-fashion-mnist installs them here.
_FASHION_MNIST_SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_SUBSET_FILE = "cifar10_subset.npz"
_SUBSET_SHAPES = {
    "x_train": (5085, 3, 32, 32),
    "y_train": (5085,),
    "x_test": (1017, 3, 32, 32),
    "y_test": (1017,),
}


def default_root() -> Path:
    """Folder data sets are downloaded to and looked for in.

    Returns
    -------
    pathlib.Path
        ``$TUCKERLAB_DATA`` if set, else ``~/.cache/tuckerlab``.
    """
    env = os.environ.get("TUCKERLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuckerlab"


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images, in [0, 1] units."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = float((p * values).sum())
        var = float((p * (values - mean) ** 2).sum())
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


def _labels(y) -> torch.Tensor:
    return torch.from_numpy(np.array(y, dtype=np.int64))


def _download_reason(download: bool | None, error: BaseException | None) -> str:
    if download is False:
        return "disabled (download=False)"
    return f"failed ({type(error).__name__}: {error})"


# ---------------------------------------------------------------- CIFAR


def _cifar(name: str, root: Path, download: bool | None) -> ImageDataset:
    from torchvision import datasets

    if name == "cifar10":
        cls, folder, archive = datasets.CIFAR10, "cifar-10-batches-py", "cifar-10-python.tar.gz"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        cls, folder, archive = datasets.CIFAR100, "cifar-100-python", "cifar-100-python.tar.gz"
        files = ["train", "test", "meta"]
        mean, std = CIFAR100_MEAN, CIFAR100_STD

    def build(dl: bool):
        return cls(str(root), train=True, download=dl), cls(str(root), train=False, download=dl)

    splits, error = None, None
    if download is not True:
        try:
            splits = build(False)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            splits = None
    if splits is None and download is not False:
        try:
            splits = build(True)
        except Exception as e:  # no network, HTTP error, bad checksum, ...
            error = e
    if splits is None:
        looked_for = [str(root / folder / f) for f in files] + [str(root / archive)]
        reason = _download_reason(download, error)
        raise DatasetNotAvailableError(name, looked_for, reason) from error
    train, test = splits

    def images(ds):  # (N, H, W, C) numpy -> (N, C, H, W) tensor
        return torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()

    return ImageDataset(
        name=name,
        x_train=images(train),
        y_train=_labels(train.targets),
        x_test=images(test),
        y_test=_labels(test.targets),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
    )


def _cifar10_subset() -> ImageDataset:
    ref = resources.files("tuckerlab.data").joinpath(_SUBSET_FILE)
    with ref.open("rb") as f, np.load(f) as npz:
        arrays = {k: npz[k] for k in _SUBSET_SHAPES}
    for key, shape in _SUBSET_SHAPES.items():
        a = arrays[key]
        if a.shape != shape or a.dtype != np.uint8:
            raise RuntimeError(
                f"{_SUBSET_FILE} in the tuckerlab package is damaged: {key} is "
                f"{a.dtype} {a.shape}, expected uint8 {shape}; reinstall tuckerlab"
            )
    for key in ("y_train", "y_test"):
        if arrays[key].max() >= len(CIFAR10_CLASSES):
            raise RuntimeError(f"{_SUBSET_FILE}: labels of {key} out of range; reinstall tuckerlab")
    return ImageDataset(
        name="cifar10-subset",
        x_train=torch.from_numpy(arrays["x_train"]),
        y_train=_labels(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]),
        y_test=_labels(arrays["y_test"]),
        classes=CIFAR10_CLASSES,
        # Statistics of the full training set, so models move between the two.
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


# ---------------------------------------------------------------- Fashion-MNIST


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Parameters
    ----------
    path : path-like
        File name; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    numpy.ndarray
        The ``uint8`` array with the dimensions stored in the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _FASHION_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _fashion_mnist(root: Path, download: bool | None) -> ImageDataset:
    raw = root / "FashionMNIST" / "raw"
    folders = [raw, root, *(Path(d) for d in _FASHION_MNIST_SYSTEM_DIRS)]
    files, error = None, None
    if download is not True:
        for folder in folders:
            files = _find_idx(folder)
            if files:
                break
    if files is None and download is not False:
        try:
            from torchvision import datasets

            datasets.FashionMNIST(str(root), train=True, download=True)
            files = _find_idx(raw)
        except Exception as e:
            error = e
    if files is None:
        looked_for = [
            str(folder / f"{stem}[.gz]") for folder in folders for stem in _FASHION_FILES.values()
        ]
        reason = _download_reason(download, error)
        raise DatasetNotAvailableError("fashion-mnist", looked_for, reason) from error

    arrays = {key: read_idx(path) for key, path in files.items()}
    x_train = torch.from_numpy(arrays["x_train"].copy()).unsqueeze(1)
    mean, std = _channel_stats(x_train)
    return ImageDataset(
        name="fashion-mnist",
        x_train=x_train,
        y_train=_labels(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"].copy()).unsqueeze(1),
        y_test=_labels(arrays["y_test"]),
        classes=FASHION_MNIST_CLASSES,
        mean=mean,
        std=std,
    )


# ---------------------------------------------------------------- synthetic


# Images generated per block: the two float32 intermediates of one block are a
# few MiB, so memory peaks at the uint8 result, not at four float copies of it.
_SYNTHETIC_BLOCK = 1024


def _synthetic(
    n_train: int = 2048,
    n_test: int = 512,
    seed: int = 0,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    labels: str = "learnable",
) -> ImageDataset:
    if labels not in ("learnable", "random"):
        raise ValueError(f"labels must be 'learnable' or 'random', got {labels!r}")
    if min(n_train, n_test) < 0 or num_classes < 1 or image_size < 1 or channels < 1:
        raise ValueError("synthetic: sizes must be non-negative and counts positive")
    gen = torch.Generator().manual_seed(seed)
    # One smooth random template per class: a 4x4 colour pattern, upsampled.
    coarse = torch.rand(num_classes, channels, 4, 4, generator=gen) * 255
    templates = torch.nn.functional.interpolate(
        coarse, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    shape = (channels, image_size, image_size)

    def blocks(n):
        """Image ranges of the noise blocks. Each block holds a multiple of 16
        values and the last at least 16, so that the blocks draw from the
        generator exactly the numbers one ``randn(n, ...)`` would (torch fills
        normals 16 at a time): the data do not depend on the block size."""
        step = 16 * max(1, _SYNTHETIC_BLOCK // 16)
        starts = list(range(0, n, step))
        if len(starts) > 1 and (n - starts[-1]) * math.prod(shape) < 16:
            starts.pop()
        return list(zip(starts, starts[1:] + [n]))

    def split(n):
        y = torch.randint(0, num_classes, (n,), generator=gen)
        noise_gen = gen
        if labels == "random":
            # The image's template index is drawn after all the noise: run the
            # generator past the noise, draw it, then make the noise from a
            # copy of the generator's earlier state.
            noise_gen = torch.Generator().set_state(gen.get_state())
            for a, b in blocks(n):
                torch.randn(b - a, *shape, generator=gen)
            which = torch.randint(0, num_classes, (n,), generator=gen)
        else:
            which = y
        x = torch.empty(n, *shape, dtype=torch.uint8)
        for a, b in blocks(n):
            noise = torch.randn(b - a, *shape, generator=noise_gen).mul_(64)
            # (template * 0.5 + 64) + noise, in place, in the order that fixes the rounding
            x[a:b] = templates[which[a:b]].mul_(0.5).add_(64).add_(noise).round_().clamp_(0, 255)
        return x, y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    mean, std = _channel_stats(x_train) if n_train else ((0.5,) * channels, (0.25,) * channels)
    return ImageDataset(
        name="synthetic",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=tuple(f"class{i}" for i in range(num_classes)),
        mean=mean,
        std=std,
    )


# ---------------------------------------------------------------- entry point

_NAMES = ("cifar10", "cifar100", "cifar10-subset", "fashion-mnist", "synthetic")
_ALIASES = {
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "cifar10_subset": "cifar10-subset",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (without aliases).

    Returns
    -------
    list of str
    """
    return list(_NAMES)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    **kwargs,
) -> ImageDataset | StreamingDataset:
    """Load an image classification data set: into memory, or streamed from a folder.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    name : str
        One of

        ``"cifar10"``, ``"cifar100"``
            The full CIFAR-10/100 (50,000 + 10,000 colour 32x32 images;
            Krizhevsky, 2009) through torchvision; standard statistics.
        ``"cifar10-subset"``
            5,085 training and 1,017 test images of CIFAR-10 shipped with
            the package, for offline work, tests and quick runs. Uses the
            full CIFAR-10 statistics.
        ``"fashion-mnist"``
            Fashion-MNIST (60,000 + 10,000 grey 28x28 images; Xiao et al.,
            2017): the four idx files (``.gz`` or not) are read from
            ``<root>/FashionMNIST/raw`` (torchvision's layout), ``<root>``
            or ``/usr/share/datasets/fashion-mnist`` (Debian's
            ``dataset-fashion-mnist``), else downloaded; statistics of its
            training split.
        ``"synthetic"``
            Seeded random images, for speed tests and smoke tests. Keyword
            arguments: ``n_train=2048``, ``n_test=512``, ``seed=0``,
            ``num_classes=10``, ``image_size=32``, ``channels=3`` and
            ``labels``: ``"learnable"`` (default; each image is its class's
            smooth random colour template plus strong pixel noise, so a
            network can learn it) or ``"random"`` (the image's template is
            drawn independently of its label: nothing to learn, chance
            accuracy). Statistics of its training split.
        ``"imagefolder:PATH"``
            A data set too large for memory (ImageNet, a user's own
            images), streamed: ``PATH/train/<class>/*`` and
            ``PATH/val/<class>/*`` in torchvision's ImageFolder layout,
            decoded and augmented by DataLoader workers (see
            :func:`tuckerlab.data.image_folder` for the keyword arguments:
            ``image_size=224``, ``resize_size``, ``scale``, ``ratio``,
            ``mean``, ``std`` (default ImageNet's), ``num_workers``,
            ``pin_memory``, ``prefetch_factor``). A relative ``PATH`` is
            taken relative to ``root`` when ``root`` is given.

        Case-insensitive (except ``PATH``); ``"cifar-10"``, ``"fashion_mnist"`` and similar
        spellings are accepted.
    root : path-like, optional
        Folder holding downloads (torchvision's layout); default
        :func:`default_root`, i.e. ``$TUCKERLAB_DATA`` or
        ``~/.cache/tuckerlab``. Unused by the subset and synthetic data.
    download : bool, optional
        ``None`` (default): use the files found on disk, download only when
        they are missing. ``True``: always go through torchvision's
        downloader into ``root`` (it verifies checksums and fetches what is
        missing or damaged). ``False``: never touch the network.
    **kwargs
        Options of ``"synthetic"`` and ``"imagefolder:PATH"`` (see above).

    Returns
    -------
    ImageDataset or StreamingDataset
        In memory: tensors on the CPU, labels ``int64``. Image folders: a
        :class:`StreamingDataset` (its ``"test"`` split is ``val/``).

    Raises
    ------
    ValueError
        Unknown name.
    DatasetNotAvailableError
        The files are not on disk and could not (or may not) be downloaded;
        the message lists where they were looked for. A subclass of
        :class:`FileNotFoundError`.

    References
    ----------
    A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
    technical report, University of Toronto, 2009.

    H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset
    for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.

    Examples
    --------
    >>> ds = load_dataset("cifar10-subset")
    >>> ds.x_train.shape, ds.num_classes
    (torch.Size([5085, 3, 32, 32]), 10)
    """
    prefix, sep, path = str(name).partition(":")
    if sep and prefix.lower() == "imagefolder":
        if download:
            raise ValueError(f"download must be None or False for an image folder (nothing to download), got {download!r}")
        folder = Path(path).expanduser()
        if root is not None and not folder.is_absolute():
            folder = Path(root).expanduser() / folder
        return image_folder(folder, **kwargs)
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in _NAMES:
        accepted = ", ".join(repr(n) for n in (*_NAMES, "imagefolder:PATH"))
        raise ValueError(f"unknown data set {name!r}; accepted names: {accepted}")
    if kwargs and key != "synthetic":
        raise TypeError(f"load_dataset({key!r}) takes no options, got {sorted(kwargs)}")
    if key == "synthetic":
        return _synthetic(**kwargs)
    if key == "cifar10-subset":
        return _cifar10_subset()
    root = Path(root).expanduser() if root is not None else default_root()
    if key == "fashion-mnist":
        return _fashion_mnist(root, download)
    return _cifar(key, root, download)
