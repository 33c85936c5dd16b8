"""Data-parallel training on the CPU: torchrun, 2 processes, Gloo.

One torchrun job runs every multi-process scenario (starting processes is
the slow part); the tests below read what each rank saved and compare it
with single-process runs made here.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny import make_image_folder, torchrun

from tuckerlab.train import CHECKPOINT_NAME, Trainer, fit, load_checkpoint
from tuckerlab.train import distributed as tdist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with Gloo")

COMMON = textwrap.dedent(
    """
    import torch
    from torch import nn
    from tiny import Interrupt, tiny_data
    from tuckerlab.train import Callback

    class TinyNet(nn.Module):
        def __init__(self, bn=True, classes=4):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=not bn)
            self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
            self.fc = nn.Linear(8, classes)
        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    class Pull(Callback):
        def penalty(self, model):
            return 1e-2 * model.conv.weight.square().sum()

    # Without BatchNorm or augmentation, W ranks x B/W images = one process x B images.
    PLAIN = dict(batch_size=16, lr=0.05, device="cpu", progress=False, augment=False, weight_decay=0.0)
    """
)

WORKER = COMMON + textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    import tuckerlab.train.engine as engine
    from tuckerlab.data import load_dataset
    from tuckerlab.train import Trainer, fit
    from tuckerlab.train import distributed as tdist

    out, folder = sys.argv[1], sys.argv[2]
    saves = []
    save = engine.save_checkpoint
    engine.save_checkpoint = lambda path, state: (saves.append(str(path)), save(path, state))
    res = {}

    # 1. resident data, BatchNorm, augmentation, a penalty, checkpoints
    torch.manual_seed(0)
    bn_model = TinyNet(bn=True)
    h = fit(bn_model, tiny_data(), epochs=2, batch_size=16, lr=0.05, device="cpu", progress=False,
            callbacks=[Pull()], checkpoint_dir=os.path.join(out, "ck"))
    res.update(bn=bn_model.state_dict(), history=h.to_dict())

    # 2. the plain model, resident and streamed through DataLoaders
    for key, data in (("plain", tiny_data()), ("plain_stream", tiny_data().streaming(num_workers=0))):
        torch.manual_seed(0)
        model = TinyNet(bn=False)
        h = fit(model, data, epochs=2, **PLAIN)
        res[key], res[key + "_history"] = model.state_dict(), h.to_dict()

    # 3. a 2-process checkpoint after 1 of 2 epochs, for a 1-process resume
    torch.manual_seed(0)
    try:
        fit(TinyNet(bn=False), tiny_data(), epochs=2, callbacks=[Interrupt(1)],
            checkpoint_dir=os.path.join(out, "half"), **PLAIN)
    except KeyboardInterrupt:
        pass

    # 4. an image folder, streamed by one worker per process: train, evaluate, checkpoint
    torch.manual_seed(0)
    images = load_dataset("imagefolder:" + folder, image_size=16, resize_size=20, num_workers=1)
    t = Trainer(TinyNet(bn=True), images, epochs=1, batch_size=32, lr=0.1, device="cpu", progress=False,
                checkpoint_dir=os.path.join(out, "folder"))
    t.fit()
    res.update(folder=t.model.state_dict(), folder_history=t.history.to_dict(), folder_eval=t.evaluate())

    # 5. the helpers methods use to keep their state identical on every rank
    rank = dist.get_rank()
    p = torch.nn.Parameter(torch.full((2, 2), float(rank)))
    before = tdist.same_on_all_ranks({"p": p})
    got = tdist.broadcast_tensors({"p": p, "z": torch.arange(3) * (rank + 1)} if rank == 0 else {"p": p})
    res.update(helpers=dict(
        before=before, after=tdist.same_on_all_ranks({"p": p}), in_place=got["p"] is p, p=p.detach().clone(),
        z=got["z"], from_1=tdist.broadcast_tensors({"r": torch.tensor([rank, 7])} if rank == 1 else None, src=1)["r"],
        obj=tdist.broadcast_object({"ranks": {"layer1": (3, 5)}, "rank": rank} if rank == 0 else None),
    ))

    res.update(world=dist.get_world_size(), saves=saves)
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    """
)

