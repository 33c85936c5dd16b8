"""Tests of the training engine: schedules, the loop, hooks, precision, evaluation."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from torch import nn

from tuckerlab.data import ImageDataset
from tuckerlab.train import (
    CHECKPOINT_NAME,
    SCHEDULES,
    Callback,
    History,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    evaluate,
    fit,
    load_checkpoint,
    make_schedule,
)
from tuckerlab.train.schedules import Cosine, ExpCyclic, OneCycle, StepDecay

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# --------------------------------------------------------------------------- helpers
def tiny_data(n_train=64, n_test=32, classes=4, size=8, seed=0) -> ImageDataset:
    """Noisy images whose colour is set by the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]] * 4)[:classes]

    def make(n):
        y = torch.arange(n) % classes
        x = torch.randint(0, 96, (n, 3, size, size), generator=g)
        x += 128 * colours[y][:, :, None, None]
        return x.clamp(0, 255).to(torch.uint8), y

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return ImageDataset("tiny", x_train, y_train, x_test, y_test, tuple(map(str, range(classes))), (0.3, 0.2, 0.2), (0.25, 0.2, 0.2))


class TinyNet(nn.Module):
    def __init__(self, classes=4, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=not bn)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def tiny_model(seed=0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw)


QUICK = dict(batch_size=16, lr=0.05, progress=False, device="cpu")


# --------------------------------------------------------------------------- schedules
def test_cosine_schedule_endpoints():
    f = make_schedule("cosine", lr=0.1, epochs=10, steps_per_epoch=10)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    g = make_schedule("cosine", lr=0.1, epochs=10, steps_per_epoch=10, kwargs={"warmup": 1, "final": 0.1})
    assert g(0) == pytest.approx(0.1) and g(9) == pytest.approx(1.0) and g(10) == pytest.approx(1.0)
    assert g(100) == pytest.approx(0.1)


def test_step_schedule_milestones_in_epochs():
    f = make_schedule("step", lr=0.1, epochs=200, steps_per_epoch=3, kwargs={"milestones": [100, 150], "gamma": 0.2})
    assert isinstance(f, StepDecay) and f.milestones == (300, 450)
    assert [f(299), f(300), f(449), f(450)] == pytest.approx([1.0, 0.2, 0.2, 0.04])


def test_onecycle_matches_torch():
    total, lr = 100, 0.4
    f = make_schedule("onecycle", lr=lr, epochs=10, steps_per_epoch=10, kwargs={"pct_start": 0.3})
    assert isinstance(f, OneCycle)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.3, cycle_momentum=False)
    got = []
    for t in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert [lr * f(t) for t in range(total)] == pytest.approx(got, rel=1e-9, abs=1e-12)


