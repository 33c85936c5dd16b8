"""The ``tuckerlab`` command end to end on tiny runs: train -> compress -> evaluate -> info."""
import json
import subprocess
import sys

import pytest

from tuckerlab.cli import main
from tuckerlab.rank.spec import from_spec
from tuckerlab.results import read_results
from tuckerlab.serialization import load_model

FAST = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
PROVENANCE_KEYS = {"dataset", "model", "seed", "device", "device_name", "torch", "git_commit", "wall_time_s",
                   "finished_at"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r20"
    assert main(["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_model_and_results(trained):
    results = read_results(trained)
    assert PROVENANCE_KEYS <= set(results["provenance"])
    assert results["provenance"]["dataset"] == "synthetic"
    assert results["results"]["params"] == 269_722
    assert 0.0 <= results["results"]["test_accuracy"] <= 1.0
    assert (trained / "checkpoints" / "last.pt").is_file()
    model, info = load_model(trained / "model.pt")
    assert info["arch"] == "resnet20" and info["compression"] is None


def test_compress_then_evaluate_round_trip(trained, tmp_path, capsys):
    out = tmp_path / "tk2"
    code = main(["compress", str(trained / "model.pt"), "--method", "tucker2", "--rank", "ratio:0.5",
                 "--finetune-epochs", "1", "--out", str(out), *FAST])
    assert code == 0
    results = read_results(out)["results"]
    assert results["params_after"] < results["params_before"]
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tucker2"
    from tuckerlab.metrics import count_params

    assert count_params(model) == results["params_after"]
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.pt"), "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    evaluated = read_results(tmp_path / "ev")["results"]
    assert evaluated["test_accuracy"] == pytest.approx(results["accuracy_finetuned"])
    assert evaluated["params"] == results["params_after"]


def test_compressing_a_compressed_model_is_refused(trained, tmp_path):
    out = tmp_path / "tk2"
    main(["compress", str(trained / "model.pt"), "--rank", "4,4", "--out", str(out), *FAST])
    with pytest.raises(SystemExit, match="already factorized"):
        main(["compress", str(out / "model.pt"), "--out", str(tmp_path / "again"), *FAST])


def test_bad_rank_is_a_clear_error(trained, capsys):
    assert main(["compress", str(trained / "model.pt"), "--rank", "bogus", *FAST]) == 2
    assert "rank specification 'bogus' is not understood" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["ratio:0", "ratio:1.5", "energy:-0.1", "params:2"])
def test_fractions_outside_unit_interval_raise(spec):
    from tuckerlab.models import get_model

    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        from_spec(spec, model=get_model("resnet20"))


def test_info_json_totals(capsys):
    assert main(["info", "--model", "resnet20", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["total"]["params"] == 269_722
    assert sum(r["macs"] for r in payload["layers"]) == payload["total"]["macs"]


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "tuckerlab", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("tuckerlab ")


def test_admm_from_a_trained_model(trained, tmp_path, capsys):
    from tuckerlab.metrics import count_params

    out = tmp_path / "admm"
    assert main(["admm", str(trained / "model.pt"), "--rank", "params:0.5", "--epochs", "1", "--finetune-epochs", "1",
                 "--out", str(out), *FAST]) == 0
    payload = read_results(out)
    results, prov = payload["results"], payload["provenance"]
    assert PROVENANCE_KEYS <= set(prov)
    assert (prov["command"], prov["method"], prov["rank"], prov["rho"]) == ("admm", "tt", "params:0.5", 1e-3)
    assert prov["model_file"] == str(trained / "model.pt") and prov["from_scratch"] is False
    assert results["params_after"] / results["params_before"] <= 0.5
    assert [r["update"] for r in results["admm_log"]] == [0, 1]
    assert results["accuracy_reference"] is not None and results["accuracy_finetuned"] is not None
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tt" and count_params(model) == results["params_after"]
    assert "ADMM dense" in capsys.readouterr().out


def test_admm_from_scratch_with_step_updates(tmp_path):
    out = tmp_path / "admm"
    assert main(["admm", "--model", "resnet20", "--data", "synthetic", "--format", "tucker2", "--rank", "ratio:0.5",
                 "--epochs", "2", "--update-every", "3", "--rho", "0.01", "--rho-growth", "2", "--milestones", "1",
                 "--gamma", "0.5", "--out", str(out), *FAST]) == 0
    payload = read_results(out)
    results, prov = payload["results"], payload["provenance"]
    assert prov["from_scratch"] is True and prov["model_file"] is None and results["accuracy_reference"] is None
    assert [(r["update"], r["step"]) for r in results["admm_log"]] == [(0, 0), (1, 3)]  # 2 steps per epoch
    assert results["history"]["rho"] == [0.01, 0.02] and results["history"]["lr"] == pytest.approx([0.1, 0.05])
    model, info = load_model(out / "model.pt")
    assert info["compression"]["method"] == "tucker2" and info["arch"] == "resnet20"


def test_admm_bad_input_is_a_clear_error(trained, capsys):
    assert main(["admm", str(trained / "model.pt"), "--rho", "-1", *FAST]) == 2
    assert "rho must be a finite number >= 0" in capsys.readouterr().err
    assert main(["admm", str(trained / "model.pt"), "--update-every", "0", *FAST]) == 2
    assert "update_every must be 'epoch' or an integer >= 1" in capsys.readouterr().err
    assert main(["admm", str(trained / "model.pt"), "--from-scratch", *FAST]) == 2
    assert "give no model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["admm", "--update-every", "often"])


def test_export_then_time_the_exported_file(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    small = tmp_path / "tk2"
    assert main(["compress", str(trained / "model.pt"), "--rank", "ratio:0.5", "--out", str(small), *FAST]) == 0
    capsys.readouterr()
    assert main(["export", str(small / "model.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file() and "exported" in capsys.readouterr().out
    assert main(["info", str(small / "model.pt"), "--latency", "2", "--exported", str(tmp_path / "m.onnx"),
                 "--device", "cpu", "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["total"]["latency_ms"]
    assert set(latency) == {"eager", str(tmp_path / "m.onnx")} and all(v > 0 for v in latency.values())
