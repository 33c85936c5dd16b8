"""BATUDE (Yin et al. 2022): the budget step, the M- and dual steps, full budgets, resumption, reports, inputs, CLI."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_lc import same_state, without_times
from tiny import Interrupt, tiny_data
from torch import nn

from tuckerlab.formats import get_format
from tuckerlab.formats._spectra import unfold
from tuckerlab.layer_selection import select_layers
from tuckerlab.methods import BATUDECallback, batude_compress
from tuckerlab.methods.batude import threshold
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.rank.network_budget import budget_ranks, parse_budget
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


# --------------------------------------------------------- M- and dual steps
class Spy(Callback):
    """Calls ``fn(trainer, epoch)`` at every epoch end (placed around the BATUDE callback)."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, trainer, epoch, logs):
        self.fn(trainer, epoch)


def specs(model=None):
    return {"conv2": ("tucker2", (12, 12)), "conv3": ("tucker2", (12, 12))}


def weights(model, names=("conv2", "conv3")):
    return {n: model.get_submodule(n).weight.detach().clone() for n in names}


def fold(m, mode, shape):
    moved = (shape[mode], *(n for i, n in enumerate(shape) if i != mode))
    return m.reshape(moved).movedim(0, mode)


def test_m_step_dual_update_and_penalty_algebra():
    data, model = tiny_data(), net()
    cb = BATUDECallback(specs(), "macs:0.5", rho=0.5, rho_growth=2.0)
    seen, checked = {}, []

    def before(trainer, epoch):
        seen.update(w=weights(trainer.model), y={n: [t.clone() for t in v] for n, v in cb.Y.items()}, rho=cb.rho)

    def after(trainer, epoch):
        ranks = cb.projector.ranks
        x = {n: [unfold(w + seen["y"][n][k] / seen["rho"], k) for k in (0, 1)] for n, w in seen["w"].items()}
        spectra = {n: tuple(torch.linalg.svdvals(m.double()).numpy() for m in v) for n, v in x.items()}
        assert ranks == budget_ranks(spectra, cb.selection, "macs:0.5").ranks  # the budget step on W + Y/rho
        for n, w in seen["w"].items():
            for k in (0, 1):
                # M: X thresholded at the chosen rank; Y <- Y + rho (W - M)
                m = fold(threshold(x[n][k], ranks[n][k]), k, w.shape)
                torch.testing.assert_close(cb.M[n][k], m, rtol=0, atol=0)
                assert torch.equal(cb.Y[n][k], seen["y"][n][k] + seen["rho"] * (w - cb.M[n][k])), (n, k)
        assert cb.rho == 2 * seen["rho"]
        checked.append(epoch)

    fit(model, data, epochs=3, lr=0.02, callbacks=[Spy(before), cb, Spy(after)], **FIT)
    assert checked == [0, 1, 2] and cb.updates == 3 and len(cb.log) == 4
    assert any(float(y.abs().max()) > 0 for v in cb.Y.values() for y in v)  # Y is not trivially zero
    assert any(r < 12 for v in cb.projector.ranks.values() for r in v)  # ranks were cut
    w = dict(conv2=model.conv2.weight.detach(), conv3=model.conv3.weight.detach())
    expected = 0.5 * cb.rho * sum((w[n] - cb.M[n][k] + cb.Y[n][k] / cb.rho).square().sum() for n in w for k in (0, 1))
    torch.testing.assert_close(cb.penalty(model).detach(), expected)
    # the log: the rank trajectory, costs and residuals of every M-step
    assert [r["update"] for r in cb.log] == [0, 1, 2, 3] and [r["rho"] for r in cb.log] == [0.0, 0.5, 1.0, 2.0]
    assert cb.log[-1]["ranks"] == {n: list(r) for n, r in cb.projector.ranks.items()}
    assert all(r["budget_met"] and r["ratio"] <= 0.5 for r in cb.log)
    primal = math.sqrt(sum(float((w[n] - cb.M[n][k]).double().norm()) ** 2 for n in w for k in (0, 1)))
    assert cb.log[-1]["primal"] == pytest.approx(primal)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_m_has_exactly_the_chosen_rank(kind):
    data, model = tiny_data(), net()
    cb = BATUDECallback(specs(), "params:0.75", rho=0.5, threshold=kind)
    fit(model, data, epochs=2, lr=0.02, callbacks=[cb], **FIT)
    ranks = cb.projector.ranks
    assert any(r < 12 for v in ranks.values() for r in v)
    for n, (r_out, r_in) in ranks.items():
        for k, r in enumerate((r_out, r_in)):
            s = torch.linalg.svdvals(unfold(cb.M[n][k], k).double())  # M is float32: its rounding is ~1e-7
            assert int((s > 1e-5 * s[0]).sum()) == r and s[r - 1] > 1e-3 * s[0], (n, k, s)
    # soft: the kept singular values lowered by the first one removed
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(x)
    hard, soft = threshold(x, 3), threshold(x, 3, "soft")
    torch.testing.assert_close(torch.linalg.svdvals(hard)[:3], s[:3])
    torch.testing.assert_close(torch.linalg.svdvals(soft)[:3], s[:3] - s[3])
    assert int(torch.linalg.matrix_rank(hard)) == int(torch.linalg.matrix_rank(soft)) == 3
    assert threshold(x, 6) is x and threshold(x, 6, "soft") is x  # at full rank: X itself


