"""Data sets and batched augmentation."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tuckerlab.data import (
    CIFAR10_MEAN,
    DatasetNotAvailableError,
    ImageDataset,
    list_datasets,
    load_dataset,
    normalize,
    random_crop_flip,
    read_idx,
)
from tuckerlab.data import _sources

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def subset():
    return load_dataset("cifar10-subset")


# ---------------------------------------------------------------- the shipped subset


def test_cifar10_subset(subset):
    ds = subset
    assert ds.name == "cifar10-subset"
    assert ds.x_train.shape == (5085, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (1017, 3, 32, 32) and ds.x_test.dtype == torch.uint8
    assert ds.y_train.dtype == torch.int64 and ds.y_test.dtype == torch.int64
    assert ds.num_classes == 10 and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert int(ds.y_train.min()) == 0 and int(ds.y_train.max()) == 9
    assert ds.y_train.bincount().min() > 400  # roughly balanced
    assert ds.mean == CIFAR10_MEAN
    # the subset's own statistics agree with the full training set's constants
    x = ds.x_train.double() / 255
    np.testing.assert_allclose(x.mean((0, 2, 3)), ds.mean, atol=0.01)
    np.testing.assert_allclose(x.std((0, 2, 3)), ds.std, atol=0.01)


def test_repr_to_and_subset(subset):
    text = repr(subset)
    assert "cifar10-subset" in text and "5085x3x32x32" in text and "num_classes=10" in text
    assert len(text) < 200
    meta = subset.to("meta")
    assert meta.x_train.device.type == "meta" and meta.y_test.device.type == "meta"
    assert "device=meta" in repr(meta)
    assert subset.x_train.device.type == "cpu"  # original untouched

    small = subset.subset(100, 30)
    assert small.x_train.shape == (100, 3, 32, 32) and small.x_test.shape[0] == 30
    assert small.y_train.bincount(minlength=10).tolist() == [10] * 10
    assert small.y_test.bincount(minlength=10).tolist() == [3] * 10
    again = subset.subset(100, 30)
    assert torch.equal(small.x_train, again.x_train)
    # a deterministic head: the first image of each class is included
    for c in range(10):
        first = int((subset.y_train == c).nonzero()[0])
        assert any(torch.equal(subset.x_train[first], img) for img in small.x_train)
    assert subset.subset(n_train=50).x_test.shape[0] == 1017
    assert subset.subset(10**6).x_train.shape[0] == 5085


def test_image_dataset_validates():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    ok = ImageDataset("t", x, y, x, y, ("a", "b"), (0.5,) * 3, (0.2,) * 3)
    assert ok.num_classes == 2 and ok.image_shape == (3, 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("t", x.float(), y, x, y, ("a",), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="int64"):
        ImageDataset("t", x, y.int(), x, y, ("a",), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match="per channel"):
        ImageDataset("t", x, y, x, y, ("a",), (0.5,), (0.2,))


def test_torch_dataset(subset):
    train = subset.torch_dataset("train")
    test = subset.torch_dataset("test")
    assert len(train) == 5085 and len(test) == 1017
    img, label = test[3]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32) and isinstance(label, int)
    torch.testing.assert_close(img, normalize(subset.x_test[3], subset.mean, subset.std))
    torch.manual_seed(0)
    aug, _ = train[0]
    assert aug.shape == (3, 32, 32)
    loader = torch.utils.data.DataLoader(train, batch_size=16)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64
    with pytest.raises(ValueError):
        subset.torch_dataset("valid")


# ---------------------------------------------------------------- synthetic


def test_synthetic():
    a = load_dataset("synthetic", n_train=500, n_test=200, seed=3)
    b = load_dataset("synthetic", n_train=500, n_test=200, seed=3)
    c = load_dataset("synthetic", n_train=500, n_test=200, seed=4)
    assert a.x_train.shape == (500, 3, 32, 32) and a.x_test.shape == (200, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.num_classes == 10 and len(a.mean) == 3
    grey = load_dataset("synthetic", n_train=8, n_test=4, channels=1, image_size=28, num_classes=5)
    assert grey.x_train.shape == (8, 1, 28, 28) and grey.num_classes == 5


def _synthetic_in_one_block(n_train, n_test, seed, num_classes, image_size, channels, labels):
    """The synthetic images drawn with one ``randn`` per split, as before blocks were used."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=gen) * 255
    templates = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    out = []
    for n in (n_train, n_test):
        y = torch.randint(0, num_classes, (n,), generator=gen)
        noise = torch.randn(n, channels, image_size, image_size, generator=gen) * 64
        which = y if labels == "learnable" else torch.randint(0, num_classes, (n,), generator=gen)
        out.append(((templates[which] * 0.5 + 64 + noise).round_().clamp_(0, 255).to(torch.uint8), y))
    return out


