"""Per-layer execution choice and latency estimates: logic on fake clocks, one real measurement."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import tuckerlab.latency as latency
from tuckerlab.latency import LatencyCache, LatencyModel, choose_execution, time_module
from tuckerlab.layers import FactorizedModule, TuckerConv2d
from tuckerlab.results import device_name
from tuckerlab.surgery import compress_model

pytestmark = pytest.mark.usefixtures("one_thread_module")


class _Clock:
    """A fake ``time_module``: milliseconds from what the module is, and a log of the calls."""

    def __init__(self, dense, factorized, reconstructed=9.0):
        self.dense, self.factorized, self.reconstructed = dense, factorized, reconstructed
        self.calls = []

    def __call__(self, module, x, min_run_time=0.05):
        self.calls.append((type(module).__name__, tuple(x.shape)))
        if isinstance(module, FactorizedModule):
            t = self.factorized(module) if module.execution == "factorized" else self.reconstructed
        else:
            t = self.dense(module)
        return {"median_ms": float(t), "iqr_ms": 0.0, "runs": 1}


def _model():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    small, _ = compress_model(dense, "tucker2", (4, 4), skip_first=False, input_size=(4, 6, 6))
    return dense, small.eval()


# The first layer (4 input channels) is faster dense, the second faster factorized.
def _clock():
    return _Clock(dense=lambda m: {4: 1.0, 8: 5.0}[m.in_channels],
                  factorized=lambda m: {4: 2.0, 8: 3.0}[m.in_channels])


def test_swap_keeps_the_fastest_and_the_function(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "time_module", _clock())
    _, model = _model()
    x = torch.randn(2, 4, 6, 6)
    expected = model(x).detach()
    report = choose_execution(model, (4, 6, 6), batch_size=2, cache=LatencyCache(tmp_path / "lat.json"))
    assert report.choices == {"0": "dense", "2": "factorized"}
    assert type(model[0]) is nn.Conv2d and isinstance(model[2], TuckerConv2d)
    assert float((model(x).detach() - expected).abs().max()) <= 1e-5  # to_conv() is the same function
    assert report.total_ms() == 1.0 + 3.0 and report.total_ms("factorized") == 2.0 + 3.0
    assert report.layers[0].speedup == 2.0
    assert "choice" in str(report) and report.to_dict()["layers"][0]["times_ms"]["dense"] == 1.0


def test_mode_and_report_only(tmp_path, monkeypatch):
    clock = _Clock(dense=lambda m: 1.0, factorized=lambda m: {4: 2.0, 8: 0.5}[m.in_channels], reconstructed=1.5)
    monkeypatch.setattr(latency, "time_module", clock)
    _, model = _model()
    cache = LatencyCache(tmp_path / "lat.json")
    report = choose_execution(model, (4, 6, 6), batch_size=2, apply="mode", cache=cache)
    assert report.choices == {"0": "reconstructed", "2": "factorized"}
    assert model[0].execution == "reconstructed" and model[2].execution == "factorized"
    _, fresh = _model()
    report = choose_execution(fresh, (4, 6, 6), batch_size=2, apply=None, cache=cache)
    assert report.choices == {"0": "dense", "2": "factorized"}  # the fastest of all, applied to nothing
    assert all(m.execution == "factorized" for m in fresh.modules() if isinstance(m, FactorizedModule))


def test_original_layer_comes_back_where_dense_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "time_module", _clock())
    dense, model = _model()
    report = choose_execution(model, (4, 6, 6), batch_size=2, original=dense, cache=LatencyCache(tmp_path / "l.json"))
    assert report.choices == {"0": "original", "2": "factorized"}
    assert torch.equal(model[0].weight, dense[0].weight) and model[0] is not dense[0]
    assert report.layers[0].times_ms["original"] == report.layers[0].times_ms["dense"]


def test_cache_file_and_keys(tmp_path, monkeypatch):
    clock = _clock()
    monkeypatch.setattr(latency, "time_module", clock)
    path = tmp_path / "lat.json"
    _, model = _model()
    choose_execution(model, (4, 6, 6), batch_size=2, apply=None, cache=LatencyCache(path), rounds=2)
    # 2 layers x (factorized, reconstructed, dense) x 2 rounds
    assert len(clock.calls) == 12
    data = json.loads(path.read_text())
    assert data["format"] == "tuckerlab-latency/1" and len(data["entries"]) == 6
    fields = json.loads(next(iter(data["entries"])))
    for name in ("device", "torch", "layer", "weight", "rank", "input", "batch", "dtype", "memory_format",
                 "stride", "padding", "execution"):
        assert name in fields
    assert fields["device"] == device_name("cpu") and fields["batch"] == 2
    clock.calls.clear()
    _, again = _model()
    report = choose_execution(again, (4, 6, 6), batch_size=2, cache=LatencyCache(path))  # a new process
    assert clock.calls == [] and report.choices == {"0": "dense", "2": "factorized"}
    choose_execution(again, (4, 6, 6), batch_size=3, apply=None, cache=LatencyCache(path), rounds=1)
    assert len(clock.calls) == 3  # another batch size: measured anew (layer "0" is dense now)
    assert all(shape[0] == 3 for _, shape in clock.calls)


def test_default_cache_lives_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TUCKERLAB_DATA", str(tmp_path))
    assert LatencyCache().path == tmp_path / "latency.json"


def test_corrupt_cache_is_reported(tmp_path):
    path = tmp_path / "lat.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        LatencyCache(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tuckerlab latency cache"):
        LatencyCache(path)


def test_latency_model_interpolates_a_measured_grid(tmp_path, monkeypatch):
    # Latency linear in each rank: bilinear interpolation is exact between grid points.
    clock = _Clock(dense=lambda m: 7.0, factorized=lambda m: 1.0 + 0.5 * m.rank[0] + 0.25 * m.rank[1])
    monkeypatch.setattr(latency, "time_module", clock)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    lat = LatencyModel(batch_size=4, cache=LatencyCache(tmp_path / "lat.json"))
    ranks = [(4, 2), (7, 5), (13, 9), (32, 16), (1, 1)]
    got = lat.factorized_ms(conv, "tucker2", ranks, (8, 8))
    expected = [1.0 + 0.5 * r + 0.25 * s for r, s in ranks[:4]]
    expected.append(1.0 + 0.5 * 4 + 0.25 * 2)  # below the grid: its smallest point (r_out 4, r_in 2)
    np.testing.assert_allclose(got, expected)
    assert len(clock.calls) == 25  # 5 x 5 grid of (r_out, r_in), measured once
    assert lat.factorized_ms(conv, "tucker2", (10, 10), (8, 8)) == pytest.approx(1.0 + 5.0 + 2.5)
    assert lat.dense_ms(conv, (8, 8)) == 7.0 and len(clock.calls) == 26
    np.testing.assert_allclose(lat.best_ms(conv, "tucker2", [(4, 2), (32, 16)], (8, 8)), [3.5, 7.0])
    assert all(shape == (4, 16, 8, 8) for _, shape in clock.calls)


def test_latency_model_grid_of_multiples(tmp_path, monkeypatch):
    clock = _Clock(dense=lambda m: 7.0, factorized=lambda m: float(m.rank[0] * 100 + m.rank[1]))
    monkeypatch.setattr(latency, "time_module", clock)
    lat = LatencyModel(batch_size=1, cache=LatencyCache(tmp_path / "lat.json"), step=8)
    conv = nn.Conv2d(20, 32, 3)
    assert lat.factorized_ms(conv, "tucker2", [(8, 16), (32, 20)], (6, 6)).tolist() == [816.0, 3220.0]
    # r_out on {8, 16, 24, 32}, r_in on {8, 16, 20}: the bound 20 is a point too
    assert len(clock.calls) == 12
    with pytest.raises(ValueError, match="not both"):
        LatencyModel(1, fractions=(0.5, 1.0), step=8, cache=lat.cache)
    with pytest.raises(ValueError, match="`step` must be a positive integer"):
        LatencyModel(1, step=0, cache=lat.cache)


def test_latency_model_uses_exact_measurements(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "time_module", _Clock(dense=lambda m: 7.0, factorized=lambda m: float(m.rank)))
    conv = nn.Conv2d(8, 8, 3, padding=1)
    cache = LatencyCache(tmp_path / "lat.json")
    lat = LatencyModel(batch_size=2, cache=cache, fractions=(0.5, 1.0))
    # CP ranks up to 26 (the dense layer's parameters) on the grid (13, 26): rank 5 gets rank 13's time
    assert lat.factorized_ms(conv, "cp", 5, (6, 6)) == pytest.approx(13.0)
    assert lat.factorized_ms(conv, "cp", 20, (6, 6)) == pytest.approx(20.0)
    model = nn.Sequential(conv).eval()
    small, _ = compress_model(model, "cp", 5, skip_first=False, input_size=(8, 6, 6), decompose_kwargs={"n_iter_max": 2})
    monkeypatch.setattr(latency, "time_module", _Clock(dense=lambda m: 7.0, factorized=lambda m: 0.5))
    choose_execution(small, (8, 6, 6), batch_size=2, apply=None, cache=cache)  # measures rank 5 itself
    lat = LatencyModel(batch_size=2, cache=cache, fractions=(0.5, 1.0))
    assert lat.factorized_ms(conv, "cp", 5, (6, 6)) == 0.5


# TT: (r1, r2, r3) on {2, 4, 8} x {6, 12, 24} x {2, 4, 8}, each point lowered to reachable ranks
# (r2 <= 3 min(r1, r3)), which leaves 14 distinct layers; TT-Tucker: (r_out, r_in, r2) on
# {2, 4, 8} x {2, 4, 8} x {6, 12, 24}, where r2 <= 3 min(r_in, r_out) leaves 14 too.
@pytest.mark.parametrize("method, rank, measured", [("tt", (2, 5, 3), 14), ("tt_tucker", ((6, 5), (5, 4, 6)), 14)])
def test_latency_model_three_rank_formats(tmp_path, monkeypatch, method, rank, measured):
    clock = _Clock(dense=lambda m: 1.0, factorized=lambda m: 2.0)
    monkeypatch.setattr(latency, "time_module", clock)
    lat = LatencyModel(batch_size=1, cache=LatencyCache(tmp_path / "lat.json"))
    assert lat.factorized_ms(nn.Conv2d(8, 8, 3), method, rank, (6, 6)) == pytest.approx(2.0)
    assert len(clock.calls) == measured


def test_real_measurement(tmp_path):
    conv = nn.Conv2d(4, 4, 3)
    result = time_module(conv, torch.randn(1, 4, 8, 8), min_run_time=0.005)
    assert result["median_ms"] > 0 and result["runs"] >= 1
    _, model = _model()
    report = choose_execution(model, (4, 6, 6), batch_size=1, cache=LatencyCache(tmp_path / "l.json"),
                              min_run_time=0.002, rounds=1)
    assert set(report.choices) == {"0", "2"}
    assert all(t > 0 for layer in report.layers for t in layer.times_ms.values())


def test_bad_arguments(tmp_path):
    dense, model = _model()
    cache = LatencyCache(tmp_path / "l.json")
    with pytest.raises(ValueError, match="`apply` must be one of"):
        choose_execution(model, (4, 6, 6), apply="fastest", cache=cache)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        choose_execution(model, (4, 6, 6), batch_size=0, cache=cache)
    with pytest.raises(ValueError, match="no factorized layer"):
        choose_execution(dense, (4, 6, 6), cache=cache)
    with pytest.raises(ValueError, match="`original` has no layer named"):
        choose_execution(model, (4, 6, 6), original={"0": dense[0]}, cache=cache)
    with pytest.raises(ValueError, match="`memory_format` must be one of"):
        choose_execution(model, (4, 6, 6), memory_format="nhwc", cache=cache)
    with pytest.raises(ValueError, match="`fractions`"):
        LatencyModel(1, fractions=(0.0, 1.0), cache=cache)
    lat = LatencyModel(1, cache=cache)
    with pytest.raises(ValueError, match="`method` must be one of"):
        lat.factorized_ms(dense[0], "svd", 2, (6, 6))
    with pytest.raises(ValueError, match="`conv` must be a torch.nn.Conv2d"):
        lat.dense_ms(model[0], (6, 6))
