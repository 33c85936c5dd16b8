"""Files written by the earlier layout still load: model files (version 1) and LC/ADMM checkpoints.

``tests/fixtures/v1`` was written by the code before the format registry
(model file format ``tuckerlab-model/1``, square Tucker factors stored, the
C-step's anchors in the checkpoints). A model file must give the same outputs
as the model that was saved; an interrupted LC or ADMM run must resume from
its checkpoint and finish.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny import Interrupt, tiny_data

from test_lc import Tiny
from tuckerlab.formats import get_format
from tuckerlab.layers import TuckerConv2d
from tuckerlab.methods import admm_compress, lc_compress
from tuckerlab.serialization import load_model

V1 = Path(__file__).parent / "fixtures" / "v1"
FIT = dict(batch_size=16, device="cpu", progress=False)
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.mark.parametrize("fmt", ["tucker2", "tt", "tt_tucker", "cp"])
def test_version_1_model_files_load_and_give_the_same_outputs(fmt):
    saved = torch.load(V1 / "resnet20-outputs.pt", weights_only=True)
    model, info = load_model(V1 / f"resnet20-{fmt}.pt")
    assert info["compression"]["method"] == fmt and info["compression"]["formats"]["fc"] == "lowrank"
    with torch.no_grad():
        torch.testing.assert_close(model(saved["x"]), saved["expected"][fmt], rtol=1e-4, atol=1e-5)


def test_square_factors_of_version_1_files_are_folded():
    model, _ = load_model(V1 / "resnet20-tucker2.pt")
    layer = model.layer1[0].conv1  # saved with rank (16, 4): a 16 x 16 output factor
    assert isinstance(layer, TuckerConv2d) and layer.rank == (16, 4) and layer.factor_out is None


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def _resume(name, tmp_path, run):
    """Resume the run whose checkpoint was written (interrupted after 2 epochs, by an ``Interrupt`` hook)."""
    ck = tmp_path / name
    shutil.copytree(V1 / f"{name}-checkpoint", ck)
    return run(ck)


def test_an_lc_checkpoint_of_version_1_resumes(tmp_path, monkeypatch):
    # The checkpoint's C-steps ran HOOI to convergence, as version 1 did by
    # default; today's default stops at HOOI_SWEEPS, which on this tiny random
    # model lands elsewhere. Compare both runs under the checkpoint's rule.
    monkeypatch.setattr(get_format("tucker2"), "default_options", {"n_iter_max": 100})
    specs = {"conv1": ("tucker2", (4, 2)), "conv2": ("tucker2", (3, 4))}

    def run(ck):
        return lc_compress(tiny(), tiny_data(), specs, n_steps=3, epochs_per_step=2, mu0=0.05, mu_growth=2.0,
                           lr=0.02, label_smoothing=0.1, checkpoint_dir=ck, callbacks=[Interrupt()], **FIT)

    resumed = _resume("lc", tmp_path, run)
    fresh = run(tmp_path / "fresh")
    assert [r["step"] for r in resumed.log] == [0, 1, 2, 3]  # the first C-steps come from the checkpoint
    assert resumed.history.epoch == fresh.history.epoch == list(range(1, 7))
    for a, b in zip(resumed.dense_model.parameters(), fresh.dense_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_an_admm_checkpoint_of_version_1_resumes(tmp_path):
    def run(ck):
        return admm_compress(tiny(), tiny_data(), {"conv2": ("tt", (2, 4, 3))}, epochs=4, lr=0.05, rho=0.5,
                             finetune_epochs=1, checkpoint_dir=ck, callbacks=[Interrupt()], **FIT)

    resumed = _resume("admm", tmp_path, run)
    fresh = run(tmp_path / "fresh")
    assert [r["update"] for r in resumed.log] == [0, 1, 2, 3, 4]
    for a, b in zip(resumed.model.parameters(), fresh.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
