"""tuckerlab.runs: one run cache, keyed by what produced each run."""

import json

import pytest
import torch

from tuckerlab import runs
from tuckerlab.notebook import Mode


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache" / "runs"


QUICK = Mode("quick", torch.device("cpu"), seed=0)


def _key(mode=QUICK, **settings):
    return runs.Run.create("r", mode, settings).key


def test_cache_root_follows_the_environment(cache):
    assert runs.cache_root() == cache


def test_key_depends_on_everything_that_produced_the_run():
    base = _key(epochs=4, lr=0.2)
    assert base == _key(lr=0.2, epochs=4)  # order does not matter
    assert base != _key(epochs=5, lr=0.2)
    assert base != _key(Mode("quick", torch.device("cpu"), seed=1), epochs=4, lr=0.2)
    assert base != _key(Mode("test", torch.device("cpu"), seed=0), epochs=4, lr=0.2)
    parent = runs.Run.create("p", QUICK, {"epochs": 1})
    assert base != runs.Run.create("r", QUICK, {"epochs": 4, "lr": 0.2}, (parent,)).key


def test_key_changes_with_the_package_code(monkeypatch):
    base = _key(epochs=4)
    monkeypatch.setattr(runs, "code_fingerprint", lambda: "0" * 16)
    assert _key(epochs=4) != base


def test_code_fingerprint_covers_training_code_only():
    assert len(runs.code_fingerprint()) == 16
    assert "notebook.py" in runs._NOT_TRAINING and "train/engine.py" not in runs._NOT_TRAINING


def test_cached_run_records_and_reads_back(capsys):
    with runs.cached_run("demo", QUICK, epochs=1) as run:
        assert not run.cached
        (run.path / "weights.txt").parent.mkdir(parents=True, exist_ok=True)
        (run.path / "weights.txt").write_text("1")
    assert "trained in" in capsys.readouterr().out
    identity = json.loads((run.path / "key.json").read_text())
    assert identity["settings"] == {"epochs": 1} and identity["code"] == runs.code_fingerprint()
    with runs.cached_run("demo", QUICK, epochs=1) as again:
        assert again.cached and again.path == run.path
    assert "read back from" in capsys.readouterr().out


def test_a_failed_run_is_not_recorded_as_done():
    with pytest.raises(RuntimeError):
        with runs.cached_run("broken", QUICK, epochs=1):
            raise RuntimeError("interrupted")
    assert not runs.Run.create("broken", QUICK, {"epochs": 1}).cached


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="Mode"):
        runs.Run.create("r", "quick", {})
    with pytest.raises(ValueError, match="run name"):
        runs.Run.create("a/b", QUICK, {})
    with pytest.raises(ValueError, match="unknown shared network 'nope'"):
        runs.shared_network("nope", QUICK)


def test_every_recipe_covers_every_mode():
    for name, recipe in runs.NETWORKS.items():
        for mode in ("test", "quick", "full"):
            model, dataset, settings = recipe.pick(mode)
            assert model and dataset and settings["epochs"] >= 1, (name, mode)
    # In quick mode the dense networks of chapters 4-6 are one network.
    dense = {runs.NETWORKS[n].pick("quick") == runs.NETWORKS["dense-resnet20"].pick("quick")
             for n in ("dense-ttlc", "dense-admm")}
    assert dense == {True}


@pytest.mark.slow
def test_shared_network_trains_once_then_reads_back(monkeypatch):
    recipe = runs.NetworkRecipe(
        "a tiny network", ("01_tucker",), model={"quick": "resnet20"},
        dataset={"quick": "synthetic"},
        fit={"quick": dict(epochs=1, lr=0.05, batch_size=32, max_steps_per_epoch=2)},
    )
    monkeypatch.setitem(runs.NETWORKS, "tiny", recipe)
    first = runs.shared_network("tiny", QUICK, verbose=False)
    assert not first.run.cached and first.run.seconds is not None
    second = runs.shared_network("tiny", QUICK, verbose=False)
    assert second.run.cached and second.run.path == first.run.path
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    start = runs.initial_model("tiny", QUICK, first.data)
    assert not torch.equal(start.conv1.weight, first.model.conv1.weight.cpu())
