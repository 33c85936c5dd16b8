"""Data-parallel training on the CPU: torchrun, 2 processes, Gloo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tuckerlab.train import CHECKPOINT_NAME, fit, load_checkpoint

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with Gloo")

COMMON = textwrap.dedent(
    """
    import torch
    from torch import nn
    from tuckerlab.data import ImageDataset
    from tuckerlab.train import Callback

    def tiny_data(n_train=64, n_test=30, classes=4, size=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        colours = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])[:classes]
        def make(n):
            y = torch.arange(n) % classes
            x = torch.randint(0, 96, (n, 3, size, size), generator=g) + 128 * colours[y][:, :, None, None]
            return x.clamp(0, 255).to(torch.uint8), y
        (xa, ya), (xb, yb) = make(n_train), make(n_test)
        return ImageDataset("tiny", xa, ya, xb, yb, tuple(map(str, range(classes))), (0.3, 0.2, 0.2), (0.25, 0.2, 0.2))

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
    """
)

WORKER = COMMON + textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    from tuckerlab.train import fit

    out = sys.argv[1]
    torch.manual_seed(0)
    bn_model = TinyNet(bn=True)
    h = fit(bn_model, tiny_data(), epochs=2, batch_size=16, lr=0.05, device="cpu", progress=False,
            callbacks=[Pull()], checkpoint_dir=os.path.join(out, "ck"))
    torch.manual_seed(0)
    plain = TinyNet(bn=False)
    h2 = fit(plain, tiny_data(), epochs=2, batch_size=16, lr=0.05, device="cpu", progress=False,
             augment=False, weight_decay=0.0)
    rank = dist.get_rank()
    torch.save({"bn": bn_model.state_dict(), "history": h.to_dict(), "plain": plain.state_dict(),
                "plain_history": h2.to_dict(), "world": dist.get_world_size()},
               os.path.join(out, f"rank{rank}.pt"))
    """
)


def _single_process_plain():
    ns: dict = {}
    exec(COMMON, ns)
    torch.manual_seed(0)
    model = ns["TinyNet"](bn=False)
    h = fit(model, ns["tiny_data"](), epochs=2, batch_size=16, lr=0.05, device="cpu", progress=False,
            augment=False, weight_decay=0.0)
    return model, h


def test_torchrun_two_processes_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2

    # every rank ends with the same parameters and BatchNorm statistics ...
    for k in r0["bn"]:
        assert torch.equal(r0["bn"][k], r1["bn"][k]), k
    # ... and the same (all-reduced) history
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert r0["history"][k] == r1["history"][k], k
    assert len(r0["history"]["epoch"]) == 2

    # rank 0 wrote the checkpoint of the 2-process run
    ck = load_checkpoint(tmp_path / "ck" / CHECKPOINT_NAME)
    assert ck["epoch"] == 2 and ck["args"]["world_size"] == 2
    for k, v in ck["model"].items():
        assert torch.equal(v, r0["bn"][k]), k

    # Without BatchNorm or augmentation, 2 ranks x 8 images = one process x 16 images.
    model, h = _single_process_plain()
    for k, v in model.state_dict().items():
        assert torch.allclose(v, r0["plain"][k], atol=1e-5, rtol=1e-4), k
    assert r0["plain_history"]["train_loss"] == pytest.approx(h.train_loss, rel=1e-5)
    assert r0["plain_history"]["test_acc"] == pytest.approx(h.test_acc)