@pytest.mark.parametrize("budget", ["macs:1", "params:1", "macs:1e12"])
def test_a_budget_at_or_above_the_dense_cost_is_training_plus_the_penalty(budget):
    data, m0 = tiny_data(), net()
    snapshots = []
    cb = BATUDECallback(specs(), budget, rho=0.5, rho_growth=2.0)

    def check(trainer, epoch):  # after each M-step: full ranks, M = W exactly, Y = 0 exactly
        w = weights(trainer.model)
        snapshots.append(w)
        for n in w:
            assert cb.projector[n].rank == (12, 12)
            for k in (0, 1):
                assert torch.equal(cb.M[n][k], w[n]) and not cb.Y[n][k].any(), (n, k)

    model = copy.deepcopy(m0)
    fit(model, data, epochs=2, lr=0.05, callbacks=[cb, Spy(check)], **FIT)
    assert len(snapshots) == 2 and all(r["ratio"] == 1.0 and r["budget_met"] for r in cb.log)
    # the penalty is rho/2 * 2 ||W - W at the last M-step||^2: a pull towards where W was
    w = dict(conv2=model.conv2.weight.detach(), conv3=model.conv3.weight.detach())
    torch.testing.assert_close(cb.penalty(model).detach(), 0.5 * cb.rho * 2 * sum(
        (w[n] - snapshots[-1][n]).square().sum() for n in w))
    # with a negligible rho the run is plain training; with rho = 0.5 it is not (the comparison can fail)
    plain = copy.deepcopy(m0)
    fit(plain, data, epochs=2, lr=0.05, **FIT)
    free = copy.deepcopy(m0)
    fit(free, data, epochs=2, lr=0.05, callbacks=[BATUDECallback(specs(), budget, rho=1e-9)], **FIT)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(free.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not same_state(plain, model)


# ------------------------------------------------------- the compressed model
def test_compressed_model_meets_the_budget_and_the_report_matches_it():
    data = tiny_data()
    result = batude_compress(net(), data, "macs:0.5", epochs=2, rho=0.1, lr=0.02, finetune_epochs=1, **FIT)
    small, report = result.model, result.report
    assert report.params_after == count_params(small) and report.macs_after == count_macs(small, (3, 8, 8))
    assert report.macs_before == count_macs(net(), (3, 8, 8)) and report.macs_after <= 0.5 * report.macs_before
    last = result.log[-1]  # the budget step's costs are the compressed model's, exactly
    assert (last["params"], last["macs"]) == (report.params_after, report.macs_after) and last["budget_met"]
    for name, (r_out, r_in) in result.projector.ranks.items():
        assert small.get_submodule(name).rank == (r_out, r_in) and last["ranks"][name] == [r_out, r_in]
    assert [r.name for r in report.rows] == ["conv2", "conv3"]  # first conv and classifier stay dense
    flops = report.macs_before / report.macs_after
    assert f"FLOPs reduction {flops:.2f}x" in result.summary() and "BATUDE dense" in result.summary()
    assert result.rank_selection["flops_reduction"] == pytest.approx(flops)
    d = result.to_dict()
    assert [r["update"] for r in d["batude_log"]] == [0, 1, 2] and d["macs_after"] == report.macs_after
    assert result.history.batude_updates == [1, 2] and result.accuracy_finetuned is not None


# ---------------------------------------------------------------- resumption
def run(ckdir, interrupt_at=None, **kw):
    args = dict(epochs=4, rho=0.2, rho_growth=1.5, lr=0.02, finetune_epochs=1, threshold="soft")
    args.update(kw)
    return batude_compress(net(), tiny_data(), "macs:0.5", checkpoint_dir=ckdir,
                           callbacks=[Interrupt(interrupt_at)], **args, **FIT)


@pytest.mark.parametrize("at,every", [(2, "epoch"), (1, 3)])
def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, at, every):
    full = run(tmp_path / "full", update_every=every)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupt_at=at, update_every=every)
    assert (tmp_path / "cut" / "batude" / "last.pt").exists()
    resumed = run(tmp_path / "cut", update_every=every)
    assert same_state(full.dense_model, resumed.dense_model)
    assert same_state(full.model, resumed.model)
    assert without_times(full.log) == without_times(resumed.log)
    for k in ("rho", "batude_updates", "batude_primal", "train_loss", "lr"):
        assert full.history[k] == pytest.approx(resumed.history[k], nan_ok=True), k
    from tuckerlab.train import IncompatibleCheckpointError

    with pytest.raises(IncompatibleCheckpointError, match="BATUDE run with other settings.*threshold"):
        run(tmp_path / "cut", update_every=every, threshold="hard")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("budget,match", [
    ("macs:0", r"budget='macs:0': macs fraction must be in \(0, 1\], got 0.0"),
    ("macs:-0.4", r"budget='macs:-0.4': macs fraction must be in \(0, 1\], got -0.4"),
    ("params:1.5", r"budget='params:1.5': params fraction must be in \(0, 1\], got 1.5"),
    ("macs:0.5x", r"budget='macs:0.5x': a reduction factor must be >= 1"),
    ("flops:0.4", r"budget='flops:0.4': unknown unit 'flops' \(.*write 'macs:'\)"),
    ("latency:0.4", r"budget='latency:0.4': unknown unit 'latency'"),
    ("0.4", r"budget='0.4': unknown unit '0.4'"),
    ("macs:half", r"budget='macs:half': 'half' is not a number"),
    (0.4, r"budget=0.4: not a budget string"),
    ("macs:0.01", r"budget='macs:0.01' is unreachable: rank \(1, 1\) .* gives macs \d+ \(0\.\d+ of the dense"),
    ("params:2", r"budget='params:2' is unreachable"),
])
def test_bad_budgets_fail_before_training_with_a_clear_error(tmp_path, budget, match):
    with pytest.raises(ValueError, match=match) as err:
        batude_compress(net(), tiny_data(), budget, epochs=1, checkpoint_dir=tmp_path / "ck", **FIT)
    assert "accepted: 'macs:F' or 'params:F' with F in (0, 1]" in str(err.value)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("kw,match", [
    (dict(rho=0.0), r"rho must be a finite number > 0.*got 0.0"),
    (dict(rho_growth=0.5), r"rho_growth must be a finite number >= 1.*got 0.5"),
    (dict(update_every=0), r"update_every must be 'epoch' or an integer >= 1.*got 0"),
    (dict(threshold="medium"), r"threshold must be one of \('hard', 'soft'\), got 'medium'"),
    (dict(energy="loud"), r"energy must be one of \('absolute', 'relative'\), got 'loud'"),
    (dict(epochs=0), r"epochs must be an integer >= 1, got 0"),
    (dict(skip="conv*"), r"no convolution of Net to compress"),
])
def test_bad_settings_fail_before_training(tmp_path, kw, match):
    args = dict(epochs=1)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        batude_compress(net(), tiny_data(), "macs:0.5", checkpoint_dir=tmp_path / "ck", **args, **FIT)
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------- the command
def test_cli_runs_end_to_end_and_writes_results(tmp_path, capsys):
    from tuckerlab.cli import main
    from tuckerlab.results import read_results
    from tuckerlab.serialization import load_model

    out = tmp_path / "batude"
    fast = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
    assert main(["batude", "--model", "resnet20", "--data", "synthetic", "--budget", "macs:0.5", "--epochs", "2",
                 "--finetune-epochs", "1", "--rho", "0.01", "--threshold", "soft", "--update-every", "3",
                 "--out", str(out), *fast]) == 0
    payload = read_results(out)
    results, prov = payload["results"], payload["provenance"]
    assert (prov["command"], prov["budget"], prov["threshold"], prov["rho"]) == ("batude", "macs:0.5", "soft", 0.01)
    assert prov["from_scratch"] is True and prov["dataset"] == "synthetic" and "git_commit" in prov
    assert results["macs_after"] <= 0.5 * results["macs_before"]
    assert [(r["update"], r["step"]) for r in results["batude_log"]] == [(0, 0), (1, 3)]  # 2 steps per epoch
    assert results["batude_log"][-1]["budget_met"] and results["accuracy_finetuned"] is not None
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tucker2" and count_macs(model) == results["macs_after"]
    assert "FLOPs reduction" in capsys.readouterr().out
    assert main(["batude", "--model", "resnet20", "--data", "synthetic", "--budget", "flops:0.4", *fast]) == 2
    assert "--budget: budget='flops:0.4': unknown unit 'flops'" in capsys.readouterr().err


def test_comparison_grid_runs_batude_at_the_grids_budget(tmp_path):
    from tuckerlab.cli import build_parser
    from tuckerlab.compare import METHODS, Grid, cells

    grid = Grid(model="resnet20", data="synthetic", methods=("batude",), budgets=("macs:0.5",), seeds=(0,),
                epochs=6, pretrain_epochs=2)
    cell = next(c for c in cells(grid, tmp_path) if c.method == "batude")
    args = build_parser().parse_args([str(a) for a in cell.argv])  # a command the CLI accepts
    assert (args.command, args.budget, args.epochs, args.finetune_epochs) == ("batude", "macs:0.5", 2, 2)
    assert "BATUDE" in METHODS["batude"].label and cell.epochs == "2 dense + 2 BATUDE + 2 fine-tune"