@pytest.mark.parametrize("labels", ["learnable", "random"])
@pytest.mark.parametrize("image_size, channels, n_train", [(32, 3, 70), (1, 1, 37), (3, 1, 33)])
def test_synthetic_blocks_draw_the_same_images(monkeypatch, labels, image_size, channels, n_train):
    # Blocks of 16 images; (1, 1, 37) leaves a last block of 5 values, (3, 1, 33) one image of 9.
    monkeypatch.setattr(_sources, "_SYNTHETIC_BLOCK", 16)
    ds = load_dataset("synthetic", n_train=n_train, n_test=21, seed=5, num_classes=3, image_size=image_size,
                      channels=channels, labels=labels)
    (xa, ya), (xb, yb) = _synthetic_in_one_block(n_train, 21, 5, 3, image_size, channels, labels)
    assert torch.equal(ds.x_train, xa) and torch.equal(ds.y_train, ya)
    assert torch.equal(ds.x_test, xb) and torch.equal(ds.y_test, yb)


def _nearest_mean_accuracy(ds):
    x_tr, x_te = ds.x_train.flatten(1).float(), ds.x_test.flatten(1).float()
    means = torch.stack([x_tr[ds.y_train == k].mean(0) for k in range(ds.num_classes)])
    pred = torch.cdist(x_te, means).argmin(1)
    return (pred == ds.y_test).float().mean().item()


def test_synthetic_labels_learnable_or_random():
    learnable = load_dataset("synthetic", n_train=1000, n_test=500)
    assert _nearest_mean_accuracy(learnable) > 0.95
    random = load_dataset("synthetic", n_train=1000, n_test=500, labels="random")
    assert _nearest_mean_accuracy(random) < 0.25
    with pytest.raises(ValueError):
        load_dataset("synthetic", labels="noisy")


# ---------------------------------------------------------------- names and errors


def test_unknown_name_and_options():
    assert list_datasets() == ["cifar10", "cifar100", "cifar10-subset", "fashion-mnist", "synthetic"]
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in list_datasets():
        assert repr(name) in str(err.value)
    with pytest.raises(TypeError):
        load_dataset("cifar10-subset", n_train=10)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_offline(tmp_path, name):
    with pytest.raises(DatasetNotAvailableError) as err:
        load_dataset(name, root=tmp_path, download=False)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(tmp_path) in msg and ".tar.gz" in msg
    assert "download=False" in msg
    assert "cifar10-subset" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert all(str(tmp_path) in p for p in err.value.looked_for)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_download_failure_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DatasetNotAvailableError, match="failed .*network is unreachable"):
        load_dataset("cifar10", root=tmp_path)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("TUCKERLAB_DATA", str(tmp_path))
    assert _sources.default_root() == tmp_path
    with pytest.raises(DatasetNotAvailableError, match=str(tmp_path)):
        load_dataset("cifar100", download=False)
    monkeypatch.delenv("TUCKERLAB_DATA")
    assert _sources.default_root() == Path.home() / ".cache" / "tuckerlab"


