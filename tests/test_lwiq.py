"""LWIQ rank selection (imprinted proxy classifiers, one budget factor) and the proxy search it is compared with."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import single_thread, tiny_data
from torch import nn

from tuckerlab import compress_model
from tuckerlab.formats import get_format
from tuckerlab.layer_selection import select_layers
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.rank import (
    LWIQRanks,
    ProxySearchRanks,
    SelectionContext,
    allocate_ranks,
    as_selector,
    imprint_accuracy,
    imprint_weights,
    layer_significance,
    pool_features,
    training_splits,
)

SIZE = (3, 8, 8)
SMALL = dict(calibration=32, held_out=32, pool_size=64)


class Net(nn.Module):
    """Stem, three 3x3 convs, a classifier: fine enough rank steps for a 1 % budget."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        for conv in (self.stem, self.conv1, self.conv2, self.conv3):
            x = F.relu(conv(x))
        return self.fc(x.mean(dim=(2, 3)))


def net():
    torch.manual_seed(0)
    return Net()


class NoiseThenColour(nn.Module):
    """``noisy`` sees only random noise (runs first); ``colour`` passes the image's colour (its class) on."""

    def __init__(self):
        super().__init__()
        self.noisy = nn.Conv2d(3, 8, 3, padding=1)
        self.colour = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.colour.weight.zero_()
            self.colour.bias.zero_()
            for c in range(3):
                self.colour.weight[c, c, 1, 1] = 1.0
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        b = self.noisy(torch.randn_like(x))
        a = self.colour(x)
        return self.fc(a.mean(dim=(2, 3))) + 0 * b.mean()


def _ratio(model, small, metric):
    if metric == "params":
        return count_params(small) / count_params(model)
    return count_macs(small, SIZE) / count_macs(model, SIZE)


# --------------------------------------------------------- imprinting
def test_imprinted_weights_are_normalised_class_means():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g) * 3, torch.arange(40) % 4
    w = imprint_weights(x, y, 5)  # class 4 has no image
    for c in range(4):
        f = x[y == c] / x[y == c].norm(dim=1, keepdim=True)
        mean = f.mean(dim=0)
        torch.testing.assert_close(w[c], mean / mean.norm())
    assert torch.count_nonzero(w[4]) == 0
    # nearest imprint by cosine: the imprints themselves are classified as their class
    assert imprint_accuracy(x, y, w[:4] * 7.0, torch.arange(4), 5) == 1.0


def test_a_separable_layer_scores_higher_than_a_random_one():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    separable = F.one_hot(y, 8).float() * 5 + 0.3 * torch.randn(200, 8, generator=g)
    random = torch.randn(200, 8, generator=g)
    acc_sep = imprint_accuracy(separable[:100], y[:100], separable[100:], y[100:], 4)
    acc_rand = imprint_accuracy(random[:100], y[:100], random[100:], y[100:], 4)
    assert acc_sep == 1.0 and acc_rand < 0.5
    sig = layer_significance({"random": acc_rand, "separable": acc_sep}, input_accuracy=0.25)
    assert sig["separable"] == 1.0 and sig["random"] < sig["separable"]

    # the same through a network: the layer fed noise runs first, the layer passing the class second
    data = tiny_data()
    model = NoiseThenColour()
    layers = select_layers(model, skip_first=False, input_size=SIZE)
    assert layers.names == ["noisy", "colour"]
    with single_thread():
        sel = LWIQRanks("params:0.8", **SMALL)
        ranks = sel.select(model, get_format("tt"), layers, SelectionContext(data=data))
    acc = sel.scores.accuracy
    assert acc["colour"] == 1.0 and acc["noisy"] < 0.6
    sig = layer_significance(acc, sel.scores.input_accuracy)
    assert sig["colour"] == 1.0 and sig["noisy"] == pytest.approx(0.1)  # no gain: the floor
    assert all(a >= b for a, b in zip(ranks["colour"], ranks["noisy"])) and ranks["colour"] != ranks["noisy"]


