"""Data sets read from disk batch by batch: :class:`StreamingDataset`.

ImageNet's 1.28 million images do not fit in memory as the small data sets
do, so they are decoded, augmented and batched by the worker processes of a
:class:`torch.utils.data.DataLoader` while the model trains. Every item is a
``uint8`` image ``(C, H, W)`` and its label, as in the resident path, so the
training engine normalises batches on the device in the same way for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

__all__ = ["StreamingDataset", "IMAGENET_MEAN", "IMAGENET_STD", "image_folder", "imagenet_transforms", "default_num_workers"]

# Per-channel statistics of ImageNet's training images in [0, 1] units, as
# used by torchvision's pretrained weights.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


class _Transformed(Dataset):
    """``base[i]`` with ``transform`` applied to the image (``None``: as is)."""

    def __init__(self, base: Dataset, transform: Callable | None):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return (img if self.transform is None else self.transform(img)), int(label)


def default_num_workers() -> int:
    """DataLoader workers when none are asked for: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus))


class StreamingDataset:
    """An image classification data set served by a DataLoader, batch by batch.

    Built by :func:`~tuckerlab.data.load_dataset` (``"imagefolder:PATH"``)
    or by :meth:`ImageDataset.streaming` (an in-memory data set sent through
    the same path); :func:`~tuckerlab.train.fit` and
    :func:`~tuckerlab.train.evaluate` accept it where they accept an
    :class:`~tuckerlab.data.ImageDataset`.

    Parameters
    ----------
    name : str
        What it was loaded by.
    splits : mapping
        ``{"train": dataset, "test": dataset}``: map-style data sets whose
        items are ``(image, label)`` before any transform.
    targets : mapping
        ``{"train": labels, "test": labels}``: the labels of every item, in
        order (checked before training without decoding an image).
    train_transform, eval_transform : callable or None
        Image to ``uint8`` tensor ``(C, H, W)``: the random augmentation
        of training, and the deterministic one of evaluation (and of
        training with ``augment=False``). ``None`` leaves the image as is.
    classes : sequence of str
        Class names, indexed by label.
    mean, std : sequence of float
        Per-channel statistics in [0, 1] units, for normalisation.
    image_shape : tuple of int
        ``(C, H, W)`` of the images the transforms produce.
    num_workers : int, optional
        Worker processes of each DataLoader (per process under DDP);
        default :func:`default_num_workers`. 0 loads in the training
        process.
    pin_memory : bool, optional
        Page-locked batches for asynchronous copies to the GPU; default:
        when training on CUDA.
    prefetch_factor : int, optional
        Batches each worker loads ahead (DataLoader's default: 2).

    Notes
    -----
    :meth:`loader` shards the training set with
    :class:`~torch.utils.data.DistributedSampler`: every process draws the
    same permutation and takes every ``world_size``-th image of it, so the
    ``world_size`` local batches of one step are together the global batch
    a single process would take, for any number of processes. The
    permutation of a seed is the one the resident path draws, so streaming
    an in-memory data set visits the same images in the same batches.
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Dataset],
        targets: Mapping[str, torch.Tensor | Sequence[int]],
        train_transform: Callable | None,
        eval_transform: Callable | None,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        image_shape: Sequence[int],
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
    ):
        self.name = str(name)
        self.classes = tuple(classes)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of positive sizes, got {image_shape!r}")
        if len(self.mean) != self.image_shape[0] or len(self.std) != self.image_shape[0]:
            raise ValueError(
                f"mean and std need one value per channel ({self.image_shape[0]}), got {len(self.mean)} and {len(self.std)}"
            )
        if num_workers is None:
            num_workers = default_num_workers()
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0 or None, got {num_workers!r}")
        if pin_memory is not None and not isinstance(pin_memory, bool):
            raise ValueError(f"pin_memory must be True, False or None, got {pin_memory!r}")
        if prefetch_factor is not None and (
            isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1
        ):
            raise ValueError(f"prefetch_factor must be an integer >= 1 or None, got {prefetch_factor!r}")
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self._splits, self._targets = {}, {}
        for split in SPLITS:
            if split not in splits or split not in targets:
                raise ValueError(f"splits and targets need a {split!r} entry, got {sorted(splits)} and {sorted(targets)}")
            self._splits[split] = splits[split]
            y = torch.as_tensor(targets[split], dtype=torch.int64).reshape(-1)
            if y.shape[0] != len(splits[split]):
                raise ValueError(f"the {split!r} split has {len(splits[split])} items but {y.shape[0]} targets")
            self._targets[split] = y
        self.train_transform, self.eval_transform = train_transform, eval_transform

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        """Training images."""
        return len(self._splits["train"])

    def num_images(self, split: str) -> int:
        """Images in ``split`` (``"train"`` or ``"test"``)."""
        _check_split(split)
        return len(self._splits[split])

    def targets(self, split: str) -> torch.Tensor:
        """The labels of ``split``, int64, in item order."""
        _check_split(split)
        return self._targets[split]

    def take(self, split: str, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``split`` at ``indices``, decoded with the evaluation transform.

        As :meth:`ImageDataset.take`: uint8 ``(len(indices), C, H, W)`` and
        int64 labels, read in this process (for a few images).
        """
        ds = self.dataset(split)
        items = [ds[int(i)] for i in torch.as_tensor(indices, dtype=torch.long).reshape(-1)]
        if not items:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)

    def dataset(self, split: str, augment: bool = False) -> Dataset:
        """Items ``(uint8 image (C, H, W), label)`` of ``split``, augmented or not."""
        _check_split(split)
        return _Transformed(self._splits[split], self.train_transform if augment else self.eval_transform)

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        augment: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        worker_seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader over this process's share of ``split``.

        Parameters
        ----------
        split : {"train", "test"}
        batch_size : int
            Images per batch of this process (the local batch).
        augment : bool
            Apply the training transform instead of the evaluation one.
        shuffle : bool
            True: the images of a :class:`DistributedSampler` permutation
            seeded with ``seed`` (one seed per epoch), every
            ``world_size``-th from ``rank``. False: every ``world_size``-th
            image from ``rank`` in order, without padding (evaluation).
        seed : int
            Seeds the permutation (the same on every process).
        worker_seed : int, optional
            Seeds the DataLoader's generator, from which the workers'
            random streams (augmentation) are derived; with
            ``num_workers=0`` the transforms draw from the global torch RNG
            instead. Default: ``seed + rank``.
        rank, world_size : int
            This process in a data-parallel run.
        pin_memory : bool
            Page-locked batches (unless the data set says otherwise).
        drop_last : bool
            Drop an incomplete last batch.

        Returns
        -------
        torch.utils.data.DataLoader
            Batches ``(uint8 images (B, C, H, W), int64 labels (B,))``.
        """
        ds = self.dataset(split, augment)
        sampler = None
        if shuffle:
            sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        elif world_size > 1:
            ds = Subset(ds, range(rank, len(ds), world_size))
        extra: dict[str, Any] = {}
        if self.num_workers > 0 and self.prefetch_factor is not None:
            extra["prefetch_factor"] = self.prefetch_factor
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pin_memory if self.pin_memory is None else self.pin_memory,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(seed + rank if worker_seed is None else worker_seed),
            **extra,
        )

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"StreamingDataset(name={self.name!r}, train={len(self._splits['train'])}x{c}x{h}x{w}, "
            f"test={len(self._splits['test'])}, num_classes={self.num_classes}, num_workers={self.num_workers})"
        )


def imagenet_transforms(
    image_size: int = 224,
    resize_size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[Callable, Callable]:
    """The standard ImageNet augmentations, PIL image in, ``uint8`` tensor out.

    Training: a random crop of ``scale`` of the area and aspect ratio in
    ``ratio``, resized to ``image_size`` squared, and a horizontal flip
    with probability 1/2 (Szegedy et al., 2015, as in torchvision's
    reference recipes). Evaluation: resize the shorter side to
    ``resize_size`` and cut the central ``image_size`` square.

    Parameters
    ----------
    image_size : int
        Side of the square images the network sees (224 for ImageNet).
    resize_size : int, optional
        Shorter side before the evaluation crop; default
        ``round(image_size / 0.875)`` (256 for 224).
    scale, ratio : pair of float
        Ranges of the random resized crop.

    Returns
    -------
    train, eval : callable
        ``torchvision.transforms.v2`` pipelines.

    References
    ----------
    C. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
    """
    from torchvision.transforms import v2

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    if resize_size is None:
        resize_size = round(image_size / 0.875)
    if isinstance(resize_size, bool) or not isinstance(resize_size, int) or resize_size < image_size:
        raise ValueError(f"resize_size must be an integer >= image_size ({image_size}), got {resize_size!r}")
    if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
    if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {ratio!r}")
    train = v2.Compose([
        v2.RandomResizedCrop(image_size, scale=tuple(scale), ratio=tuple(ratio), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),
    ])
    evaluation = v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size), v2.PILToTensor()])
    return train, evaluation


def image_folder(
    path: str | os.PathLike,
    *,
    image_size: int = 224,
    resize_size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
) -> StreamingDataset:
    """A folder of class folders for training and one for evaluation, streamed.

    ``path/train/<class>/<image>`` and ``path/val/<class>/<image>``,
    torchvision's :class:`~torchvision.datasets.ImageFolder` layout (and
    ImageNet's, once its validation images are sorted into class folders).
    Classes are the folder names in sorted order; both splits must have the
    same ones. Images are decoded with PIL and converted to RGB.

    Parameters
    ----------
    path : path-like
        The folder holding ``train/`` and ``val/``.
    image_size, resize_size, scale, ratio
        See :func:`imagenet_transforms`.
    mean, std : sequence of float
        Normalisation statistics; default ImageNet's.
    num_workers, pin_memory, prefetch_factor
        See :class:`StreamingDataset`.

    Returns
    -------
    StreamingDataset
        Its ``"test"`` split is ``val/``.

    Raises
    ------
    FileNotFoundError
        ``path``, ``train/`` or ``val/`` is missing, or a split has no image.
    ValueError
        The splits have different classes, or a parameter is out of range.
    """
    from torchvision import datasets

    root = Path(path).expanduser()
    folders = {"train": root / "train", "test": root / "val"}
    missing = [str(f) for f in folders.values() if not f.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"image folder {str(root)!r} needs train/ and val/ subfolders of class folders "
            f"(torchvision ImageFolder layout); not found: {', '.join(missing)}"
        )
    train_tf, eval_tf = imagenet_transforms(image_size, resize_size, scale, ratio)
    splits = {split: datasets.ImageFolder(str(folder)) for split, folder in folders.items()}
    if splits["train"].classes != splits["test"].classes:
        only_train = sorted(set(splits["train"].classes) - set(splits["test"].classes))
        only_val = sorted(set(splits["test"].classes) - set(splits["train"].classes))
        raise ValueError(
            f"train/ and val/ of {str(root)!r} must hold the same class folders; only in train/: {only_train}, "
            f"only in val/: {only_val}"
        )
    return StreamingDataset(
        name=f"imagefolder:{root}",
        splits=splits,
        targets={split: ds.targets for split, ds in splits.items()},
        train_transform=train_tf,
        eval_transform=eval_tf,
        classes=splits["train"].classes,
        mean=mean,
        std=std,
        image_shape=(3, image_size, image_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
    )
