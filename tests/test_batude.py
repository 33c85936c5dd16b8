"""BATUDE (Yin et al. 2022): the budget step, the M- and dual steps, full budgets, resumption, reports, inputs, CLI."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from test_lc import same_state, without_times
from tiny import Interrupt, tiny_data
import torch
from torch import nn

from tuckerlab.formats import get_format
from tuckerlab.formats._spectra import unfold
from tuckerlab.layer_selection import select_layers
from tuckerlab.methods import BATUDECallback, batude_compress
from tuckerlab.methods.batude import budget_ranks, parse_budget, threshold
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.train import Callback, fit

FIT = dict(batch_size=16, device="cpu", progress=False)
TK2 = get_format("tucker2")

# tiny models: one thread is faster, and runs compared bit for bit need the same thread count
pytestmark = pytest.mark.usefixtures("one_thread_module")


class Net(nn.Module):
    """Two compressed convs of the same shape: conv2 at 8x8, conv3 (stride 2) at 4x4 (a quarter of the MACs)."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def net(seed=0) -> Net:
    torch.manual_seed(seed)
    return Net()


def selection_of(model, size=8):
    return select_layers(model, input_size=(3, size, size))


def spectra_of(model, names=("conv2", "conv3")):
    return {n: tuple(torch.linalg.svdvals(unfold(model.get_submodule(n).weight.detach().double(), k)).numpy()
                     for k in (0, 1)) for n in names}


def true_cost(selection, ranks, metric):
    """The whole network's params or MACs at ``ranks``, from the layers' own costs (not the budget step's sums)."""
    k = ("params", "macs").index(metric)
    total = selection.total_params if metric == "params" else selection.total_macs
    return total - sum(i.dense_cost()[k] for i in selection) + sum(i.cost(TK2, ranks[i.name])[k] for i in selection)


# ------------------------------------------------------------ the budget step
@pytest.mark.parametrize("metric", ["params", "macs"])
@pytest.mark.parametrize("energy", ["absolute", "relative"])
def test_budget_step_meets_every_budget_and_is_monotone_in_it(metric, energy):
    from tuckerlab.models import get_model

    torch.manual_seed(0)
    model = get_model("resnet20")  # 18 compressed convs of 16 to 64 channels: a fine grid of costs
    selection = select_layers(model, input_size=(3, 32, 32))
    rng = np.random.default_rng(0)
    real = spectra_of(model, selection.names)
    random = {n: tuple(np.sort(rng.gamma(0.5, size=len(s)))[::-1] for s in v) for n, v in real.items()}
    for spectra in (real, random):
        previous, cache = None, {}
        for target in (1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.12):
            step = budget_ranks(spectra, selection, f"{metric}:{target}", energy=energy, cache=cache)
            dense = selection.total_params if metric == "params" else selection.total_macs
            cost = true_cost(selection, step.ranks, metric)
            assert step.cost == cost and step.met and cost <= target * dense, (target, cost / dense)
            assert cost >= (target - 0.01) * dense, (target, cost / dense)  # and does not cut far below it
            assert (step.params, step.macs) == (true_cost(selection, step.ranks, "params"),
                                                true_cost(selection, step.ranks, "macs"))
            for name, (ro, ri) in step.ranks.items():
                assert 1 <= ro <= selection[name].weight_shape[0] and 1 <= ri <= selection[name].weight_shape[1]
                if previous is not None:  # a smaller budget never gives a larger rank
                    assert ro <= previous[name][0] and ri <= previous[name][1], (target, name)
            if target == 1.0:
                assert all(step.ranks[i.name] == i.weight_shape[:2] for i in selection)  # no cut at the dense cost
            previous = step.ranks
        assert previous != {i.name: i.weight_shape[:2] for i in selection}


def test_budget_step_weighs_energy_against_the_cost_saved():
    model = net()
    selection = selection_of(model)
    same = spectra_of(model, ["conv3"])["conv3"]
    spectra = {"conv2": same, "conv3": same}
    # the same shapes and spectra; conv3's MACs per rank are a quarter of conv2's (4x4 outputs, not 8x8):
    # under a MAC budget conv2 is cut more, under a parameter budget both alike (ties alternate)
    by_macs = budget_ranks(spectra, selection, "macs:0.6").ranks
    by_params = budget_ranks(spectra, selection, "params:0.7").ranks
    assert sum(by_macs["conv2"]) < sum(by_macs["conv3"]) - 4, by_macs
    assert abs(sum(by_params["conv3"]) - sum(by_params["conv2"])) <= 1 and sum(by_params["conv2"]) < 24, by_params
    # energy: conv2 with its spectrum scaled up 100x keeps more of its ranks
    loud = dict(spectra, conv2=tuple(100 * s for s in same))
    assert sum(budget_ranks(loud, selection, "params:0.7").ranks["conv2"]) > sum(by_params["conv2"]) + 4
    # ... unless the energy is relative to the layer's own (then the scale does not matter)
    assert budget_ranks(loud, selection, "params:0.7", energy="relative").ranks == \
        budget_ranks(spectra, selection, "params:0.7", energy="relative").ranks


def test_budget_forms_and_absolute_counts():
    b = parse_budget("macs:0.4")
    assert (b.metric, b.value, b.absolute) == ("macs", 0.4, False)
    assert parse_budget("macs:2.5x").value == pytest.approx(0.4) and not parse_budget("macs:2.5x").absolute
    assert parse_budget("params:1").value == 1.0 and not parse_budget("params:1").absolute
    b = parse_budget("params:150000")
    assert (b.metric, b.value, b.absolute) == ("params", 150000.0, True)
    model = net()
    selection, spectra = selection_of(model), spectra_of(model)
    half = selection.total_macs // 2
    assert budget_ranks(spectra, selection, f"macs:{half}").ranks == budget_ranks(
        spectra, selection, f"macs:{half / selection.total_macs}").ranks
    above = budget_ranks(spectra, selection, f"macs:{10 * selection.total_macs}")  # above the dense cost: no cut
    assert above.ranks == {"conv2": (12, 12), "conv3": (12, 12)} and above.reduction == 1.0