# ------------------------------------------------------------- budgets
@pytest.mark.parametrize("budget", ["params:0.5", "macs:0.4", "params:0.25"])
def test_ranks_are_valid_and_meet_the_budget_within_one_percent(budget):
    metric, target = budget.split(":")[0], float(budget.split(":")[1])
    model, data = net(), tiny_data()
    fmt = get_format("tt")
    layers = select_layers(model, input_size=SIZE)
    with single_thread():
        sel = LWIQRanks(budget, **SMALL)
        ranks = sel.select(model, fmt, layers, SelectionContext(data=data, input_size=SIZE))
    assert set(ranks) == {"conv1", "conv2", "conv3"}
    for name, rank in ranks.items():
        shape = layers[name].weight_shape
        assert fmt.validate_rank(shape, rank) == rank
        assert all(1 <= r <= m for r, m in zip(rank, fmt.full_rank(shape)))
    small, _ = compress_model(model, "tt", ranks, input_size=SIZE)
    achieved = _ratio(model, small, metric)  # measured on the built model, not the selector's own arithmetic
    assert 0.99 * target <= achieved <= target
    assert sel.allocation.achieved == pytest.approx(achieved)


def test_allocation_follows_significance_and_refuses_unreachable_targets():
    model = net()
    layers = select_layers(model, input_size=SIZE)
    even = allocate_ranks(layers, "tt", {"conv1": 1.0, "conv2": 1.0, "conv3": 1.0}, "params", 0.5)
    skewed = allocate_ranks(layers, "tt", {"conv1": 0.1, "conv2": 0.1, "conv3": 1.0}, "params", 0.5)
    assert skewed.ranks["conv3"] > even.ranks["conv3"] and skewed.ranks["conv2"] < even.ranks["conv2"]
    with pytest.raises(ValueError, match="params target 0.01 is unreachable: the smallest ranks give"):
        allocate_ranks(layers, "tt", {"conv1": 1.0}, "params", 0.01)
    full = allocate_ranks(layers, "tt", {"conv1": 1.0}, "params", 1.0)  # TT at full rank is larger than dense
    assert full.achieved <= 1.0


# ---------------------------------------------------------------- cache
def test_a_second_budget_reuses_the_cached_scores():
    model, data = net(), tiny_data()
    fmt, layers = get_format("tt"), select_layers(model, input_size=SIZE)
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    ctx = SelectionContext(data=data, input_size=SIZE)
    with single_thread():
        sel = LWIQRanks("params:0.5", **SMALL)
        first = sel.select(model, fmt, layers, ctx)
        n = len(calls)
        assert n > 0 and sum(calls) == 64 and sel.forward_passes == 1
        other = sel.with_budget("params:0.3")
        second = other.select(model, fmt, layers, ctx)
        assert len(calls) == n and other.forward_passes == 1  # no new forward pass
        assert other.scores is sel.scores and second != first
        assert sum(map(sum, second.values())) < sum(map(sum, first.values()))
        sel.select(model, fmt, layers, ctx)  # the first budget again: cached too
        assert len(calls) == n
        with torch.no_grad():
            model.conv2.weight.mul_(0.5)  # new weights: new scores
        sel.select(model, fmt, layers, ctx)
        assert len(calls) > n and sel.forward_passes == 2
        # a copy made before any scores exist shares them once they do
        fresh = LWIQRanks("params:0.5", **SMALL)
        twin = fresh.with_budget("macs:0.5")
        fresh.select(model, fmt, layers, ctx)
        n = len(calls)
        twin.select(model, fmt, layers, ctx)
        assert len(calls) == n


# --------------------------------------------------------------- splits
class SpyData:
    """A data set that records which training images are taken and fails on any use of the test split."""

    def __init__(self, data):
        self._data, self.taken = data, []

    def __getattr__(self, name):
        if "test" in name:
            raise AssertionError(f"the test split was read ({name})")
        return getattr(self._data, name)

    def num_images(self, split):
        assert split == "train", "the test split was read (num_images)"
        return self._data.num_images(split)

    def take(self, split, indices):
        assert split == "train", "the test split was read (take)"
        self.taken.extend(int(i) for i in indices)
        return self._data.take(split, indices)


