"""tuckerlab.notebook: mode switch, seeding, device choice."""

import random

import numpy as np
import pytest
import torch

from tuckerlab import notebook


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(notebook.ENV_MODE, raising=False)
    monkeypatch.delenv(notebook.ENV_DEVICE, raising=False)


@pytest.mark.filterwarnings("ignore:full mode on a CPU")
@pytest.mark.parametrize("value", ["test", "quick", "full", " Quick "])
def test_mode_from_environment(monkeypatch, value):
    monkeypatch.setenv(notebook.ENV_MODE, value)
    mode = notebook.setup(seed=0, device="cpu", plots=False, verbose=False)
    assert mode.name == value.strip().lower()
    assert mode.is_full == (mode.name == "full")
    assert "TUCKERLAB_MODE" in mode.reason


def test_default_mode_is_quick_even_with_cuda(monkeypatch):
    # Full mode runs for hours: a GPU runtime must not select it silently.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert notebook.setup(plots=False, verbose=False).name == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert notebook.resolve_mode()[0] == "quick"


def test_full_mode_prints_its_estimate_first(monkeypatch, capsys):
    monkeypatch.setenv(notebook.ENV_MODE, "full")
    with pytest.warns(UserWarning, match="full mode on a CPU"):
        notebook.setup(chapter="05_tt_lc", device="cpu", plots=False)
    out = capsys.readouterr().out
    hours = notebook.FULL_MODE_HOURS["05_tt_lc"]
    assert "full mode" in out and f"about {hours:g} h on one GPU (estimated)" in out


def test_gpu_in_quick_mode_offers_full_mode(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    notebook.setup(chapter="01_tucker", device="cpu", plots=False)
    out = capsys.readouterr().out
    assert "quick mode" in out and "TUCKERLAB_MODE=full" in out and "estimated" in out


def test_unknown_chapter_is_rejected():
    with pytest.raises(ValueError, match="chapter='99_nothing'"):
        notebook.setup(chapter="99_nothing", plots=False, verbose=False)


def test_every_chapter_has_a_full_mode_estimate():
    from pathlib import Path

    chapters = {p.stem for p in (Path(__file__).parents[1] / "notebooks").glob("*.ipynb")}
    assert chapters == set(notebook.FULL_MODE_HOURS)


def test_empty_variable_means_unset(monkeypatch):
    monkeypatch.setenv(notebook.ENV_MODE, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert notebook.resolve_mode()[0] == "quick"


def test_bad_mode_names_variable_value_and_choices(monkeypatch):
    monkeypatch.setenv(notebook.ENV_MODE, "fast")
    with pytest.raises(ValueError) as err:
        notebook.setup(plots=False, verbose=False)
    msg = str(err.value)
    for part in ("TUCKERLAB_MODE", "'fast'", "'test'", "'quick'", "'full'"):
        assert part in msg


def test_mode_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv(notebook.ENV_MODE, "full")
    assert notebook.setup(mode="test", device="cpu", plots=False, verbose=False).name == "test"
    with pytest.raises(ValueError, match="mode='slow'"):
        notebook.setup(mode="slow", plots=False, verbose=False)


def test_pick():
    quick = notebook.Mode("quick", torch.device("cpu"))
    test = notebook.Mode("test", torch.device("cpu"))
    full = notebook.Mode("full", torch.device("cpu"))
    assert quick.pick(test=1, quick=5, full=200) == 5
    assert test.pick(test=1, quick=5, full=200) == 1
    assert test.pick(quick=5, full=200) == 5  # test falls back to quick
    assert full.pick(quick=5, full=200) == 200
    assert full.pick(quick=None, full=None) is None  # None is a value
    with pytest.raises(TypeError, match="full"):
        full.pick(quick=5)
    with pytest.raises(TypeError):
        quick.pick(5, 200)  # keywords only


def test_seeding_is_reproducible():
    def draw():
        notebook.setup(seed=123, mode="test", device="cpu", plots=False, verbose=False)
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert draw() == draw()
    notebook.setup(seed=124, mode="test", device="cpu", plots=False, verbose=False)
    assert torch.rand(1).item() != draw()[2]


def test_device_choice(monkeypatch):
    monkeypatch.setenv(notebook.ENV_DEVICE, "cpu")
    assert notebook.setup(mode="test", plots=False, verbose=False).device == torch.device("cpu")
    monkeypatch.setenv(notebook.ENV_DEVICE, "not-a-device")
    with pytest.raises(ValueError, match="TUCKERLAB_DEVICE"):
        notebook.setup(mode="test", plots=False, verbose=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            notebook.setup(mode="test", device="cuda", plots=False, verbose=False)


def test_full_mode_on_cpu_warns():
    with pytest.warns(UserWarning, match="full mode on a CPU"):
        notebook.setup(mode="full", device="cpu", plots=False, verbose=False)


def test_setup_prints_one_line(capsys):
    mode = notebook.setup(mode="quick", device="cpu", plots=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "quick mode on cpu, seed 0" in out
    assert str(mode) == "quick mode on cpu, seed 0"


def test_plot_style_is_applied():
    matplotlib = pytest.importorskip("matplotlib")
    notebook.setup(mode="test", device="cpu", verbose=False)
    assert matplotlib.rcParams["axes.spines.top"] is False


def test_in_colab(monkeypatch):
    assert notebook.in_colab() is False
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    assert notebook.in_colab() is True


def test_provenance_passes_mode_fields():
    pytest.importorskip("tuckerlab.results")
    mode = notebook.Mode("quick", torch.device("cpu"), seed=7)
    record = mode.provenance(dataset="cifar10-subset", model="resnet20")
    flat = repr(record)
    assert "cifar10-subset" in flat and "resnet20" in flat and "7" in flat