def test_exp_cyclic_is_smith_exp_range():
    lr, base, half, gamma = 0.1, 0.01, 7, 0.99
    f = make_schedule("exp_cyclic", lr=lr, epochs=5, steps_per_epoch=14, kwargs={"base_lr": base, "step_size": 0.5, "gamma": gamma})
    assert isinstance(f, ExpCyclic) and f.step_size == half
    # Smith (2017), exp_range, written out.
    for t in range(70):
        cycle = math.floor(1 + t / (2 * half))
        x = abs(t / half - 2 * cycle + 1)
        expected = base + (lr - base) * max(0.0, 1 - x) * gamma**t
        assert lr * f(t) == pytest.approx(expected, rel=1e-12)
    # and torch's CyclicLR in the same mode
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    ref = torch.optim.lr_scheduler.CyclicLR(opt, base, lr, step_size_up=half, mode="exp_range", gamma=gamma, cycle_momentum=False)
    for t in range(70):
        assert lr * f(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        ref.step()
    assert f(0) == pytest.approx(base / lr) and f(half) == pytest.approx((base + (lr - base) * gamma**half) / lr)


def test_exp_cyclic_default_gamma_shrinks_amplitude_to_a_tenth():
    f = make_schedule("exp_cyclic", lr=1.0, epochs=4, steps_per_epoch=10, kwargs={"base_lr": 0.0})
    assert f.gamma ** 40 == pytest.approx(0.1)


def test_schedule_errors_name_what_is_accepted():
    with pytest.raises(ValueError, match="accepted"):
        make_schedule("cosine", lr=0.1, epochs=1, steps_per_epoch=1, kwargs={"gama": 0.1})
    with pytest.raises(ValueError, match="exp_cyclic"):
        make_schedule("linear", lr=0.1, epochs=1, steps_per_epoch=1)
    assert set(SCHEDULES) == {"constant", "step", "cosine", "onecycle", "exp_cyclic"}
    assert isinstance(make_schedule("cosine", lr=1, epochs=1, steps_per_epoch=1), Cosine)


@pytest.mark.parametrize("name", SCHEDULES)
def test_engine_applies_the_schedule_per_step(name):
    seen = []

    class Spy(Callback):
        def on_step_end(self, trainer, step):
            seen.append(trainer.scheduler.get_last_lr()[0])

    fit(tiny_model(), tiny_data(), epochs=2, schedule=name, callbacks=[Spy()], **QUICK)
    f = make_schedule(name, lr=0.05, epochs=2, steps_per_epoch=4)
    # after step t the scheduler holds the rate of step t (t = 1..8)
    assert seen == pytest.approx([0.05 * f(t) for t in range(1, 9)])


# --------------------------------------------------------------------------- the loop
def test_fit_learns_and_records_history():
    data = tiny_data()
    model = tiny_model()
    before = evaluate(model, data)
    hist = fit(model, data, epochs=6, lr=0.1, batch_size=16, progress=False, device="cpu", schedule="onecycle")
    assert isinstance(hist, History) and len(hist) == 6
    assert hist.epoch == [1, 2, 3, 4, 5, 6]
    assert set(History.BASE) <= set(hist.to_dict())
    assert all(len(v) == 6 for v in hist.to_dict().values())
    assert hist.test_acc[-1] > max(before["accuracy"], 0.9)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.test_acc[-1] == pytest.approx(evaluate(model, data)["accuracy"])
    assert hist.lr[-1] < hist.lr[1]
    assert all(t >= tt > 0 for t, tt in zip(hist.time, hist.train_time))


def test_fit_is_deterministic_on_cpu():
    data = tiny_data()
    a, b = tiny_model(), tiny_model()
    ha = fit(a, data, epochs=2, **QUICK)
    hb = fit(b, data, epochs=2, **QUICK)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert ha.train_loss == hb.train_loss and ha.test_acc == hb.test_acc
    c = tiny_model()
    fit(c, data, epochs=2, seed=1, **QUICK)
    assert not torch.equal(a.conv.weight, c.conv.weight)


def test_eval_every_and_max_steps():
    seen = []

    class Count(Callback):
        def on_step_end(self, trainer, step):
            seen.append(step)

    h = fit(tiny_model(), tiny_data(), epochs=3, eval_every=2, max_steps_per_epoch=2, callbacks=[Count()], **QUICK)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert math.isnan(h.test_acc[0]) and not math.isnan(h.test_acc[1]) and not math.isnan(h.test_acc[2])


def test_one_host_sync_per_epoch(monkeypatch):
    """Reads of device values (.item, .tolist, bool) do not grow with the number of steps."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    class Penalty(Callback):
        def penalty(self, model):
            return 1e-4 * model.fc.weight.square().sum()

    counts = []
    data = tiny_data(n_train=128)
    for steps in (2, 8):
        trainer = Trainer(tiny_model(), data, epochs=1, max_steps_per_epoch=steps, eval_every=0, callbacks=[Penalty()], **QUICK)
        calls["n"] = 0
        trainer.fit()
        counts.append(calls["n"])
    assert counts[0] == counts[1] <= 2


@pytest.mark.parametrize(
    "setting, value, accepted",
    [
        ("lr", math.nan, "a finite number > 0"),
        ("lr", 0.0, "a finite number > 0"),
        ("lr", math.inf, "a finite number > 0"),
        ("batch_size", 0, "an integer >= 1"),
        ("batch_size", 16.0, "an integer >= 1"),
        ("epochs", -1, "an integer >= 0"),
        ("momentum", 1.0, r"a number in \[0, 1\)"),
        ("momentum", -0.1, r"a number in \[0, 1\)"),
        ("label_smoothing", 1.0, r"a number in \[0, 1\)"),
        ("weight_decay", -1e-4, "a finite number >= 0"),
        ("seed", -1, "an integer >= 0"),
        ("eval_every", -1, "an integer >= 0"),
        ("max_steps_per_epoch", 0, "an integer >= 1 or None"),
        ("nesterov", "yes", "True or False"),
        ("amp", "int8", "'bf16', 'fp16'"),
        ("compile", "fastest", "a mode in"),
        ("device", "gpu0", "a device string"),
        ("checkpoint_dir", "", "a non-empty path"),
        ("callbacks", [print], "a tuckerlab.train.Callback"),
        ("optimizer", "sgd", "a torch.optim.Optimizer"),
    ],
)
def test_settings_are_validated_with_the_field_the_value_and_what_is_accepted(setting, value, accepted):
    settings = {"epochs": 1, setting: value}
    with pytest.raises(ValueError, match=rf"^{setting}(\[0\])? must be .*{accepted}.*, got {re.escape(repr(value if setting != 'callbacks' else value[0]))}"):
        TrainConfig(**settings)
    with pytest.raises(ValueError, match=rf"^{setting}"):  # before anything runs
        fit(tiny_model(), tiny_data(), **{**QUICK, **settings})


def test_schedule_settings_are_checked_by_the_config():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        TrainConfig(epochs=1, schedule="linear")
    with pytest.raises(ValueError, match=r"unknown schedule_kwargs \['gama'\]"):
        TrainConfig(epochs=1, schedule="step", schedule_kwargs={"gama": 0.1})


def test_unknown_or_missing_settings_are_type_errors():
    with pytest.raises(TypeError, match=r"'lrr' \(did you mean 'lr'\?\)"):
        fit(tiny_model(), tiny_data(), epochs=1, lrr=0.1)
    with pytest.raises(TypeError, match="epochs"):
        fit(tiny_model(), tiny_data(), lr=0.1)
    with pytest.raises(TypeError, match="config must be"):
        fit(tiny_model(), tiny_data(), {"epochs": 1})


def test_config_and_keywords_are_the_same_run():
    data = tiny_data()
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    ha = fit(a, data, epochs=2, schedule="onecycle", **QUICK)
    cfg = TrainConfig(epochs=2, schedule="onecycle", **QUICK)
    hb = fit(b, data, cfg)
    hc = fit(c, data, cfg.replace(lr=1.0), lr=QUICK["lr"])  # keywords override the config
    for m in (b, c):
        for k, v in a.state_dict().items():
            assert torch.equal(v, m.state_dict()[k]), k
    assert ha.train_loss == hb.train_loss == hc.train_loss
    assert cfg.lr == QUICK["lr"] and cfg.replace(lr=1.0).lr == 1.0  # configs are immutable
    t = Trainer(tiny_model(), data, cfg, epochs=3)
    assert t.config.epochs == 3 and t.epochs == 3 and t.config.schedule == "onecycle"


def test_labels_outside_the_classes_are_refused_before_training():
    data = tiny_data()  # 4 classes
    model = tiny_model(classes=2)
    before = model.fc.weight.detach().clone()
    with pytest.raises(ValueError, match=r"model outputs 2 logits per image but the labels go up to 3 .*num_classes=4"):
        fit(model, data, epochs=1, **QUICK)
    assert torch.equal(model.fc.weight, before)
    bad = tiny_data()
    bad.y_train[5] = 4
    with pytest.raises(ValueError, match=r"labels of the train split must lie in \[0, 4\) .* from 0 to 4"):
        fit(tiny_model(), bad, epochs=1, **QUICK)
    bad = tiny_data()
    bad.y_test[0] = -1
    with pytest.raises(ValueError, match=r"labels of the test split .* from -1 to 3"):
        Trainer(tiny_model(), bad, epochs=1, **QUICK)


def test_divergence_stops_with_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        fit(tiny_model(), tiny_data(), epochs=10, lr=1e3, batch_size=16, progress=False, device="cpu",
            checkpoint_dir=tmp_path)
    err = info.value
    assert isinstance(err, ValueError) and err.epoch >= 2  # the first epochs survive lr=1e3
    assert f"training diverged in epoch {err.epoch} of 10" in str(err)
    assert err.last_good_epoch == err.epoch - 1 and err.checkpoint == tmp_path / CHECKPOINT_NAME
    assert f"last good checkpoint is {err.checkpoint} (after epoch {err.epoch - 1})" in str(err)
    saved = load_checkpoint(err.checkpoint)
    assert saved["epoch"] == err.epoch - 1 and len(saved["history"]["epoch"]) == err.epoch - 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    # without a checkpoint directory the message says there is none
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch \d+ of 10 .*checkpoint_dir=None") as info:
        fit(tiny_model(), tiny_data(), epochs=10, lr=1e3, batch_size=16, progress=False, device="cpu")
    assert info.value.checkpoint is None and info.value.last_good_epoch is None


def test_batch_size_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="larger than the training set"):
        fit(tiny_model(), tiny_data(n_train=8), epochs=1, **QUICK)


def test_weight_decay_groups_and_custom_optimizer():
    t = Trainer(tiny_model(), tiny_data(), epochs=1, decay_bn_bias=False, **QUICK)
    wds = [(len(g["params"]), g["weight_decay"]) for g in t.optimizer.param_groups]
    assert wds == [(2, 5e-4), (3, 0.0)]  # conv, fc weights | bn weight, bn bias, fc bias
    assert t.optimizer.defaults["nesterov"] and t.optimizer.defaults["momentum"] == 0.9
    model = tiny_model()
    h = fit(model, tiny_data(), epochs=1, optimizer=torch.optim.AdamW, **{**QUICK, "lr": 1e-3})
    assert len(h) == 1
    t = Trainer(tiny_model(), tiny_data(), epochs=1, optimizer=torch.optim.AdamW, **QUICK)
    assert isinstance(t.optimizer, torch.optim.AdamW)


# --------------------------------------------------------------------------- hooks
class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_begin(self, trainer):
        self.calls.append("fit_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append(f"epoch_begin {epoch}")

    def on_step_end(self, trainer, step):
        self.calls.append(f"step {step}")

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(f"epoch_end {epoch}")
        logs["weight_norm"] = trainer.model.conv.weight.norm().item()

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")


def test_callback_order_and_extra_columns():
    rec = Recorder()
    h = fit(tiny_model(), tiny_data(), epochs=2, max_steps_per_epoch=2, callbacks=[rec], **QUICK)
    assert rec.calls == [
        "fit_begin",
        "epoch_begin 0", "step 1", "step 2", "epoch_end 0",
        "epoch_begin 1", "step 3", "step 4", "epoch_end 1",
        "fit_end",
    ]
    assert len(h["weight_norm"]) == 2 and h.weight_norm[0] > 0


def test_penalty_is_added_to_the_loss():
    class PullToZero(Callback):
        def __init__(self, mu):
            self.mu = mu

        def penalty(self, model):
            return self.mu / 2 * sum(p.square().sum() for n, p in model.named_parameters() if "conv" in n)

    data = tiny_data()
    plain, pulled = tiny_model(), tiny_model()
    fit(plain, data, epochs=2, weight_decay=0.0, **QUICK)
    fit(pulled, data, epochs=2, weight_decay=0.0, callbacks=[PullToZero(5.0)], **QUICK)
    assert pulled.conv.weight.norm() < 0.8 * plain.conv.weight.norm()
    # a penalty of None changes nothing
    none = tiny_model()
    fit(none, data, epochs=2, weight_decay=0.0, callbacks=[Callback()], **QUICK)
    assert torch.equal(none.conv.weight, plain.conv.weight)


def test_callback_can_stop_early():
    class StopAt(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop = epoch == 1

    h = fit(tiny_model(), tiny_data(), epochs=5, callbacks=[StopAt()], **QUICK)
    assert h.epoch == [1, 2]


# --------------------------------------------------------------------------- evaluation and precision
def test_evaluate_splits_and_restores_mode():
    data, model = tiny_data(), tiny_model()
    model.train()
    r = evaluate(model, data, split="train", batch_size=10)
    assert model.training and set(r) == {"loss", "accuracy"} and 0 <= r["accuracy"] <= 1
    # equals a plain forward pass over the normalised images
    from tuckerlab.data import normalize

    model.eval()
    with torch.no_grad():
        out = model(normalize(data.x_train, data.mean, data.std))
    assert r["loss"] == pytest.approx(nn.functional.cross_entropy(out, data.y_train).item(), rel=1e-5)
    assert r["accuracy"] == pytest.approx((out.argmax(1) == data.y_train).float().mean().item())
    with pytest.raises(ValueError, match="split"):
        evaluate(model, data, split="val")


def test_autocast_keeps_batchnorm_in_float32_cpu():
    """bf16 autocast: convs run in bf16, BN parameters and running statistics stay fp32."""
    model = tiny_model()
    h = fit(model, tiny_data(), epochs=1, amp="bf16", channels_last=True, **QUICK)
    assert math.isfinite(h.train_loss[0])
    for t in (model.bn.weight, model.bn.bias, model.bn.running_mean, model.bn.running_var, model.conv.weight):
        assert t.dtype == torch.float32
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model.conv(torch.randn(2, 3, 8, 8))
        assert y.dtype == torch.bfloat16
        model.bn(y)
    assert model.bn.running_mean.dtype == torch.float32


def test_label_smoothing_raises_the_reported_loss_floor():
    data = tiny_data()
    h0 = fit(tiny_model(), data, epochs=1, **QUICK)
    h1 = fit(tiny_model(), data, epochs=1, label_smoothing=0.3, **QUICK)
    assert h1.train_loss[0] != h0.train_loss[0]


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@cuda
def test_gpu_defaults_bf16_channels_last_and_no_per_step_sync():
    data = tiny_data(n_train=256)
    counts = []
    for steps in (2, 8):
        model = tiny_model()
        trainer = Trainer(model, data, epochs=1, max_steps_per_epoch=steps, eval_every=0, batch_size=16, progress=False)
        assert trainer.device.type == "cuda" and trainer.amp_dtype == torch.bfloat16 and trainer.channels_last
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                trainer.fit()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(x.message) for x in w))
        assert model.bn.running_var.dtype == torch.float32 and model.bn.weight.dtype == torch.float32
    assert counts[0] == counts[1]


@pytest.mark.gpu
@cuda
def test_gpu_compile_runs_and_matches_eager_closely():
    data = tiny_data()
    a, b = tiny_model(), tiny_model()
    ha = fit(a, data, epochs=2, batch_size=16, progress=False, amp=False)
    hb = fit(b, data, epochs=2, batch_size=16, progress=False, amp=False, compile=True)
    assert hb.test_acc[-1] == pytest.approx(ha.test_acc[-1], abs=0.15)
    assert torch.allclose(a.fc.weight, b.fc.weight, atol=1e-2)