def test_calibration_and_held_out_splits_are_disjoint_training_images():
    calib, held = training_splits(100, 30, 20, seed=1)
    assert len(calib) == 30 and len(held) == 20 and not set(calib.tolist()) & set(held.tolist())
    assert max(calib.max(), held.max()) < 100
    calib_small, held_small = training_splits(10, 30, 20)  # fewer images than asked: both shrink
    assert len(calib_small) + len(held_small) == 10 and not set(calib_small.tolist()) & set(held_small.tolist())
    # the held-out split does not depend on the calibration size: both selectors score on the same images
    assert torch.equal(training_splits(100, 5, 20, seed=1)[1], held)

    model, data = net(), SpyData(tiny_data())
    fmt, layers = get_format("tt"), select_layers(model, input_size=SIZE)
    ctx = SelectionContext(data=data, input_size=SIZE)
    with single_thread():
        LWIQRanks("params:0.5", calibration=24, held_out=16, pool_size=32, seed=2).select(model, fmt, layers, ctx)
    calib, held = training_splits(64, 24, 16, seed=2)
    assert data.taken == calib.tolist() + held.tolist()
    data.taken = []
    with single_thread():
        ProxySearchRanks("params:0.5", n_trials=2, held_out=16, seed=2).select(model, fmt, layers, ctx)
    assert data.taken == held.tolist()


# -------------------------------------------------------- proxy search
def test_the_proxy_search_meets_the_budget_and_keeps_its_best_candidate():
    model, data = net(), tiny_data()
    fmt, layers = get_format("tt"), select_layers(model, input_size=SIZE)
    with single_thread():
        search = as_selector("proxy_search:params:0.4:3")
        ranks = search.select(model, fmt, layers, SelectionContext(data=data, input_size=SIZE))
    assert isinstance(search, ProxySearchRanks) and len(search.history) == 3
    assert search.best_score == max(search.history)
    small, _ = compress_model(model, "tt", ranks, input_size=SIZE)
    assert 0.99 * 0.4 <= _ratio(model, small, "params") <= 0.4
    assert search.info()["rule"] == "proxy_search:params:0.4:3"


# ------------------------------------------------------------ bad input
def test_bad_budgets_and_pool_sizes_are_refused_by_name():
    with pytest.raises(ValueError, match=r"budget='params:1.5'"):
        LWIQRanks("params:1.5")
    with pytest.raises(ValueError, match=r"budget='flops:0.3': unknown unit 'flops'"):
        LWIQRanks("flops:0.3")
    with pytest.raises(ValueError, match=r"budget='params:-1'"):
        ProxySearchRanks("params:-1")
    with pytest.raises(ValueError, match=r"pool_size must be an integer >= 1, got 0"):
        LWIQRanks("params:0.3", pool_size=0)
    with pytest.raises(ValueError, match=r"pool_size must be an integer >= 1, got 2.5"):
        pool_features(torch.zeros(2, 4, 3, 3), 2.5)
    with pytest.raises(ValueError, match=r"pooling='max' is not accepted; accepted: avg, channel"):
        LWIQRanks("params:0.3", pooling="max")
    with pytest.raises(ValueError, match=r"significance='loss' is not accepted"):
        LWIQRanks("params:0.3", significance="loss")
    with pytest.raises(ValueError, match=r"floor must be a number in \(0, 1\], got 0"):
        LWIQRanks("params:0.3", floor=0)
    with pytest.raises(ValueError, match=r"rank specification 'lwiq': lwiq needs a budget"):
        as_selector("lwiq")
    with pytest.raises(ValueError, match=r"'lwiq:params:0.3:0': pool_size must be an integer >= 1, got 0"):
        as_selector("lwiq:params:0.3:0")
    with pytest.raises(ValueError, match=r"'lwiq' looks at the data"):
        compress_model(net(), "tt", "lwiq:params:0.5", input_size=SIZE)
    with single_thread(), pytest.raises(ValueError, match=r"params target 0.001 is unreachable"):
        compress_model(net(), "tt", "lwiq:params:0.001", data=tiny_data(), input_size=SIZE)


