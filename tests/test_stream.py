"""Streaming data sets: an image folder made here, read through DataLoaders by the engine."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny import Interrupt, make_image_folder, tiny_data
from torch import nn

from tuckerlab.data import IMAGENET_MEAN, StreamingDataset, load_dataset
from tuckerlab.train import CHECKPOINT_NAME, Trainer, evaluate, fit, load_checkpoint

SIZE = 32


class SmallNet(nn.Module):
    def __init__(self, classes=4, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=not bn)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """240 training and 64 validation PNG images in 4 class folders."""
    return make_image_folder(tmp_path_factory.mktemp("images"))


def load(folder, **kw):
    return load_dataset(f"imagefolder:{folder}", image_size=SIZE, resize_size=36, **{"num_workers": 0, **kw})


def test_image_folder_layout_and_items(folder):
    ds = load(folder)
    assert isinstance(ds, StreamingDataset)
    assert ds.classes == ("class_0", "class_1", "class_2", "class_3") and ds.num_classes == 4
    assert (len(ds), ds.num_images("train"), ds.num_images("test")) == (240, 240, 64)
    assert ds.image_shape == (3, SIZE, SIZE) and ds.mean == IMAGENET_MEAN
    assert torch.equal(ds.targets("train").bincount(), torch.full((4,), 60))
    assert f"imagefolder:{folder}" in repr(ds) and "num_classes=4" in repr(ds)
    # evaluation: resize + centre crop, deterministic; training: random resized crop + flip
    img, label = ds.dataset("test")[17]
    again, _ = ds.dataset("test")[17]
    assert img.dtype == torch.uint8 and img.shape == (3, SIZE, SIZE) and label == 1 and torch.equal(img, again)
    torch.manual_seed(0)
    a, _ = ds.dataset("train", augment=True)[0]
    b, _ = ds.dataset("train", augment=True)[0]
    assert a.shape == (3, SIZE, SIZE) and not torch.equal(a, b)
    # a few images by index, as from an in-memory set
    x, y = ds.take("test", [17, 0])
    assert x.shape == (2, 3, SIZE, SIZE) and x.dtype == torch.uint8 and torch.equal(x[0], img) and y.tolist() == [1, 0]
    mem = tiny_data()
    x, y = mem.take("train", [3, 1])
    assert torch.equal(x, mem.x_train[[3, 1]]) and torch.equal(y, mem.y_train[[3, 1]])
    assert torch.equal(mem.streaming().take("train", [3, 1])[0], x)
    # relative paths are taken relative to root
    rel = load_dataset(f"imagefolder:{folder.name}", root=folder.parent, image_size=SIZE, num_workers=0)
    assert rel.num_images("train") == 240


def test_image_folder_errors(folder, tmp_path):
    noval = make_image_folder(tmp_path / "noval", n_train=1, n_val=0)
    shutil.rmtree(noval / "val")
    with pytest.raises(FileNotFoundError, match=r"needs train/ and val/ .*not found: .*val"):
        load(noval)
    other = make_image_folder(tmp_path / "other", n_train=1, n_val=1)
    shutil.rmtree(other / "val" / "class_3")
    with pytest.raises(ValueError, match=r"same class folders; only in train/: \['class_3'\], only in val/: \[\]"):
        load(other)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        load_dataset(f"imagefolder:{folder}", image_size=0)
    with pytest.raises(ValueError, match="resize_size must be an integer >= image_size"):
        load_dataset(f"imagefolder:{folder}", image_size=64, resize_size=32)
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
        load(folder, num_workers=-1)
    with pytest.raises(ValueError, match="nothing to download"):
        load_dataset(f"imagefolder:{folder}", download=True)


def test_loader_shards_the_global_batch_like_one_process(folder):
    """Two shards of a DistributedSampler epoch are, step by step, the global batch of one process."""
    ds = load(folder)
    one = [y for _, y in ds.loader("train", 16, shuffle=True, seed=5, drop_last=True)]
    shards = [list(ds.loader("train", 8, shuffle=True, seed=5, rank=r, world_size=2, drop_last=True)) for r in (0, 1)]
    for step, y in enumerate(one):
        both = torch.cat([shards[0][step][1], shards[1][step][1]])
        assert sorted(both.tolist()) == sorted(y.tolist())
    # evaluation shards cover every image once
    ev = [torch.cat([y for _, y in ds.loader("test", 10, rank=r, world_size=2)]) for r in (0, 1)]
    assert sorted(torch.cat(ev).tolist()) == sorted(ds.targets("test").tolist())


def train(folder, ckdir, epochs=2, interrupt_at=None, workers=1):
    torch.manual_seed(0)
    return Trainer(SmallNet(), load(folder, num_workers=workers), epochs=epochs, batch_size=32, lr=0.1,
                   schedule="onecycle", device="cpu", progress=False, checkpoint_dir=ckdir,
                   callbacks=[Interrupt(interrupt_at)])


def test_streamed_folder_trains_evaluates_and_resumes_exactly(folder, tmp_path, one_thread):
    """One DataLoader worker (a separate process) per epoch: train, evaluate, interrupt, resume."""
    ref = train(folder, tmp_path / "ref")
    ref.fit()
    assert ref.steps_per_epoch == 240 // 32 and len(ref.history) == 2 and ref.data.image_shape == (3, SIZE, SIZE)
    assert ref.history.train_loss[1] < ref.history.train_loss[0]
    result = evaluate(ref.model, load(folder, num_workers=0), batch_size=24)
    assert result["accuracy"] == pytest.approx(ref.history.test_acc[-1])
    assert result["accuracy"] > 0.5  # 4 classes by colour: far above chance after 2 epochs

    crashed = train(folder, tmp_path / "run", interrupt_at=1)  # raised before epoch 2 is saved
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["epoch"] == 1
    resumed = train(folder, tmp_path / "run")
    resumed.fit()
    assert resumed.resumed_from == 1 and resumed.epoch == 2
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.history.train_loss == ref.history.train_loss


def test_streaming_a_resident_data_set_visits_the_same_batches(one_thread):
    """Same seed, no augmentation: the DataLoader path trains on the batches of the resident path."""
    data = tiny_data()
    assert data.num_images("train") == data.streaming().num_images("train") == 64
    models = []
    for d in (data, data.streaming(num_workers=0)):
        torch.manual_seed(0)
        model = SmallNet(bn=False)
        h = fit(model, d, epochs=2, batch_size=16, lr=0.05, augment=False, device="cpu", progress=False)
        models.append((model, h))
    (a, ha), (b, hb) = models
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], msg=k)
    assert ha.train_loss == pytest.approx(hb.train_loss, rel=1e-6)
    assert ha.test_acc == pytest.approx(hb.test_acc)
    # with augmentation both train; the augmentations are drawn differently by design
    h = fit(SmallNet(), data.streaming(num_workers=0), epochs=1, batch_size=16, lr=0.05, device="cpu", progress=False)
    assert len(h) == 1 and h.train_acc[0] > 0


def test_streamed_labels_are_checked_before_training(folder):
    with pytest.raises(ValueError, match="model outputs 3 logits per image but the labels go up to 3"):
        fit(SmallNet(classes=3), load(folder), epochs=1, batch_size=32, device="cpu", progress=False)
