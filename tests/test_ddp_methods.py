"""LC and ADMM under data parallelism: torchrun, 2 CPU processes, Gloo.

Plain DDP keeps the weights identical on every process (the gradients,
penalty included, are averaged), but a method's own state is computed by
each process from them: projections, multipliers, duals, ranks. On one
machine's CPU two processes compute it identically, which would hide a
missing synchronisation, so rank 1 is made to differ the way real runs
can: its decompositions see weights off by one part in a million (as GPUs
differing in their last bits would give) and its rank selector proposes
smaller ranks (as one looking at each process's data could). Rank 0's state
must still be the state of both.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny import torchrun

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with Gloo")

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from tiny import tiny_data
    import tuckerlab.train.engine as engine
    from tuckerlab.methods import admm_compress, lc_compress
    from tuckerlab.projection import Projector
    from tuckerlab.rank.selectors import BudgetRanks
    from tuckerlab.train import Callback

    out = sys.argv[1]
    calls = {"decompose": 0, "select": 0}
    if os.environ["RANK"] == "1":  # this process computes differently (see the test module)
        decompose, select = Projector.decompose_tensors, BudgetRanks.select

        def off(self, tensors, *args, **kwargs):
            calls["decompose"] += 1
            return decompose(self, {n: t * (1 + 1e-6) for n, t in tensors.items()}, *args, **kwargs)

        def fewer(self, *args, **kwargs):
            calls["select"] += 1
            lower = lambda r: tuple(max(1, x - 1) for x in r) if isinstance(r, tuple) else max(1, r - 1)
            return {n: lower(r) for n, r in select(self, *args, **kwargs).items()}

        Projector.decompose_tensors, BudgetRanks.select = off, fewer

    saves = []
    save = engine.save_checkpoint
    engine.save_checkpoint = lambda path, state: (saves.append(str(path)), save(path, state))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # the first layer stays dense
            self.bn0 = nn.BatchNorm2d(8)
            self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 4)
        def forward(self, x):
            x = torch.relu(self.bn0(self.stem(x)))
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    class Keep(Callback):
        # the method's state at the end of its phase
        def on_fit_end(self, trainer):
            self.state = trainer.callbacks[0].state_dict()

    common = dict(rank="params:0.6", rank_update="shrink", device="cpu", progress=False, batch_size=16)
    res = {}
    for name, run in (  # LC's compressed model comes straight from its C-step, ADMM's is fine-tuned
        ("lc", lambda kw: lc_compress(Net(), tiny_data(), format="tucker2", multipliers=True, n_steps=3, **kw)),
        ("admm", lambda kw: admm_compress(Net(), tiny_data(), format="tt", epochs=2, update_every=3,
                                          finetune_epochs=1, **kw)),
    ):
        torch.manual_seed(0)
        keep = Keep()
        r = run({**common, "callbacks": [keep], "checkpoint_dir": os.path.join(out, name)})
        res[name] = dict(state=keep.state, model=r.model.state_dict(), dense=r.dense_model.state_dict(),
                         specs=r.projector.to_dict(), result={k: v for k, v in r.to_dict().items()
                                                              if k not in ("seconds", "wall_time", "history", "finetune_history")})
    res.update(world=dist.get_world_size(), saves=saves, calls=calls)
    torch.save(res, os.path.join(out, f"rank{dist.get_rank()}.pt"))
    """
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run LC and ADMM on 2 processes; returns what rank 0 and rank 1 saved."""
    out = tmp_path_factory.mktemp("ddp_methods")
    torchrun(WORKER, out)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    return r0, r1


def _assert_same(a, b, path=""):
    """Equal bit for bit: tensors with torch.equal, floats exactly (NaN equal to NaN), containers recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, (path, a, b)


def _without_seconds(obj):
    """``obj`` without its ``seconds`` entries (timings differ between processes)."""
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def test_rank_1_did_compute_differently(ranks):
    """The premise: rank 1's own decompositions and rank proposals differ from rank 0's."""
    r0, r1 = ranks
    assert r0["calls"] == {"decompose": 0, "select": 0}
    assert r1["calls"]["decompose"] > 0 and r1["calls"]["select"] > 0


@pytest.mark.parametrize("method, tensors", [("lc", ("targets", "multipliers")), ("admm", ("Z", "U"))])
def test_method_state_is_rank_0s_on_every_process(ranks, method, tensors):
    """Projections, multipliers or duals, ranks, the log of every C-step or update: identical on both ranks."""
    s0, s1 = (r[method]["state"] for r in ranks)
    for key in tensors:
        assert s0[key] is not None and s0[key].keys() == s0["specs"].keys()
        _assert_same(s0[key], s1[key], key)
    _assert_same(s0["specs"], s1["specs"], "specs")
    _assert_same(_without_seconds(s0["log"]), _without_seconds(s1["log"]), "log")
    _assert_same({k: v for k, v in s0.items() if k not in ("log", *tensors)},
                 {k: v for k, v in s1.items() if k not in ("log", *tensors)})
    assert len(s0["log"]) >= 3 and len({str(rec["ranks"]) for rec in s0["log"]}) >= 1


@pytest.mark.parametrize("method", ["lc", "admm"])
def test_weights_and_compressed_model_agree(ranks, method):
    """The dense weights after the method, the factorized model, its ranks and the reported numbers."""
    m0, m1 = (r[method] for r in ranks)
    for key in ("dense", "model", "specs", "result"):
        _assert_same(_without_seconds(m0[key]), _without_seconds(m1[key]), key)


def test_only_rank_0_writes_checkpoints(ranks):
    r0, r1 = ranks
    assert r1["saves"] == []
    written = sorted({str(Path(p).relative_to(Path(p).parents[2])) for p in r0["saves"]})
    assert written == ["admm/admm/last.pt", "admm/finetune/last.pt", "lc/lc/last.pt"]