def test_pooled_features_have_at_most_the_pool_size():
    x = torch.randn(5, 8, 6, 6)
    assert pool_features(x, 100).shape == (5, 72)  # 8 channels x a 3 x 3 grid
    assert pool_features(x, 100, "channel").shape == (5, 8)
    assert pool_features(x, 4).shape == (5, 4)  # more channels than values: channels averaged in pairs
    torch.testing.assert_close(pool_features(x, 4, "channel")[:, 0], x[:, :2].mean(dim=(1, 2, 3)))
    assert pool_features(torch.randn(5, 300), 100).shape == (5, 100)


# ------------------------------------------------- pipeline and command
def test_lwiq_is_a_rank_wherever_ranks_are_given():
    from tuckerlab.pipeline import compress_and_finetune

    with single_thread():
        result = compress_and_finetune(net(), tiny_data(), "tt", "lwiq:params:0.5:32", finetune_epochs=0,
                                       device="cpu", progress=False, batch_size=16)
    sel = result.rank_selection
    assert sel["selector"] == "lwiq" and sel["pool_size"] == 32 and sel["search_seconds"] > 0
    assert 0.99 * 0.5 <= sel["achieved"] <= 0.5 and set(sel["proxy_accuracy"]) == {"conv1", "conv2", "conv3"}


def test_the_command_decomposes_fine_tunes_and_writes_results(tmp_path, capsys):
    from tuckerlab.cli import main
    from tuckerlab.compare import METHODS, Grid
    from tuckerlab.models import get_model
    from tuckerlab.results import read_results
    from tuckerlab.serialization import load_model, save_model

    torch.manual_seed(0)
    dense = get_model("resnet20", num_classes=10)
    save_model(tmp_path / "dense" / "model.pt", dense, arch="resnet20", num_classes=10, in_channels=3,
               extra={"dataset": "synthetic"})
    out = tmp_path / "lwiq"
    fast = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "1", "--batch-size", "16"]
    # a bad setting is refused, naming its flag, before anything is loaded
    assert main(["lwiq", str(tmp_path / "missing.pt"), "--budget", "params:2.5"]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main(["lwiq", str(tmp_path / "missing.pt"), "--pool-size", "0"]) == 2
    assert "--pool-size: pool_size must be an integer >= 1, got 0" in capsys.readouterr().err
    with single_thread():
        assert main(["lwiq", str(tmp_path / "dense" / "model.pt"), "--data", "synthetic", "--budget", "params:0.3",
                     "--calibration", "48", "--held-out", "32", "--pool-size", "32", "--finetune-epochs", "1",
                     "--out", str(out), *fast]) == 0
    res = read_results(out)
    numbers, prov = res["results"], res["provenance"]
    assert numbers["rank_selection"]["selector"] == "lwiq" and numbers["rank_selection"]["search_seconds"] > 0
    assert prov["command"] == "lwiq" and prov["budget"] == "params:0.3" and prov["format"] == "tt"
    assert prov["rank_search_seconds"] == numbers["rank_selection"]["search_seconds"]
    assert prov["selector"]["calibration"] == 48 and prov["selector"]["pool_size"] == 32
    small, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tt"
    assert 0.99 * 0.3 <= count_params(small) / count_params(dense) <= 0.3

    # both rows of the comparison grid name runnable commands at the grid's budget
    grid = Grid(methods=("lwiq", "proxy-search"), budgets=("params:0.3",), seeds=(0,))
    lw = METHODS["lwiq"].argv(grid, "params:0.3", 0, tmp_path / "d.pt", tmp_path / "o")
    ps = METHODS["proxy-search"].argv(grid, "params:0.3", 0, tmp_path / "d.pt", tmp_path / "o")
    assert lw[:4] == ["lwiq", str(tmp_path / "d.pt"), "--budget", "params:0.3"]
    assert "proxy_search:params:0.3" in ps and ps[ps.index("--format") + 1] == "tt"
