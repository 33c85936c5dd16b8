"""Accuracy-aware alternating Tucker (Liu et al. 2025): the rank rule, the tolerance control, the held-out split,
budgets, reports, resumption, bad input and the command."""
from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from test_batude import net
from test_lc import same_state, without_times
from tiny import Interrupt, tiny_data

from tuckerlab.formats import get_format
from tuckerlab.formats._spectra import tucker2_tails
from tuckerlab.methods import AlternatingCallback, alternating_compress
from tuckerlab.methods.alternating import holdout_split, tolerance_ranks
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.projection import project
from tuckerlab.train import Callback

FIT = dict(batch_size=16, device="cpu", progress=False)
TK2 = get_format("tucker2")
FULL = {"conv2": [12, 12], "conv3": [12, 12]}

# tiny models: one thread is faster, and runs compared bit for bit need the same thread count
pytestmark = pytest.mark.usefixtures("one_thread_module")


def run(**kw):
    args = dict(rounds=8, epochs_per_round=1, lr=0.02, finetune_epochs=0, validation=16)
    args.update(kw)
    data = args.pop("data", None) or tiny_data()
    return alternating_compress(net(), data, **args, **FIT)


def rank_path(result):
    return [rec["ranks"] for rec in result.log]


# ------------------------------------------------------------------ the rule
def weight_with_decay(t=10, s=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(t, s, 3, 3, generator=g, dtype=torch.float64)
    return w * torch.logspace(0, -2, t, dtype=torch.float64)[:, None, None, None]  # a decaying output spectrum


@pytest.mark.parametrize("tol", [0.0, 0.05, 0.2, 0.5, 0.9, math.sqrt(2)])
def test_tolerance_ranks_are_the_least_cost_pair_within_the_hosvd_bound(tol):
    w = weight_with_decay()
    t0, t1 = tucker2_tails(w)
    norm2 = float(w.square().sum())
    r_out, r_in = tolerance_ranks(w, tol)

    def bound(a, b):
        return t0[min(a, t0.size - 1)] + t1[min(b, t1.size - 1)]

    def params(a, b):
        return TK2.cost(tuple(w.shape), (a, b))[0]

    assert bound(r_out, r_in) <= tol**2 * norm2 * (1 + 1e-9) + 1e-12
    # HOOI at these ranks keeps the tolerance (it only improves on the HOSVD the bound is about)
    err = float(torch.linalg.vector_norm(w - project(w, "tucker2", (r_out, r_in))))
    assert err <= tol * math.sqrt(norm2) * (1 + 1e-6) + 1e-9
    # and no cheaper pair does (brute force over every pair)
    feasible = [(params(a, b), a, b) for a, b in itertools.product(range(1, 11), range(1, 8))
                if bound(a, b) <= tol**2 * norm2 * (1 + 1e-9) + 1e-12]
    assert params(r_out, r_in) == min(feasible)[0]
    if tol == 0:
        assert (r_out, r_in) == (10, 7)
    if tol == math.sqrt(2):
        assert (r_out, r_in) == (1, 1)


def test_tolerance_ranks_stay_under_a_cap_and_keep_it_when_nothing_under_it_holds():
    w = weight_with_decay()
    assert tolerance_ranks(w, 0.0, cap=(6, 5)) == (6, 5)  # nothing under the cap is exact: the cap itself
    free = tolerance_ranks(w, 0.3)
    capped = tolerance_ranks(w, 0.3, cap=(free[0], free[1] - 1))
    assert capped[0] <= free[0] and capped[1] <= free[1] - 1
    assert tolerance_ranks(w, 0.3) != tolerance_ranks(w, 0.6)  # a looser tolerance gives smaller ranks here


# ----------------------------------------------------------- the controller
@pytest.mark.parametrize("budget", ["params:0.5", "macs:0.6"])
def test_large_epsilon_shrinks_ranks_monotonically_and_stops_at_the_budget(budget):
    result = run(epsilon=math.inf, budget=budget)
    metric, frac = budget.split(":")
    log = result.log
    for before, after in zip(rank_path(result), rank_path(result)[1:]):
        for name in before:
            assert after[name][0] <= before[name][0] and after[name][1] <= before[name][1], (before, after)
    tol = [rec["tolerance"] for rec in log]
    assert tol == sorted(tol) and tol[-1] > 0
    met = [rec["budget_met"] for rec in log]
    first = met.index(True)
    assert not any(met[:first]) and all(met[first:])  # once met, the shrinking stops there
    assert log[first - 1]["ratio"] > float(frac) >= log[first]["ratio"]
    assert rank_path(result)[first:] == [log[first]["ranks"]] * (len(log) - first)
    stop = result.rank_selection
    assert stop["stop"] == "stable" and stop["rounds"] == len(log) - 1 < 8  # stopped before the round limit
    assert len(result.history) == stop["rounds"] and log[-1]["action"] == "hold"
    report = result.report
    dense = report.params_before if metric == "params" else report.macs_before
    after = report.params_after if metric == "params" else report.macs_after
    assert after <= float(frac) * dense


def test_epsilon_zero_from_a_full_rank_start_compresses_nothing():
    result = run(epsilon=0.0, tolerance=0.0)
    assert rank_path(result) == [FULL] * len(result.log)
    assert all(rec["drop"] == 0 for rec in result.log) and result.log[-1]["tolerance"] == 0
    assert [rec["action"] for rec in result.log[1:]] == ["tighten"] * (len(result.log) - 1)  # every try dropped
    assert result.rank_selection["stop"] == "stable"
    assert result.report.params_after == result.report.params_before
    assert {n: list(r) for n, r in result.projector.ranks.items()} == FULL


def test_a_failed_check_drops_the_try_and_tightens():
    # an accuracy check that fails whenever ranks are below full: the tries are all dropped
    class Strict(AlternatingCallback):
        def _val_accuracy(self, trainer, targets=None):
            full = all(tuple(r) == (12, 12) for r in self.projector.ranks.values())
            return 1.0 if targets is None or full else 0.0

    data = tiny_data()
    split = holdout_split(data, 16, 0)
    from tuckerlab.layer_selection import select_layers
    from tuckerlab.projection import Projector

    model = net()
    sel = select_layers(model, input_size=(3, 8, 8))
    specs = Projector.from_ranks(model, TK2, {n: (12, 12) for n in sel.names}, sel)
    cb = Strict(specs, split.validation, epsilon=5.0, tolerance=0.5, rounds=3, epochs_per_round=1, selection=sel)
    from tuckerlab.train import fit

    fit(model, split.train, epochs=3, lr=0.01, callbacks=[cb], **FIT)
    assert cb.log[0]["action"] == "start" and cb.log[0]["ranks"] != FULL  # tolerance 0.5 compresses
    assert cb.log[1]["action"] == "tighten" and cb.log[1]["drop_tried"] == 100.0
    assert cb.log[1]["tolerance"] == pytest.approx(0.5 - 0.025)
    assert [rec["step"] for rec in cb.log] == [0.05, 0.025, 0.0125, 0.00625]


# ---------------------------------------------------------- the held-out split
def test_held_out_split_is_seeded_disjoint_from_training_and_never_the_test_set():
    data = tiny_data()
    split = holdout_split(data, 0.25, seed=3)
    n = data.num_images("train")
    assert split.val_indices.numel() == 16 and split.train_indices.numel() == n - 16
    assert sorted(torch.cat([split.val_indices, split.train_indices]).tolist()) == list(range(n))
    assert torch.equal(split.validation.x_test, data.x_train[split.val_indices])
    assert torch.equal(split.train.x_train, data.x_train[split.train_indices])
    assert torch.equal(split.train.x_test, data.x_test) and split.validation.num_images("train") == 0
    flat = lambda x: {bytes(row.numpy()) for row in x.reshape(len(x), -1)}
    assert not flat(split.validation.x_test) & flat(data.x_test)
    assert not flat(split.validation.x_test) & flat(split.train.x_train)
    same = holdout_split(data, 0.25, seed=3)
    assert torch.equal(same.val_indices, split.val_indices)
    assert not torch.equal(holdout_split(data, 0.25, seed=4).val_indices, split.val_indices)


def test_training_never_sees_the_held_out_images_and_the_test_set_does_not_steer_the_ranks():
    seen = {}

    class Spy(Callback):
        def on_fit_begin(self, trainer):
            seen["x"] = trainer.data.x_train.clone()

    data = tiny_data()
    a = run(data=data, epsilon=2.0, callbacks=[Spy()])
    split = holdout_split(data, 16, 0)
    assert torch.equal(seen["x"], split.train.x_train)
    assert a.rank_selection["validation"]["images"] == 16
    # another test set (other images, shuffled labels): the same ranks, tolerances and validation accuracies
    other = dataclasses.replace(data, x_test=tiny_data(seed=9).x_test, y_test=data.y_test.flip(0))
    b = run(data=other, epsilon=2.0)
    keys = ("ranks", "tolerance", "val_decomposed", "val_dense", "drop", "action")
    assert [[r[k] for k in keys] for r in a.log] == [[r[k] for k in keys] for r in b.log]


# ------------------------------------------------------------------ reports
def test_reported_params_and_macs_are_the_compressed_models():
    result = run(epsilon=math.inf, budget="params:0.5", finetune_epochs=1)
    small, report = result.model, result.report
    assert report.params_after == count_params(small) and report.macs_after == count_macs(small, (3, 8, 8))
    assert report.params_before == count_params(net()) and report.macs_before == count_macs(net(), (3, 8, 8))
    last = result.log[-1]
    assert (last["params"], last["macs"]) == (report.params_after, report.macs_after)
    for name, rank in result.projector.ranks.items():
        assert list(small.get_submodule(name).rank) == last["ranks"][name] == list(rank)
    d = result.to_dict()
    assert d["method"] == "alternating" and [r["round"] for r in d["alternating_log"]] == list(range(len(result.log)))
    assert d["rank_selection"]["finetune_epochs"] == 1 and len(result.finetune_history) == 1
    assert "alternating dense" in result.summary() and "fine-tuned 1 epochs" in result.summary()
    for rec in result.log:  # the actual error never exceeds the bound (HOOI improves on the HOSVD)
        assert rec["relative"] <= rec["bound"] + 1e-6


# ---------------------------------------------------------------- resumption
@pytest.mark.parametrize("at", [1, 2])
def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, at):
    args = dict(epsilon=3.0, budget="params:0.5", epochs_per_round=2, rounds=4, finetune_epochs=1)
    full = run(checkpoint_dir=tmp_path / "full", callbacks=[Interrupt()], **args)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_dir=tmp_path / "cut", callbacks=[Interrupt(at)], **args)
    assert (tmp_path / "cut" / "alternating" / "last.pt").exists()
    resumed = run(checkpoint_dir=tmp_path / "cut", callbacks=[Interrupt()], **args)
    assert same_state(full.dense_model, resumed.dense_model)
    assert same_state(full.model, resumed.model)
    assert without_times(full.log) == without_times(resumed.log)
    for k in ("mu", "alt_round", "train_loss", "lr"):
        assert full.history[k] == pytest.approx(resumed.history[k], nan_ok=True), k
    from tuckerlab.train import IncompatibleCheckpointError

    with pytest.raises(IncompatibleCheckpointError, match="alternating run with other settings.*epsilon"):
        run(checkpoint_dir=tmp_path / "cut", callbacks=[Interrupt()], **{**args, "epsilon": 2.0})


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    (dict(epsilon=-1.0), r"epsilon=-1.0: must be a number >= 0 of percentage points"),
    (dict(epsilon=math.nan), r"epsilon=nan: must be a number >= 0"),
    (dict(epsilon="1"), r"epsilon='1': must be a number >= 0"),
    (dict(beta=-0.5), r"beta=-0.5: must be a finite number >= 0"),
    (dict(beta=math.inf), r"beta=inf: must be a finite number >= 0"),
    (dict(tolerance=2.0), r"tolerance=2.0: must be a relative error in \[0, 1.4142\]"),
    (dict(tolerance_step=0.0), r"tolerance_step=0.0: must be a number in \(0, 1.4142\]"),
    (dict(rounds=0), r"rounds=0: must be an integer >= 1"),
    (dict(rounds=2.5), r"rounds=2.5: must be an integer >= 1"),
    (dict(epochs_per_round=0), r"epochs_per_round=0: must be an integer >= 1"),
    (dict(validation=0.0), r"validation=0.0: must be a fraction in \(0, 1\) or a count in \[1, 63\]"),
    (dict(validation=64), r"validation=64: must be a fraction in \(0, 1\) or a count in \[1, 63\] of the 64"),
    (dict(validation=0.001), r"validation=0.001: .* \(gives 0 held-out images\)"),
    (dict(budget="params:0"), r"budget='params:0': params fraction must be in \(0, 1\], got 0.0"),
    (dict(budget="flops:0.3"), r"budget='flops:0.3': unknown unit 'flops'"),
    (dict(budget="params:0.01"), r"budget='params:0.01' is unreachable: rank \(1, 1\)"),
    (dict(mu0=0.0), r"mu0 must be a finite number > 0"),
    (dict(skip="conv*"), r"no convolution of Net to compress"),
])
def test_bad_settings_fail_before_training_naming_the_argument(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(checkpoint_dir=tmp_path / "ck", **kw)
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------- the command
def test_cli_runs_end_to_end_and_writes_results(tmp_path, capsys):
    from tuckerlab.cli import main
    from tuckerlab.results import read_results
    from tuckerlab.serialization import load_model

    out = tmp_path / "alt"
    fast = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
    assert main(["alternating", "--model", "resnet20", "--data", "synthetic", "--epsilon", "inf",
                 "--target-params", "0.7", "--tolerance", "0.5", "--rounds", "3", "--epochs-per-round", "1",
                 "--finetune-epochs", "1", "--validation", "0.05", "--out", str(out), *fast]) == 0
    payload = read_results(out)
    results, prov = payload["results"], payload["provenance"]
    assert (prov["command"], prov["budget"], prov["epsilon"], prov["rounds"]) == ("alternating", "params:0.7",
                                                                                 math.inf, 3)
    assert prov["dataset"] == "synthetic" and "git_commit" in prov and prov["finetune_epochs"] == 1
    assert results["params_after"] <= 0.7 * results["params_before"]
    log = results["alternating_log"]
    assert log[0]["round"] == 0 and log[-1]["budget_met"] and results["accuracy_finetuned"] is not None
    assert results["rank_selection"]["validation"]["images"] == round(0.05 * 2048)
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tucker2" and count_params(model) == results["params_after"]
    assert "validation drop" in capsys.readouterr().out
    assert main(["alternating", "--model", "resnet20", "--data", "synthetic", "--epsilon", "-1", *fast]) == 2
    assert "--epsilon: epsilon=-1.0: must be a number >= 0" in capsys.readouterr().err
    assert main(["alternating", "--model", "resnet20", "--data", "synthetic", "--target-params", "0.3",
                 "--target-macs", "0.3", *fast]) == 2


def test_comparison_grid_runs_the_alternating_method_at_the_grids_budget(tmp_path):
    from tuckerlab.cli import build_parser
    from tuckerlab.compare import METHODS, Grid, cells

    grid = Grid(model="resnet20", data="synthetic", methods=("alternating",), budgets=("params:0.5",), seeds=(0,),
                epochs=8, pretrain_epochs=2)
    cell = next(c for c in cells(grid, tmp_path) if c.method == "alternating")
    args = build_parser().parse_args([str(a) for a in cell.argv])  # a command the CLI accepts
    assert (args.command, args.target_params, args.finetune_epochs) == ("alternating", "0.5", 2)
    assert args.rounds * args.epochs_per_round == 4
    assert "alternating" in METHODS["alternating"].label and cell.epochs == "2 dense + up to 4 alternating + 2 fine-tune"
