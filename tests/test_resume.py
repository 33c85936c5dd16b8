"""Checkpoints: an interrupted and resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import single_thread, tiny_data
import torch
from torch import nn

from tuckerlab.train import CHECKPOINT_NAME, Callback, IncompatibleCheckpointError, TrainConfig, Trainer, load_checkpoint

EPOCHS = 5
TIMING = ("time", "train_time")


class TinyNet(nn.Module):
    """Conv-BN-ReLU, dropout (uses the global torch RNG), linear."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3))))


class Anchor(Callback):
    """An LC-like method: a penalty towards a tensor updated each epoch, growing mu.

    It draws from the Python, NumPy and torch RNGs so that restoring them is
    checked too. ``interrupt_at`` / ``kill_at_step`` simulate a crash.
    """

    def __init__(self, interrupt_at=None, kill_at_step=None):
        self.mu = 1e-3
        self.center = None
        self.jitter = []
        self.interrupt_at = interrupt_at
        self.kill_at_step = kill_at_step

    def on_fit_begin(self, trainer):
        self.center = trainer.model.conv.weight.detach().clone()

    def penalty(self, model):
        return self.mu / 2 * (model.conv.weight - self.center).square().sum()

    def on_step_end(self, trainer, step):
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.interrupt_at is not None and epoch == self.interrupt_at:
            raise KeyboardInterrupt
        w = trainer.model.conv.weight.detach()
        self.center = 0.5 * (self.center + w) + 1e-3 * torch.randn_like(w)
        self.mu *= 1.5 + 0.1 * random.random()
        self.jitter.append(float(np.random.rand()))
        logs["mu"] = self.mu

    def state_dict(self):
        return {"mu": self.mu, "center": self.center, "jitter": list(self.jitter)}

    def load_state_dict(self, state):
        self.mu, self.center, self.jitter = state["mu"], state["center"].clone(), list(state["jitter"])


def make_trainer(ckdir, **cb_kw) -> Trainer:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return Trainer(
        TinyNet(),
        tiny_data(),
        epochs=EPOCHS,
        batch_size=16,
        lr=0.05,
        schedule="onecycle",
        label_smoothing=0.1,
        callbacks=[Anchor(**cb_kw)],
        checkpoint_dir=ckdir,
        device="cpu",
        progress=False,
    )


