"""ADMM towards low TT/Tucker rank (Yin et al. 2021): the updates, plain training at rho = 0, resumption, inputs."""
from __future__ import annotations

import copy
import math

import pytest
from test_lc import Interrupt, same_state, tiny, without_times
from tiny import tiny_data
import torch

from tuckerlab.layers import TTConv2d, TuckerConv2d
from tuckerlab.methods import ADMMCallback, ADMMResult, admm_compress
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.projection import project
from tuckerlab.train import Callback, IncompatibleCheckpointError, fit

FIT = dict(batch_size=16, device="cpu", progress=False)
SPECS = {"conv1": ("tt", (2, 2, 2)), "conv2": ("tucker2", (2, 2))}
TT_SPECS = {"conv1": ("tt", (2, 3, 2)), "conv2": ("tt", (3, 3, 4))}  # one conv format: a compressed model exists

# tiny models: one thread is faster, and runs compared bit for bit need the same thread count
pytestmark = pytest.mark.usefixtures("one_thread_module")


class Spy(Callback):
    """Calls ``fn(trainer, epoch)`` at every epoch end (placed around the ADMM callback)."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, trainer, epoch, logs):
        self.fn(trainer, epoch)


def weights(model, names=("conv1", "conv2")):
    return {n: model.get_submodule(n).weight.detach().clone() for n in names}


# ------------------------------------------------------------- the algorithm
def test_primal_residual_shrinks_across_updates():
    # A decaying rate lowers the gradient noise that pushes W off the low-rank set;
    # plain SGD lets the penalty's pull act fully within an epoch (lr * rho = 0.5).
    data, model = tiny_data(), tiny()
    cb = ADMMCallback(SPECS, rho=10.0)
    history = fit(model, data, epochs=6, lr=0.05, schedule="cosine", momentum=0.0, callbacks=[cb], **FIT)
    primal = [r["primal"] for r in cb.log]
    assert all(b < a for a, b in zip(primal, primal[1:])), primal
    assert primal[-1] < 0.05 * primal[0]
    assert cb.log[-1]["dual"] < cb.log[1]["dual"]
    assert [(r["update"], r["epoch"], r["step"]) for r in cb.log] == [(k, k, 4 * k) for k in range(7)]
    assert history.rho == [10.0] * 6 and history.admm_updates == list(range(1, 7))
    assert history.admm_primal == pytest.approx(primal[1:])
    assert history.admm_dual == pytest.approx([r["dual"] for r in cb.log[1:]])
    assert history.admm_rel_primal[-1] == pytest.approx(primal[-1] / math.hypot(
        *(torch.linalg.vector_norm(w.double()).item() for w in weights(model).values())))
    assert [r["train_loss"] for r in cb.log[1:]] == pytest.approx(history.train_loss)
    assert cb.log[-1]["ranks"] == {"conv1": [2, 2, 2], "conv2": [2, 2]}
    layers = cb.log[-1]["layers"]
    assert set(layers) == {"conv1", "conv2"} and set(layers["conv1"]) == {"primal", "relative", "dual"}
    assert math.hypot(*(v["primal"] for v in layers.values())) == pytest.approx(primal[-1])
    # without the penalty the weights stay far from the low-rank set
    free = ADMMCallback(SPECS, rho=0.0)
    fit(tiny(), data, epochs=6, lr=0.05, schedule="cosine", momentum=0.0, callbacks=[free], **FIT)
    assert free.log[-1]["primal"] > 10 * primal[-1]


def test_rho_zero_is_plain_training_bit_for_bit():
    data, m0 = tiny_data(), tiny()
    plain = copy.deepcopy(m0)
    h_plain = fit(plain, data, epochs=3, lr=0.05, **FIT)
    admm = copy.deepcopy(m0)
    cb = ADMMCallback(SPECS, rho=0.0, rho_growth=2.0, update_every=3)
    h_admm = fit(admm, data, epochs=3, lr=0.05, callbacks=[cb], **FIT)
    assert same_state(plain, admm)
    assert h_plain.train_loss == h_admm.train_loss and h_plain.test_acc == h_admm.test_acc
    assert [r["step"] for r in cb.log] == [0, 3, 6, 9, 12] and cb.rho == 0.0  # the updates did run
    assert cb.penalty(admm) is None
    # the same run with a penalty ends elsewhere (the comparison can fail)
    pulled = copy.deepcopy(m0)
    fit(pulled, data, epochs=3, lr=0.05, callbacks=[ADMMCallback(SPECS, rho=1e-2, update_every=3)], **FIT)
    assert not same_state(plain, pulled)


def test_dual_update_and_penalty_algebra():
    data, model = tiny_data(), tiny()
    cb = ADMMCallback(SPECS, rho=0.5, rho_growth=2.0)
    seen = {}
    checked = []

    def before(trainer, epoch):
        seen.update(w=weights(trainer.model), u={n: t.clone() for n, t in cb.U.items()}, rho=cb.rho,
                    warm=cb.warm)

    def after(trainer, epoch):
        # Z = Pi(W + U): the projection warm-started from the previous one's factors
        shifted = {n: w + seen["u"][n] for n, w in seen["w"].items()}
        z = cb.projector.reconstruct(cb.projector.decompose_tensors(shifted, warm=seen["warm"]), shifted)
        for n, w in seen["w"].items():
            assert torch.equal(cb.U[n], seen["u"][n] + (w - cb.Z[n])), n
            torch.testing.assert_close(cb.Z[n], z[n], rtol=0, atol=0)
            # ... which is the projection up to the HOOI cap's precision
            cold = project(w + seen["u"][n], *SPECS[n])
            assert float((cb.Z[n] - shifted[n]).norm()) <= 1.001 * float((cold - shifted[n]).norm()), n
        assert cb.rho == 2 * seen["rho"]
        checked.append(epoch)

    fit(model, data, epochs=3, lr=0.02, callbacks=[Spy(before), cb, Spy(after)], **FIT)
    assert checked == [0, 1, 2] and cb.updates == 3
    assert any(float(u.abs().max()) > 0 for u in cb.U.values())  # U is not trivially zero
    w = dict(conv1=model.conv1.weight, conv2=model.conv2.weight)
    expected = 0.5 * cb.rho * sum((w[n] - cb.Z[n] + cb.U[n]).square().sum() for n in w)
    torch.testing.assert_close(cb.penalty(model), expected)
    # the dual residual of the log is rho * ||Z - Z_prev|| of the update
    z_prev = {}
    cb2 = ADMMCallback(SPECS, rho=0.5)

    def keep_z(trainer, epoch):
        z_prev.update({n: t.clone() for n, t in cb2.Z.items()})

    fit(tiny(), data, epochs=2, lr=0.02, callbacks=[Spy(keep_z), cb2], **FIT)
    moved = math.hypot(*(torch.linalg.vector_norm((cb2.Z[n] - z_prev[n]).double()).item() for n in SPECS))
    assert cb2.log[-1]["dual"] == pytest.approx(0.5 * moved)


def test_rescaled_dual_keeps_rho_times_u():
    data = tiny_data()
    seen = {}
    cb = ADMMCallback(SPECS, rho=0.5, rho_growth=4.0, rho_max=1.0, rescale_dual=True)

    def before(trainer, epoch):
        seen.update(w=weights(trainer.model), u={n: t.clone() for n, t in cb.U.items()}, rho=cb.rho)

    def after(trainer, epoch):
        for n, w in seen["w"].items():
            torch.testing.assert_close(cb.rho * cb.U[n], seen["rho"] * (seen["u"][n] + w - cb.Z[n]))

    fit(tiny(), data, epochs=2, lr=0.02, callbacks=[Spy(before), cb, Spy(after)], **FIT)
    assert cb.rho == 1.0 and [r["rho"] for r in cb.log] == [0.0, 0.5, 1.0]  # capped by rho_max


@pytest.mark.parametrize("every,steps", [(5, [5, 10]), (2, [2, 4, 6, 8, 10, 12]), (4, [4, 8, 12])])
def test_update_every_k_steps(every, steps):
    data = tiny_data()  # 4 steps per epoch, 12 in all
    cb = ADMMCallback(SPECS, rho=0.1, update_every=every)
    changed = []

    class Watch(Callback):
        def on_fit_begin(self, trainer):
            self.z = None

        def on_step_end(self, trainer, step):
            if self.z is not None and cb.Z is not self.z:
                changed.append(step)
            self.z = cb.Z

    history = fit(tiny(), data, epochs=3, lr=0.02, callbacks=[cb, Watch()], **FIT)
    assert changed == steps
    assert [r["step"] for r in cb.log] == [0, *steps] and cb.updates == len(steps)
    assert [r["epoch"] for r in cb.log[1:]] == [(s - 1) // 4 + 1 for s in steps]
    assert history.admm_updates == [sum(s <= 4 * e for s in steps) for e in (1, 2, 3)]
    for e, primal in enumerate(history.admm_primal, 1):
        assert math.isnan(primal) == (not any(4 * (e - 1) < s <= 4 * e for s in steps))
    # records at an epoch's last step carry that epoch's loss, the others NaN
    for r in cb.log[1:]:
        assert math.isnan(r["train_loss"]) == (r["step"] % 4 != 0)


# ------------------------------------------------------- the compressed model
@pytest.mark.parametrize("spec,metric", [("params:0.5", "params"), ("macs:0.6", "macs")])
def test_budget_rank_is_met_and_the_report_matches_the_model(spec, metric):
    data = tiny_data()
    result = admm_compress(tiny(), data, rank=spec, format="tt", epochs=2, rho=0.1, lr=0.02, **FIT)
    assert isinstance(result, ADMMResult)
    small, report = result.model, result.report
    target = float(spec.split(":")[1])
    ratio = report.params_after / report.params_before if metric == "params" else \
        report.macs_after / report.macs_before
    assert target - 0.1 < ratio <= target
    assert report.params_after == count_params(small)
    assert report.macs_after == count_macs(small, (3, 8, 8))
    assert isinstance(small.conv2, TTConv2d) and small.conv2.rank == result.projector["conv2"].rank
    assert [r.name for r in report.rows] == ["conv2"]  # first conv and classifier stay dense
    # the factors are the final dense weights' projection at the same ranks
    torch.testing.assert_close(small.conv2.reconstruct_weight().detach(), project(
        result.dense_model.conv2.weight.detach(), "tt", result.projector["conv2"].rank), rtol=1e-4, atol=1e-5)
    assert result.accuracy_reference is not None and result.accuracy_finetuned is None
    assert result.accuracy == result.accuracy_compressed and spec in result.rank_selection["rule"]
    d = result.to_dict()
    assert d["params_after"] == report.params_after and [r["update"] for r in d["admm_log"]] == [0, 1, 2]
    assert "ADMM dense" in result.summary() and "||W - Z||" in result.summary()


def test_specs_and_schedule_defaults():
    data = tiny_data()
    result = admm_compress(tiny(), data, {"conv2": ("tucker2", (5, 3)), "fc": ("lowrank", 2)}, epochs=4, lr=0.1,
                           from_scratch=True, finetune_epochs=1, finetune_lr=0.01, **FIT)
    assert isinstance(result.model.conv2, TuckerConv2d) and result.model.conv2.rank == (5, 3)
    assert result.accuracy_reference is None and result.rank_selection is None
    # the authors' step schedule scaled to 4 epochs: x0.2 after 1.1, 2.2 and 3.3 epochs
    assert result.history.lr == pytest.approx([0.1, 0.02, 0.004, 0.0008])
    assert result.history.rho == [1e-3] * 4
    assert result.accuracy_finetuned is not None and result.accuracy == result.accuracy_finetuned
    assert result.finetune_history.lr == pytest.approx([0.01 * 0.4**3])  # fine-tuning: x0.4 three times


# ---------------------------------------------------------------- resumption
def run_admm(ckdir, interrupt_at=None, **kw):
    args = dict(epochs=4, rho=0.2, rho_growth=1.5, lr=0.02, finetune_epochs=1)
    args.update(kw)
    return admm_compress(tiny(), tiny_data(), TT_SPECS, checkpoint_dir=ckdir, callbacks=[Interrupt(interrupt_at)],
                         **args, **FIT)


@pytest.mark.parametrize("at,every", [(0, "epoch"), (2, "epoch"), (1, 3)])
def test_resumed_admm_run_ends_where_an_uninterrupted_one_does(tmp_path, at, every):
    full = run_admm(tmp_path / "full", update_every=every)
    with pytest.raises(KeyboardInterrupt):
        run_admm(tmp_path / "cut", interrupt_at=at, update_every=every)
    assert (tmp_path / "cut" / "admm" / "last.pt").exists() == (at > 0)
    resumed = run_admm(tmp_path / "cut", update_every=every)
    assert same_state(full.dense_model, resumed.dense_model)
    assert same_state(full.model, resumed.model)
    assert without_times(full.log) == without_times(resumed.log)
    for k in ("rho", "admm_updates", "admm_primal", "admm_dual", "train_loss", "lr"):
        assert full.history[k] == pytest.approx(resumed.history[k], nan_ok=True), k


def test_resuming_with_other_admm_settings_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_admm(tmp_path, interrupt_at=1)
    with pytest.raises(IncompatibleCheckpointError, match="ADMM run with other settings.*rho_growth"):
        run_admm(tmp_path, rho_growth=3.0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    (dict(rho=-1e-3), r"rho must be a finite number >= 0.*got -0.001"),
    (dict(rho=float("nan")), r"rho must be a finite number >= 0.*got nan"),
    (dict(rho=float("inf")), r"rho must be a finite number >= 0.*got inf"),
    (dict(rho="0.1"), r"rho must be a finite number >= 0.*got '0.1'"),
    (dict(rho=True), r"rho must be a finite number >= 0.*got True"),
    (dict(rho_growth=0.5), r"rho_growth must be a finite number >= 1.*got 0.5"),
    (dict(rho_growth=None), r"rho_growth must be a finite number >= 1.*got None"),
    (dict(rho=1e-2, rho_max=1e-3), r"rho_max must be None or a finite number >= rho \(= 0.01\), got 0.001"),
    (dict(update_every=0), r"update_every must be 'epoch' or an integer >= 1.*got 0"),
    (dict(update_every="step"), r"update_every must be 'epoch' or an integer >= 1.*got 'step'"),
    (dict(update_every=2.5), r"update_every must be 'epoch' or an integer >= 1.*got 2.5"),
    (dict(epochs=0), r"epochs must be an integer >= 1, got 0"),
    (dict(rank="params:0.5"), r"give specs .* or rank .*, not both"),
    (dict(specs=None), r"give the ranks: specs .* or rank"),
    (dict(specs=None, rank="9,9,9"), r"rank='9,9,9': layer 'conv2' \(format 'tt'.*9.*\[1, 8\]"),
    (dict(specs=None, rank="params:1.5"), r"rank='params:1.5': .*in \(0, 1\], got 1.5"),
    (dict(specs=None, rank="params:0.5", format="tucker"), r"format='tucker': must be one of 'tt', 'tucker2'"),
    (dict(specs={"conv2": ("tucker", (4, 4, 3, 3))}), r"format 'tucker' \(full Tucker\) has no factorized layer"),
    (dict(specs={"conv2": ("tucker2", (17, 2))}), r"layer 'conv2' \(format 'tucker2'.*rank\[0\]=17.*\[1, 16\]"),
])
def test_bad_arguments_fail_before_training(tmp_path, kw, match):
    args = dict(specs=TT_SPECS, epochs=1)
    args.update(kw)
    specs = args.pop("specs")
    with pytest.raises(ValueError, match=match):
        admm_compress(tiny(), tiny_data(), specs, checkpoint_dir=tmp_path / "ck", **args, **FIT)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("kw,name", [(dict(rho=-1.0), "rho"), (dict(rho_growth=0.99), "rho_growth"),
                                     (dict(update_every=-3), "update_every"), (dict(specs=None), "specs")])
def test_callback_checks_its_arguments(kw, name):
    args = dict(specs=SPECS)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        ADMMCallback(args.pop("specs"), **args)


def test_authors_step_scales_the_milestones_and_takes_overrides():
    from tuckerlab.methods import authors_step

    assert authors_step(200, 0.2)["milestones"] == pytest.approx([55, 110, 165])
    assert authors_step(20, 0.4) == {"milestones": pytest.approx([5.5, 11.0, 16.5]), "gamma": 0.4}
    assert authors_step(20, 0.4, {"gamma": 0.1})["gamma"] == 0.1