def test_cifar10_via_torchvision_files(tmp_path, monkeypatch, subset):
    """Write CIFAR-10 python batches from the subset and load them back."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def write(fname, x, y):
        batch = {"data": x.reshape(len(x), -1).numpy(), "labels": y.tolist()}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)

    for i in range(5):
        write(f"data_batch_{i + 1}", subset.x_train[i * 10 : i * 10 + 10], subset.y_train[i * 10 : i * 10 + 10])
    write("test_batch", subset.x_test[:7], subset.y_test[:7])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(subset.classes)}, f)

    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_train.is_contiguous()
    assert torch.equal(ds.x_train, subset.x_train[:50])
    assert torch.equal(ds.y_test, subset.y_test[:7]) and ds.y_test.dtype == torch.int64
    assert ds.classes == subset.classes and ds.mean == CIFAR10_MEAN


# ---------------------------------------------------------------- Fashion-MNIST


def _write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_fashion_mnist_from_idx_files(tmp_path, monkeypatch):
    monkeypatch.setattr(_sources, "_FASHION_MNIST_SYSTEM_DIRS", ())
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5),
    }
    for i, (stem, a) in enumerate(arrays.items()):
        compress = i % 2 == 0
        _write_idx(raw / (stem + ".gz" if compress else stem), a, compress)
    np.testing.assert_array_equal(read_idx(raw / "train-images-idx3-ubyte.gz"), arrays["train-images-idx3-ubyte"])

    ds = load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == torch.int64 and ds.classes[0] == "T-shirt/top"
    x = ds.x_train.double() / 255
    assert ds.mean[0] == pytest.approx(x.mean().item()) and ds.std[0] == pytest.approx(x.std(unbiased=False).item())


def test_fashion_mnist_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(_sources, "_FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(DatasetNotAvailableError) as err:
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "nowhere") in msg
    assert "dataset-fashion-mnist" in msg


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_debian(tmp_path):
    ds = load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.bincount().tolist() == [6000] * 10
    assert ds.y_test.bincount().tolist() == [1000] * 10
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-3)


# ---------------------------------------------------------------- normalize


def test_normalize():
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    expected = (x.double() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(x[0], mean, std), out[0])
    half = normalize(x, mean, std, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    cl = normalize(x.contiguous(memory_format=torch.channels_last), mean, std)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, out)
    grey = normalize(x[:, :1], 0.5, 0.25)
    torch.testing.assert_close(grey, (x[:, :1].float() / 255 - 0.5) / 0.25)
    with pytest.raises(ValueError, match="channels"):
        normalize(x, (0.5, 0.5), (0.2, 0.2))


# ---------------------------------------------------------------- random_crop_flip


def _reference_crop_flip(x, padding, dy, dx, flips):
    """The per-image definition: pad with zeros, cut a window, maybe mirror."""
    xp = F.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    out = []
    for img, i, j, f in zip(xp, dy.tolist(), dx.tolist(), flips.tolist()):
        crop = img[:, i : i + h, j : j + w]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_random_crop_flip_matches_reference(padding):
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(7))
    # replay the documented draws: offsets (2, N) then flips (N,)
    g = torch.Generator().manual_seed(7)
    offsets = torch.randint(0, 2 * padding + 1, (2, 64), generator=g)
    flips = torch.randint(0, 2, (64,), generator=g)
    expected = _reference_crop_flip(x, padding, offsets[0], offsets[1], flips)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, expected)


def test_random_crop_flip_properties():
    x = torch.randint(1, 256, (2000, 3, 32, 32), dtype=torch.uint8)  # no zeros in the images
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=4, generator=g)
    # reproducible with a seeded generator, different without
    assert torch.equal(out, random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(out, random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(1)))
    # zero padding: zero rows/columns come only from the border, at most 4 each side
    zero_rows = (out == 0).all(dim=(1, 3)).sum(1)
    zero_cols = (out == 0).all(dim=(1, 2)).sum(1)
    assert int(zero_rows.max()) == 4 and int(zero_cols.max()) == 4
    assert float((zero_rows == 0).float().mean()) == pytest.approx(1 / 9, abs=0.04)
    # about half are mirrored: compare with the best un-mirrored/mirrored window
    mirrored = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(3))
    flipped = (mirrored == x.flip(-1)).flatten(1).all(1)
    kept = (mirrored == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert float(flipped.float().mean()) == pytest.approx(0.5, abs=0.05)
    # no flip, no padding: identity (a copy)
    same = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_random_crop_flip_layouts_and_dtypes():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    ref = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    cl = random_crop_flip(x.contiguous(memory_format=torch.channels_last), generator=torch.Generator().manual_seed(5))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, ref)
    fl = random_crop_flip(x.float(), generator=torch.Generator().manual_seed(5))
    assert fl.dtype == torch.float32 and torch.equal(fl, ref.float())
    grey = random_crop_flip(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    assert grey.shape == (4, 1, 28, 28)
    assert random_crop_flip(x[:0]).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError):
        random_crop_flip(x[0])
    with pytest.raises(ValueError):
        random_crop_flip(x, padding=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_gpu():
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(2)  # CPU generator, CUDA data
    out = random_crop_flip(x.cuda(), generator=g)
    assert out.is_cuda
    assert torch.equal(out.cpu(), random_crop_flip(x, generator=torch.Generator().manual_seed(2)))
    out = random_crop_flip(x.cuda())  # device's own generator
    assert out.is_cuda
    torch.testing.assert_close(
        normalize(x.cuda(), CIFAR10_MEAN, (0.25,) * 3).cpu(), normalize(x, CIFAR10_MEAN, (0.25,) * 3)
    )