def assert_same_run(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(torch.as_tensor(oa["state"][i][k]), torch.as_tensor(ob["state"][i][k])), (i, k)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    ha, hb = a.history.to_dict(), b.history.to_dict()
    assert ha.keys() == hb.keys()
    for k in ha:
        if k not in TIMING:
            assert ha[k] == hb[k], k
    ca, cb = a.callbacks[0].state_dict(), b.callbacks[0].state_dict()
    assert ca["mu"] == cb["mu"] and ca["jitter"] == cb["jitter"] and torch.equal(ca["center"], cb["center"])
    assert (a.epoch, a.step) == (b.epoch, b.step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (computed once, with one thread like the others)."""
    with single_thread():
        t = make_trainer(tmp_path_factory.mktemp("ref"))
        t.fit()
    return t


def test_keyboard_interrupt_then_resume_is_exact(tmp_path, reference, one_thread):
    crashed = make_trainer(tmp_path, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert saved["epoch"] == 2 and saved["step"] == 8 and len(saved["history"]["epoch"]) == 2

    resumed = make_trainer(tmp_path)
    resumed.fit()
    assert resumed.resumed_from == 2
    assert_same_run(reference, resumed)

    # the wall time of both parts is kept: the crashed part up to its last checkpoint
    first, second = resumed.history.segments
    assert (first["start_epoch"], first["end_epoch"], second["start_epoch"], second["end_epoch"]) == (0, 2, 2, EPOCHS)
    assert not first["estimated"] and first["world_size"] == second["world_size"] == 1
    assert first["wall_time_s"] >= sum(resumed.history.time[:2]) > 0
    assert second["wall_time_s"] >= sum(resumed.history.time[2:]) > 0
    assert resumed.wall_time_s == resumed.history.wall_time_s == first["wall_time_s"] + second["wall_time_s"]
    on_disk = load_checkpoint(tmp_path / CHECKPOINT_NAME)["segments"]
    assert on_disk[0] == first and on_disk[1]["end_epoch"] == EPOCHS
    assert sum(resumed.history.time[2:]) <= on_disk[1]["wall_time_s"] <= second["wall_time_s"]  # to its last save


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_process_then_resume_is_exact(tmp_path, reference, one_thread):
    """A subprocess is killed with SIGKILL in the middle of epoch 3; this process resumes."""
    tests_dir = Path(__file__).parent
    kill_step = 2 * 4 + 2  # 4 steps per epoch: after 2 checkpoints, half-way through epoch 3
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); torch.set_num_threads(1);"
        "import test_resume as t; t.make_trainer(sys.argv[2], kill_at_step=int(sys.argv[3])).fit()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests_dir.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tests_dir), str(tmp_path), str(kill_step)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert saved["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary file left

    resumed = make_trainer(tmp_path)
    resumed.fit()
    assert resumed.resumed_from == 2
    assert_same_run(reference, resumed)


def test_checkpoint_contents(reference):
    saved = load_checkpoint(reference.checkpoint_path)
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "history", "callbacks", "rng", "args_hash", "args"):
        assert key in saved
    assert saved["epoch"] == EPOCHS and saved["step"] == EPOCHS * 4
    assert set(saved["rng"]) >= {"torch", "numpy", "python"}
    assert saved["args"]["lr"] == repr(0.05)


def test_finished_run_resumes_to_a_no_op(reference, one_thread):
    again = make_trainer(reference.checkpoint_path.parent)
    before = {k: v.clone() for k, v in load_checkpoint(reference.checkpoint_path)["model"].items()}
    again.fit()
    assert again.resumed_from == EPOCHS and again.step == EPOCHS * 4
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_incompatible_resume_says_what_differs(tmp_path):
    crashed = make_trainer(tmp_path, interrupt_at=0)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    crashed = make_trainer(tmp_path, interrupt_at=1)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1
    torch.manual_seed(0)
    other = Trainer(TinyNet(), tiny_data(), epochs=EPOCHS, batch_size=16, lr=0.1, schedule="onecycle",
                    label_smoothing=0.1, callbacks=[Anchor()], checkpoint_dir=tmp_path, device="cpu", progress=False)
    with pytest.raises(IncompatibleCheckpointError, match=r"lr: checkpoint '0.05' != now '0.1'"):
        other.fit()
    # resume=False starts over and overwrites
    torch.manual_seed(0)
    fresh = Trainer(TinyNet(), tiny_data(), epochs=1, batch_size=16, lr=0.1, checkpoint_dir=tmp_path,
                    resume=False, device="cpu", progress=False)
    fresh.fit()
    assert fresh.resumed_from is None and load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1


def test_checkpoint_written_before_trainconfig_resumes(tmp_path, one_thread):
    """A checkpoint of the engine that took 26 keyword arguments (tests/fixtures) resumes unchanged.

    The fingerprint of the same settings is the same, through keywords and
    through a TrainConfig, and the resumed run ends where the old engine's
    uninterrupted run ended.
    """
    from fixtures import main_checkpoint as fx

    saved = load_checkpoint(fx.FILE)
    assert saved["epoch"] == fx.INTERRUPTED_AFTER
    shutil.copyfile(fx.FILE, tmp_path / CHECKPOINT_NAME)
    resumed = fx.make_trainer(tmp_path)
    assert resumed.args_hash == saved["args_hash"]
    config = TrainConfig(**fx.SETTINGS, callbacks=[fx.Interrupt()], checkpoint_dir=tmp_path)
    assert Trainer(fx.FixtureNet(), tiny_data(), config).args_hash == saved["args_hash"]

    resumed.fit()
    assert resumed.resumed_from == fx.INTERRUPTED_AFTER and resumed.epoch == fx.SETTINGS["epochs"]
    assert resumed.history.epoch == [1, 2, 3, 4] and resumed.history.train_loss[:2] == saved["history"]["train_loss"]
    final = torch.load(fx.FINAL, weights_only=True)
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, final[k], msg=k)
    # the old checkpoint kept no wall time: its part is the sum of its epochs' times, marked as such
    old, new = resumed.history.segments
    assert old["estimated"] and old["wall_time_s"] == pytest.approx(sum(saved["history"]["time"]))
    assert not new["estimated"] and (new["start_epoch"], new["end_epoch"]) == (2, 4)


def test_early_stop_is_remembered(tmp_path):
    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop = epoch == 1

    def run():
        torch.manual_seed(0)
        t = Trainer(TinyNet(), tiny_data(), epochs=EPOCHS, batch_size=16, callbacks=[StopAfterTwo()],
                    checkpoint_dir=tmp_path, device="cpu", progress=False)
        t.fit()
        return t

    assert run().epoch == 2
    again = run()
    assert again.resumed_from == 2 and again.epoch == 2 and len(again.history) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(tmp_path):
    """Same scenario on the GPU (bf16, channels_last): resumes; close to the uninterrupted run."""

    def trainer(ckdir, **kw):
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        return Trainer(TinyNet(), tiny_data(), epochs=EPOCHS, batch_size=16, lr=0.05, schedule="onecycle",
                       callbacks=[Anchor(**kw)], checkpoint_dir=ckdir, progress=False)

    ref = trainer(tmp_path / "ref")
    ref.fit()
    crashed = trainer(tmp_path / "run", interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed = trainer(tmp_path / "run")
    resumed.fit()
    assert resumed.resumed_from == 2 and resumed.device.type == "cuda"
    for k, v in ref.model.state_dict().items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-2), k