ns: dict = {}
exec(COMMON, ns)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run the worker on 2 processes; returns (what rank 0 saved, what rank 1 saved, their folder)."""
    out = tmp_path_factory.mktemp("ddp")
    folder = make_image_folder(out / "images", n_train=24, n_val=8)
    torchrun(WORKER, out, str(folder))
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    return r0, r1, out


def _plain_run(data, epochs=2, **kw):
    torch.manual_seed(0)
    model = ns["TinyNet"](bn=False)
    h = fit(model, data, epochs=epochs, **ns["PLAIN"], **kw)
    return model, h


def test_ranks_hold_the_same_model_and_history(ranks):
    r0, r1, _ = ranks
    for run in ("bn", "plain", "plain_stream", "folder"):
        for k in r0[run]:
            assert torch.equal(r0[run][k], r1[run][k]), (run, k)
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert r0["history"][k] == r1["history"][k], k
    assert len(r0["history"]["epoch"]) == 2


def test_only_rank_0_writes_checkpoints(ranks):
    r0, r1, out = ranks
    assert r1["saves"] == []
    assert sorted(Path(p).parent.name for p in r0["saves"]) == ["ck", "ck", "folder", "half"]
    ck = load_checkpoint(out / "ck" / CHECKPOINT_NAME)
    assert ck["epoch"] == 2 and ck["args"]["world_size"] == 2
    for k, v in ck["model"].items():
        assert torch.equal(v, r0["bn"][k]), k


@pytest.mark.parametrize("run", ["plain", "plain_stream"])
def test_two_processes_equal_one_with_the_same_global_batch(ranks, run, one_thread):
    """Resident and streamed: 2 ranks x 8 images per step give the weights of 1 process x 16 images.

    The model has no BatchNorm (whose batch statistics are per process) and
    there is no augmentation (drawn per process), the two parts of a step
    that depend on the number of processes by design.
    """
    r0 = ranks[0]
    data = ns["tiny_data"]()
    model, h = _plain_run(data if run == "plain" else data.streaming(num_workers=0))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, r0[run][k], atol=1e-5, rtol=1e-4, msg=k)
    assert r0[run + "_history"]["train_loss"] == pytest.approx(h.train_loss, rel=1e-5)
    assert r0[run + "_history"]["test_acc"] == pytest.approx(h.test_acc)


def test_two_process_checkpoint_resumes_on_one_process(ranks, tmp_path, one_thread):
    """World size may change on resume: it warns, continues, and ends where 1 process ends alone."""
    out = ranks[2]
    saved = load_checkpoint(out / "half" / CHECKPOINT_NAME)
    assert saved["epoch"] == 1 and saved["args"]["world_size"] == 2
    torch.manual_seed(0)
    trainer = Trainer(ns["TinyNet"](bn=False), ns["tiny_data"](), epochs=2, callbacks=[ns["Interrupt"]()],
                      checkpoint_dir=out / "half", **ns["PLAIN"])
    with pytest.warns(UserWarning, match=r"world_size 2 \(now 1\).*same global batches .* not bit for bit"):
        trainer.fit()
    assert trainer.resumed_from == 1 and trainer.epoch == 2
    assert [s["world_size"] for s in trainer.history.segments] == [2, 1]
    assert load_checkpoint(out / "half" / CHECKPOINT_NAME)["args"]["world_size"] == 1
    alone, _ = _plain_run(ns["tiny_data"](), callbacks=[ns["Interrupt"]()])
    for k, v in alone.state_dict().items():
        torch.testing.assert_close(v, trainer.model.state_dict()[k], atol=1e-5, rtol=1e-4, msg=k)


def test_streamed_image_folder_under_ddp(ranks):
    r0, r1, out = ranks
    h = r0["folder_history"]
    assert h["epoch"] == [1] and h["train_loss"] == r1["folder_history"]["train_loss"]
    assert r0["folder_eval"] == r1["folder_eval"] and 0 <= r0["folder_eval"]["accuracy"] <= 1
    assert r0["folder_eval"]["accuracy"] == pytest.approx(h["test_acc"][0])
    ck = load_checkpoint(out / "folder" / CHECKPOINT_NAME)
    assert ck["args"]["data"] == [[96, 3, 16, 16], [32, 3, 16, 16]] and ck["epoch"] == 1


def test_broadcast_helpers(ranks):
    r0, r1, _ = ranks
    for r, res in enumerate((r0["helpers"], r1["helpers"])):
        assert res["before"] is False and res["after"] is True, r
        assert res["in_place"] is True and torch.equal(res["p"], torch.zeros(2, 2)), r
        assert torch.equal(res["z"], torch.arange(3)), r  # a tensor rank 1 did not have
        assert torch.equal(res["from_1"], torch.tensor([1, 7])), r  # from another source rank
        assert res["obj"] == {"ranks": {"layer1": (3, 5)}, "rank": 0}, r


def test_helpers_in_one_process_change_nothing():
    t = {"a": torch.ones(2)}
    got = tdist.broadcast_tensors(t)
    assert got == t and got["a"] is t["a"]
    assert tdist.broadcast_object([1, 2]) == [1, 2] and tdist.same_on_all_ranks(t)
    assert tdist.current() == tdist.DistInfo()
