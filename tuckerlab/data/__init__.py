"""Image data sets: held in memory as uint8 tensors, or streamed from disk.

:func:`load_dataset` returns an :class:`ImageDataset` whose tensors can be
moved to the GPU once; :func:`random_crop_flip` and :func:`normalize` then
prepare each batch there. A subset of CIFAR-10 ships with the package, so
everything also works offline. Data sets too large for memory (ImageNet, a
user's image folders: ``load_dataset("imagefolder:PATH")``) are a
:class:`StreamingDataset`, decoded and augmented batch by batch by the
workers of a DataLoader (:meth:`ImageDataset.streaming` sends an in-memory
data set the same way).

Examples
--------
>>> from tuckerlab.data import load_dataset, normalize, random_crop_flip
>>> ds = load_dataset("cifar10-subset")
>>> x = normalize(random_crop_flip(ds.x_train[:8]), ds.mean, ds.std)
>>> x.shape, x.dtype
(torch.Size([8, 3, 32, 32]), torch.float32)

References
----------
A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
technical report, University of Toronto, 2009.

H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.
"""

from ._augment import normalize, random_crop_flip
from ._dataset import DatasetNotAvailableError, ImageDataset
from ._stream import IMAGENET_MEAN, IMAGENET_STD, StreamingDataset, image_folder, imagenet_transforms
from ._sources import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    default_root,
    list_datasets,
    load_dataset,
    read_idx,
)

__all__ = [
    "load_dataset",
    "list_datasets",
    "default_root",
    "ImageDataset",
    "StreamingDataset",
    "image_folder",
    "imagenet_transforms",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetNotAvailableError",
    "normalize",
    "random_crop_flip",
    "read_idx",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
]
