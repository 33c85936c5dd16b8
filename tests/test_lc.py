"""LC and TT-LC: the algorithm on the engine, exact resumption, the compressed model, the command."""
from __future__ import annotations

import copy
import math

import pytest
from tiny import Interrupt, tiny_data
import torch
from torch import nn

from tuckerlab.layers import TTTuckerConv2d, TuckerConv2d
from tuckerlab.methods import DoubleBayesianRanks, LCCallback, LStepSchedule, lc_compress, tt_lc
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.projection import project
from tuckerlab.train import Callback, IncompatibleCheckpointError, fit, make_schedule

FIT = dict(batch_size=16, device="cpu", progress=False)


# tiny models: one thread is faster, and runs compared bit for bit need the same thread count
pytestmark = pytest.mark.usefixtures("one_thread_module")


class Tiny(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def tiny(seed=0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_times(log):
    """C-step records without their timings, NaN made comparable."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [plain({k: v for k, v in rec.items() if k != "seconds"}) for rec in log]


# ------------------------------------------------------------- the algorithm
def test_full_rank_lc_reproduces_plain_training():
    # A full-rank projection is the identity: every C-step puts Delta(Theta) on W
    # itself. The penalty then only pulls W towards where it was at the last
    # C-step (LC is a proximal method), with a force of order mu; for a
    # negligible mu the run is plain training.
    data, m0 = tiny_data(), tiny()
    plain = copy.deepcopy(m0)
    fit(plain, data, epochs=4, lr=0.05, schedule="constant", **FIT)
    lc = copy.deepcopy(m0)
    cb = LCCallback({"conv2": ("tucker2", (16, 8)), "fc": ("lowrank", 4)}, mu0=1e-9, epochs_per_step=1)
    fit(lc, data, epochs=4, lr=0.05, schedule="constant", callbacks=[cb], **FIT)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(lc.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert [r["step"] for r in cb.log] == [0, 1, 2, 3, 4]
    assert max(r["relative"] for r in cb.log) < 1e-5  # Delta(Theta) = W after every C-step


def test_distance_to_the_compressed_set_shrinks_as_mu_grows():
    data, model = tiny_data(), tiny()
    cb = LCCallback({"conv1": ("tt", (2, 2, 2)), "conv2": ("tucker2", (2, 2))}, mu0=0.1, mu_growth=2,
                    epochs_per_step=1)
    history = fit(model, data, epochs=6, lr=0.02, schedule="constant", callbacks=[cb], **FIT)
    d = [r["distance"] for r in cb.log]
    assert all(b < a for a, b in zip(d, d[1:])), d
    assert d[-1] < 0.2 * d[0]
    assert history.mu == pytest.approx([0.1 * 2**k for k in range(6)])
    assert history.lc_distance == pytest.approx(d[1:])
    assert [r["mu"] for r in cb.log] == pytest.approx([0.0] + history.mu)
    assert set(cb.log[-1]["layers"]) == {"conv1", "conv2"}
    assert cb.log[-1]["ranks"] == {"conv1": [2, 2, 2], "conv2": [2, 2]}
    # the penalty is what the callback says it is
    w = dict(conv1=model.conv1.weight, conv2=model.conv2.weight)
    expected = 0.5 * cb.mu * sum((w[n] - cb.targets[n]).square().sum() for n in w)
    torch.testing.assert_close(cb.penalty(model), expected)


def test_c_step_follows_each_l_step_and_warmup_has_no_penalty():
    data, model = tiny_data(), tiny()
    cb = LCCallback({"conv2": ("tucker2", (3, 3))}, mu0=1e-2, mu_growth=1.5, epochs_per_step=2, warmup_epochs=1)
    seen = []

    class Spy(Callback):
        def on_epoch_begin(self, trainer, epoch):
            seen.append(cb.penalty(trainer.model) is not None)

    history = fit(model, data, epochs=5, lr=0.02, callbacks=[cb, Spy()], **FIT)
    assert seen == [False, True, True, True, True]
    assert history.lc_step == [0, 1, 1, 2, 2]
    assert history.mu == pytest.approx([0.0, 1e-2, 1e-2, 1.5e-2, 1.5e-2])
    assert [(r["step"], r["epoch"]) for r in cb.log] == [(0, 1), (1, 3), (2, 5)]
    assert math.isnan(history.lc_distance[1]) and not math.isnan(history.lc_distance[2])


def test_l_step_schedule_restarts_every_l_step():
    inner = make_schedule("step", lr=1.0, epochs=2, steps_per_epoch=3, kwargs={"milestones": [1], "gamma": 0.5})
    sched = LStepSchedule(inner, period=6, offset=3)
    assert [sched(t) for t in range(12)] == [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 1, 1, 1]
    assert "period=6" in repr(sched) and "StepDecay" in repr(sched)
    assert all(isinstance(v, (int, str)) for v in vars(sched).values())  # checkpoints load weights_only
    # lc_compress's default: x0.99 per epoch, restarted at every L-step
    result = lc_compress(tiny(), tiny_data(), {"conv2": ("tucker2", (4, 4))}, n_steps=2, epochs_per_step=2,
                         lr=0.01, **FIT)
    assert result.history.lr == pytest.approx([0.01, 0.0099, 0.01, 0.0099])


# ------------------------------------------------------- the compressed model
def test_compressed_model_matches_its_report_and_the_projection():
    data = tiny_data()
    specs = {"conv2": ("tucker2", (5, 3)), "fc": ("lowrank", 2)}
    result = lc_compress(tiny(), data, specs, n_steps=2, epochs_per_step=1, mu0=0.05, lr=0.02,
                         finetune_epochs=1, finetune_lr=0.01, **FIT)
    small, report = result.model, result.report
    assert isinstance(small.conv2, TuckerConv2d) and small.conv2.rank == (5, 3) and small.fc.rank == 2
    assert report.params_after == count_params(small)
    assert report.macs_after == count_macs(small, (3, 8, 8))
    rows = {r.name: r for r in report.rows}
    assert set(rows) == {"conv2", "fc"}
    assert rows["conv2"].params_after == small.conv2.n_params
    assert rows["conv2"].macs_after == TuckerConv2d.cost((16, 8, 3, 3), (5, 3), (8, 8))[1]
    assert rows["fc"].params_after == small.fc.n_params
    assert report.params_before == count_params(Tiny())
    d = result.to_dict()
    assert d["params_after"] == report.params_after and len(d["lc_log"]) == 3
    assert result.accuracy_reference is not None and result.accuracy_finetuned is not None
    assert "params" in result.summary() and "MACs" in result.summary()



def test_finetune_schedule_kwargs_reach_the_finetuning():
    specs = {"conv2": ("tucker2", (4, 4))}
    result = lc_compress(tiny(), tiny_data(), specs, n_steps=1, epochs_per_step=1, lr=0.01, finetune_epochs=3,
                         finetune_lr=0.01, finetune_schedule="step",
                         finetune_schedule_kwargs={"milestones": [1, 2], "gamma": 0.5}, **FIT)
    assert result.finetune_history.lr == pytest.approx([0.01, 0.005, 0.0025])


def test_compress_and_finetune_takes_the_schedule_settings():
    from tuckerlab.pipeline import compress_and_finetune

    result = compress_and_finetune(tiny(), tiny_data(), "tucker2", {"conv2": (4, 4)}, finetune_epochs=3, lr=0.01,
                                   schedule="step", schedule_kwargs={"milestones": [1, 2], "gamma": 0.5}, **FIT)
    assert result.finetune_history.lr == pytest.approx([0.01, 0.005, 0.0025])

def test_factorized_layers_are_the_final_projection():
    data = tiny_data()
    result = lc_compress(tiny(), data, {"conv2": ("tt_tucker", ((6, 4), (3, 4, 3)))}, n_steps=2, mu0=0.05,
                         lr=0.02, **FIT)
    dense_w = result.dense_model.conv2.weight.detach()
    torch.testing.assert_close(result.model.conv2.reconstruct_weight().detach(),
                               project(dense_w, "tt_tucker", ((6, 4), (3, 4, 3))), rtol=1e-4, atol=1e-5)
    assert isinstance(result.model.conv2, TTTuckerConv2d)
    assert result.report.params_after == count_params(result.model)
    assert result.report.macs_after == count_macs(result.model, (3, 8, 8))


def test_per_layer_macs_of_tt_tucker_rows():
    result = lc_compress(tiny(), tiny_data(), {"conv2": ("tt_tucker", ((6, 4), (3, 4, 3)))}, n_steps=1, lr=0.02,
                         **FIT)
    row = result.report.rows[0]
    assert row.macs_after == TTTuckerConv2d.cost((16, 8, 3, 3), ((6, 4), (3, 4, 3)), (8, 8))[1]


def test_projection_options_reach_every_c_step_and_the_compressed_model():
    from tuckerlab.decompose import tucker

    result = lc_compress(tiny(), tiny_data(), {"conv2": ("tucker2", (5, 3)), "fc": ("lowrank", 2)}, n_steps=1,
                         lr=0.02, projection_options={"method": "hosvd"}, **FIT)
    assert result.projector["conv2"].options == {"method": "hosvd"} and result.projector["fc"].options == {}
    w = result.dense_model.conv2.weight.detach()
    torch.testing.assert_close(result.model.conv2.reconstruct_weight().detach(),
                               tucker(w, (5, 3), modes=(0, 1), method="hosvd").to_tensor(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- resumption
def run_lc(ckdir, interrupt_at=None, **kw):
    args = dict(n_steps=3, epochs_per_step=2, mu0=0.05, mu_growth=2.0, lr=0.02, label_smoothing=0.1)
    args.update(kw)
    return lc_compress(tiny(), tiny_data(), {"conv1": ("tucker2", (4, 2)), "conv2": ("tucker2", (3, 4))},
                       checkpoint_dir=ckdir, callbacks=[Interrupt(interrupt_at)], **args, **FIT)


@pytest.mark.parametrize("at", [0, 3])
def test_resumed_lc_run_ends_where_an_uninterrupted_one_does(tmp_path, at):
    full = run_lc(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_lc(tmp_path / "cut", interrupt_at=at)
    resumed = run_lc(tmp_path / "cut")
    assert same_state(full.dense_model, resumed.dense_model)
    assert same_state(full.model, resumed.model)
    assert without_times(full.lc_log) == without_times(resumed.lc_log)
    for k in ("mu", "lc_step", "lc_distance", "train_loss", "lr"):
        assert full.history[k] == pytest.approx(resumed.history[k], nan_ok=True)


def test_resuming_with_other_lc_settings_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_lc(tmp_path, interrupt_at=1)
    with pytest.raises(IncompatibleCheckpointError, match="mu_growth"):
        run_lc(tmp_path, mu_growth=3.0)


@pytest.mark.parametrize("at", [0, 2])  # during the warm-up (ranks not chosen yet), after the choice
def test_resumed_tt_lc_keeps_the_ranks_it_chose(tmp_path, at):
    kw = dict(target_params_ratio=0.6, n_steps=2, epochs_per_step=1, warmup_epochs=1, n_trials=4,
              rank_update="shrink", lr=0.05, **FIT)
    full = tt_lc(tiny(), tiny_data(), checkpoint_dir=tmp_path / "full", callbacks=[Interrupt()], **kw)
    with pytest.raises(KeyboardInterrupt):
        tt_lc(tiny(), tiny_data(), checkpoint_dir=tmp_path / "cut", callbacks=[Interrupt(at)], **kw)
    resumed = tt_lc(tiny(), tiny_data(), checkpoint_dir=tmp_path / "cut", callbacks=[Interrupt()], **kw)
    assert same_state(full.model, resumed.model)
    assert without_times(full.lc_log) == without_times(resumed.lc_log)
    assert full.rank_selection == resumed.rank_selection and full.rank_selection["factor"] is not None


# ---------------------------------------------------------------------- TT-LC
def test_tt_lc_meets_the_parameter_target_and_reports_the_cut():
    result = tt_lc(tiny(), tiny_data(), target_params_ratio=0.6, n_steps=2, epochs_per_step=1,
                   warmup_epochs=1, n_trials=5, lr=0.05, **FIT)
    report = result.report
    assert [r.name for r in report.rows] == ["conv2"]  # first conv and classifier stay dense
    assert isinstance(result.model.conv2, TTTuckerConv2d)
    assert report.params_after / report.params_before <= 0.6
    assert report.params_after == count_params(result.model)
    assert result.rank_selection["params_ratio_at_selection"] == pytest.approx(
        report.params_after / report.params_before)
    assert result.accuracy_reference is None  # no pre-trained model
    assert result.history.mu[0] == 0.0 and result.lc_log[0]["epoch"] == 1  # ranks chosen after warm-up
    assert "MACs" in result.summary()


def test_tt_lc_shrink_never_grows_a_rank():
    result = tt_lc(tiny(), tiny_data(), target_params_ratio=0.8, n_steps=3, epochs_per_step=1, warmup_epochs=1,
                   n_trials=4, rank_update="shrink", lr=0.05, **FIT)
    flat = [torch.tensor([x for part in r["ranks"]["conv2"] for x in part]) for r in result.lc_log]
    assert all(bool((b <= a).all()) for a, b in zip(flat, flat[1:]))


def test_double_bayesian_target_below_reach_is_refused_before_training():
    with pytest.raises(ValueError, match=r"target_params_ratio=0.01 cannot be met.*keeps 0\.\d+"):
        tt_lc(tiny(), tiny_data(), target_params_ratio=0.01, n_steps=1, **FIT)
    with pytest.raises(ValueError, match="not both"):
        tt_lc(tiny(), tiny_data(), target_params_ratio=0.5, ranks="evbmf", n_steps=1, **FIT)
    with pytest.raises(ValueError, match=r"target_params_ratio must be in \(0, 1\]"):
        DoubleBayesianRanks(1.5)


def test_tt_lc_with_fixed_ranks():
    result = tt_lc(tiny(), tiny_data(), ranks="ratio:0.5", n_steps=1, epochs_per_step=1, warmup_epochs=0, lr=0.05,
                   **FIT)
    from tuckerlab.rank import fixed_ratio_rank

    assert result.model.conv2.rank == fixed_ratio_rank(torch.empty(16, 8, 3, 3), "tt_tucker", 0.5)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    (dict(specs={"conv2": ("tensor-train", 2)}), r"format='tensor-train': must be one of"),
    (dict(specs={"conv2": ("tucker2", (17, 2))}), r"layer 'conv2' \(format 'tucker2'.*rank\[0\]=17.*\[1, 16\]"),
    (dict(specs={"conv9": ("tucker2", 2)}), r"layer 'conv9': Tiny has no submodule"),
    (dict(mu0=0.0), r"mu0 must be a finite number > 0"),
    (dict(mu0=-1e-3), r"mu0 must be a finite number > 0"),
    (dict(mu_growth=0.9), r"mu_growth must be a finite number >= 1"),
    (dict(epochs_per_step=0), r"epochs_per_step must be an integer >= 1"),
    (dict(n_steps=0), r"n_steps must be an integer >= 1"),
    (dict(rank_update="grow"), r"rank_update must be one of"),
    (dict(specs=None), r"give the layers to compress"),
    (dict(rank_update="shrink"), r"'shrink' needs a rank_selector"),
    (dict(schedule_scope="epoch"), r"schedule_scope must be"),
    (dict(specs={"conv1": ("tt", 2), "conv2": ("tucker2", 2)}), r"one convolution format, got \['tt', 'tucker2'\]"),
])
def test_bad_arguments_fail_before_training(tmp_path, kw, match):
    args = dict(specs={"conv2": ("tucker2", (4, 4))}, n_steps=1)
    args.update(kw)
    specs = args.pop("specs")
    with pytest.raises(ValueError, match=match):
        lc_compress(tiny(), tiny_data(), specs, checkpoint_dir=tmp_path / "ck", **args, **FIT)
    assert not (tmp_path / "ck").exists()


# --------------------------------------------------------------- the command
FAST = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
PROVENANCE_KEYS = {"dataset", "model", "seed", "device", "device_name", "torch", "git_commit", "wall_time_s",
                   "finished_at", "variant", "method"}


def check_run(out, method):
    from tuckerlab.results import read_results
    from tuckerlab.serialization import load_model

    payload = read_results(out)
    results, prov = payload["results"], payload["provenance"]
    assert PROVENANCE_KEYS <= set(prov) and prov["method"] == method
    assert results["params_after"] < results["params_before"]
    assert [r["step"] for r in results["lc_log"]] == [0, 1]
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == method
    assert count_params(model) == results["params_after"]
    return results, prov


def test_cli_lc_from_a_trained_model(tmp_path, capsys):
    from tuckerlab.cli import main

    trained = tmp_path / "r20"
    assert main(["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--out", str(trained),
                 *FAST]) == 0
    out = tmp_path / "lc"
    assert main(["lc", str(trained / "model.pt"), "--rank", "ratio:0.5", "--steps", "1", "--epochs-per-step", "1",
                 "--out", str(out), *FAST]) == 0
    results, prov = check_run(out, "tucker2")
    assert prov["variant"] == "lc" and results["accuracy_reference"] is not None
    assert "params" in capsys.readouterr().out
    assert main(["lc", str(trained / "model.pt"), "--target-params", "0.5", "--rank", "4,4", *FAST]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_tt_lc_from_scratch(tmp_path):
    from tuckerlab.cli import main

    out = tmp_path / "ttlc"
    assert main(["tt-lc", "--model", "resnet20", "--data", "synthetic", "--target-params", "0.5", "--steps", "1",
                 "--epochs-per-step", "1", "--warmup-epochs", "0", "--bo-trials", "3", "--hooi-iters", "5", "--out", str(out),
                 *FAST]) == 0
    results, prov = check_run(out, "tt_tucker")
    assert prov["variant"] == "tt-lc" and prov["target_params"] == 0.5
    assert results["params_after"] / results["params_before"] <= 0.5
    assert results["rank_selection"]["factor"] is not None and results["accuracy_reference"] is None


# ------------------------------------------------------ augmented Lagrangian
class _Anchor(Callback):
    """Adds 1/2 ||W - A||^2 for the weight of ``fc``: with no other gradient on it, the L-step's loss."""

    def __init__(self, target):
        self.target = target

    def penalty(self, model):
        return 0.5 * (model.fc.weight - self.target).square().sum()


class _Detached(nn.Module):
    """The classifier's logits come from a bias only: the data loss does not reach ``fc``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6, bias=False)
        self.logits = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.logits + 0.0 * x.mean((1, 2, 3))[:, None]


@pytest.mark.parametrize("multipliers", [False, True])
def test_lc_on_the_quadratic_problem_with_a_known_optimum(multipliers):
    # min 1/2 ||W - A||^2 s.t. rank(W) <= 2 is solved by the truncated SVD A_2 of A (Eckart-Young). At a fixed
    # mu the quadratic penalty's LC stops at W = (A + mu A_2) / (1 + mu), short of A_2 by ||A - A_2|| / (1 + mu);
    # the augmented Lagrangian reaches A_2 itself.
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 8, generator=g)
    u, s, vh = torch.linalg.svd(target)
    optimum = (u[:, :2] * s[:2]) @ vh[:2]
    torch.manual_seed(0)
    result = lc_compress(_Detached(), tiny_data(), {"fc": ("lowrank", 2)}, n_steps=14, epochs_per_step=4, mu0=1.0,
                         mu_growth=1.0, lr=0.1, schedule="constant", momentum=0.0, weight_decay=0.0,
                         multipliers=multipliers, callbacks=[_Anchor(target)], **{**FIT, "batch_size": 8})
    w = result.dense_model.fc.weight.detach()
    gap = float((w - optimum).norm() / optimum.norm())
    if multipliers:
        assert gap < 1e-3
        assert "multiplier_norm" in result.log[-1]
    else:
        expected = float((target - optimum).norm() / optimum.norm()) / (1 + 1.0)
        assert gap == pytest.approx(expected, rel=0.01)


def test_multipliers_resume_exactly(tmp_path):
    kw = dict(multipliers=True, mu0=0.05, mu_growth=2.0)
    full = run_lc(tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_lc(tmp_path / "cut", interrupt_at=2, **kw)
    resumed = run_lc(tmp_path / "cut", **kw)
    assert same_state(full.model, resumed.model)
    assert without_times(full.lc_log) == without_times(resumed.lc_log)
    with pytest.raises(IncompatibleCheckpointError, match="multipliers"):
        run_lc(tmp_path / "cut")  # the same run without multipliers is another run
