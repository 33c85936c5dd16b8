"""Bad input, damaged files and diverging runs: a clear message every time, nothing wrong saved.

Each command-line case runs ``tuckerlab`` in-process and checks the exit
status, that the message names the flag or file and the value, that no
traceback is printed, and that a failing run leaves no ``model.pt`` or
``results.json`` behind. The API cases check the exception and its message.
"""
from __future__ import annotations

import hashlib
import math
import sys

import pytest
import torch
from tiny import tiny_data
from torch import nn

from tuckerlab.cli import main

FAST = ["--no-progress", "--device", "cpu", "--max-steps-per-epoch", "2", "--batch-size", "32"]
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained dense model, a compressed one, and damaged or mismatched model files."""
    root = tmp_path_factory.mktemp("bad")
    assert main(["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--out",
                 str(root / "r20"), *FAST]) == 0
    assert main(["compress", str(root / "r20" / "model.pt"), "--rank", "ratio:0.5", "--out", str(root / "tk2"),
                 *FAST]) == 0
    good = (root / "r20" / "model.pt").read_bytes()
    (root / "garbage.pt").write_bytes(b"\x00\x01 not a model")
    (root / "text.pt").write_text("model = resnet20\n")
    (root / "truncated.pt").write_bytes(good[: len(good) // 2])
    payload = torch.load(root / "r20" / "model.pt", weights_only=True)
    torch.save({**payload, "arch": "resnet32"}, root / "wrong_arch.pt")
    torch.save({**payload, "num_classes": 100}, root / "wrong_classes.pt")
    state = dict(payload["state_dict"])
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].clone()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = math.nan
    torch.save({**payload, "state_dict": state}, root / "nan.pt")
    return root


def run(argv):
    """Exit status of ``tuckerlab argv``, as the process would end (SystemExit with a message prints it, status 1)."""
    try:
        return main(argv)
    except SystemExit as err:
        if isinstance(err.code, int):
            return err.code
        print(err.code, file=sys.stderr)
        return 1


# (command line with {dir} for the fixture folder and {out} for a fresh output folder, exit status, words
# the message must contain)
CLI_CASES = [
    ("lc {dir}/r20/model.pt --target-params 0", 2, ["--target-params", "'0'", "(0, 1]"]),
    ("lc {dir}/r20/model.pt --target-params 1.5", 2, ["--target-params", "'1.5'", "(0, 1]"]),
    ("lc {dir}/r20/model.pt --target-params nan", 2, ["--target-params", "'nan'"]),
    ("tt-lc --model resnet20 --data synthetic --target-params -0.1", 2, ["--target-params", "'-0.1'"]),
    ("lc {dir}/r20/model.pt --target-params 0.5 --rank 4,4", 2, ["--target-params", "--rank", "not both"]),
    ("lc {dir}/r20/model.pt --bo-trials 5", 2, ["--bo-trials", "not apply"]),
    ("lc {dir}/r20/model.pt --rank-update grow", 2, ["--rank-update", "'grow'"]),
    ("compress {dir}/r20/model.pt --rank params:0", 2, ["--rank", "'params:0'", "(0, 1]", "0.0"]),
    ("compress {dir}/r20/model.pt --rank ratio:2", 2, ["--rank", "'ratio:2'", "(0, 1]"]),
    ("compress {dir}/r20/model.pt --rank evbmf:1.5", 2, ["--rank", "weakening", "[0, 1]"]),
    ("compress {dir}/r20/model.pt --rank bogus", 2, ["'bogus'", "not understood", "params:T"]),
    ("compress {dir}/r20/model.pt --rank macs:", 2, ["'macs:'", "needs a value"]),
    ("compress {dir}/r20/model.pt --format tt_tucker --rank 8,8", 2, ["((r_out, r_in), (r1, r2, r3))", "(8, 8)"]),
    ("compress {dir}/r20/model.pt --rank 99,99", 2, ["layer 'layer1.0.conv1'", "rank[0]=99", "[1, 16]"]),
    ("compress {dir}/r20/model.pt --format svd", 2, ["--format", "'svd'"]),
    ("compress {dir}/garbage.pt", 2, ["garbage.pt", "cannot be read"]),
    ("compress {dir}/text.pt", 2, ["text.pt", "cannot be read"]),
    ("compress {dir}/truncated.pt", 2, ["truncated.pt", "cannot be read"]),
    ("compress {dir}/missing.pt", 2, ["missing.pt", "does not exist"]),
    ("compress {dir}/wrong_arch.pt", 2, ["wrong_arch.pt", "'resnet32'", "does not fit"]),
    ("compress {dir}/wrong_classes.pt", 2, ["wrong_classes.pt", "100 classes", "does not fit"]),
    ("compress {dir}/nan.pt", 2, ["'layer2.0.conv1.weight'", "non-finite", "1 of 4608"]),
    ("compress {dir}/tk2/model.pt", 1, ["already factorized"]),
    ("evaluate {dir}/garbage.pt", 2, ["garbage.pt", "cannot be read"]),
    ("info {dir}/truncated.pt", 2, ["truncated.pt", "cannot be read"]),
    ("info", 2, ["--model NAME or a model file"]),
    ("export {dir}/text.pt --format onnx", 2, ["text.pt", "cannot be read"]),
    ("train --data synthetic --batch-size 0 --epochs 1", 2, ["batch_size", "0"]),
    ("train --data synthetic --epochs -1", 2, ["epochs", "-1"]),
    ("train --data synthetic --lr nan --epochs 1", 2, ["lr", "nan"]),
    ("train --data synthetic --lr -0.1 --epochs 1", 2, ["lr", "-0.1"]),
    ("train --data synthetic --label-smoothing 1.5 --epochs 1", 2, ["label_smoothing", "1.5"]),
    ("train --data synthetic --schedule bogus --epochs 1", 2, ["schedule", "'bogus'"]),
    ("train --data synthetic --device cuda:7 --epochs 1", 2, ["--device", "'cuda:7'"]),
    ("train --data synthetic --device tpu --epochs 1", 2, ["--device", "'tpu'"]),
    ("train --data nonexistent --epochs 1", 2, ["'nonexistent'"]),
    ("train --model resnet21 --data synthetic --epochs 1", 2, ["'resnet21'", "accepted"]),
    ("admm {dir}/r20/model.pt --rho -1", 2, ["rho", "-1"]),
    ("admm {dir}/r20/model.pt --update-every 0", 2, ["update_every", "0"]),
    ("admm {dir}/r20/model.pt --rank params:1.5", 2, ["params:1.5", "(0, 1]", "1.5"]),
    ("admm {dir}/r20/model.pt --from-scratch", 2, ["give no model file"]),
    ("lc --model resnet20 --data synthetic", 2, ["lc starts from a trained model"]),
]


@pytest.mark.parametrize("line,status,words", CLI_CASES, ids=[c[0].replace("{dir}/", "") for c in CLI_CASES])
def test_command_line_case(files, tmp_path, capsys, line, status, words):
    argv = line.format(dir=files).split()
    out = tmp_path / "out"
    if argv[0] in ("train", "compress", "lc", "tt-lc", "admm"):  # training commands: tiny runs, a fresh folder
        argv += ["--out", str(out), "--no-progress", "--max-steps-per-epoch", "2"]
        argv += [] if "--batch-size" in argv else ["--batch-size", "32"]
        argv += [] if "--device" in argv else ["--device", "cpu"]
    capsys.readouterr()
    assert run(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


def test_a_failed_run_does_not_overwrite_a_good_one(files, capsys):
    out = files / "tk2"
    before = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("model.pt", "results.json")}
    assert run(["compress", str(files / "r20" / "model.pt"), "--rank", "99,99", "--out", str(out), *FAST]) == 2
    after = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in ("model.pt", "results.json")}
    assert before == after


def test_debug_shows_the_traceback(files):
    with pytest.raises(ValueError, match="cannot be read"):
        main(["--debug", "info", str(files / "garbage.pt")])


# ------------------------------------------------------------------ the API
def _resnet():
    from tuckerlab.models import get_model

    torch.manual_seed(0)
    return get_model("resnet20")


API_CASES = [
    ("TuckerConv2d(8, 8, 3, rank=(0, 2))", r"rank\[0\]=0 for mode 0 of size 8: must be an integer in \[1, 8\]"),
    ("TuckerConv2d(8, 8, 3, rank=(20, 2))", r"rank\[0\]=20 .*\[1, 8\]"),
    ("TuckerConv2d(8, 8, 3, rank=(-1, 2))", r"rank\[0\]=-1 .*\[1, 8\]"),
    ("TTConv2d(8, 8, 3, (0, 2, 2))", r"rank\[0\]=0 at bond 1"),
    ("TTConv2d(8, 8, 3, (100, 2, 2))", r"rank\[0\]=100 at bond 1"),
    ("CPConv2d(8, 8, 3, 0)", r"rank=0 .*\[1, 72\]"),
    ("TTTuckerConv2d(8, 8, 3, ((0, 2), (1, 1, 1)))", r"tucker_rank\[0\]=0"),
    ("TTTuckerConv2d(8, 8, 3, (8, 8))", r"\(\(r_out, r_in\), \(r1, r2, r3\)\).*\(8, 8\)"),
    ("compress_model(_resnet(), 'tucker2', (99, 99))", r"layer 'layer1.0.conv1' .*rank\[0\]=99"),
    ("compress_model(_resnet(), 'tucker2', 'params:0')", r"params:0.*\(0, 1\]"),
    ("compress_model(_resnet(), 'tt_tucker', (8, 8))", r"\(\(r_out, r_in\), \(r1, r2, r3\)\)"),
    ("compress_model(_resnet(), 'svd', 2)", r"Unknown method 'svd'"),
    ("solve_budget(_resnet(), 'tucker2', 0)", r"\(0, 1\], got 0"),
    ("solve_budget(_resnet(), 'tucker2', 1e-6)", r"unreachable.*smallest ratio|unreachable"),
    ("get_format('nope')", r"format='nope': must be one of"),
    ("as_selector('latency:0.5:x')", r"batch size .* positive integer, got 'x'"),
    ("fit(nn.Linear(3, 4), tiny_data(), epochs=1, lr=math.nan)", r"lr must be a finite number > 0, got nan"),
    ("fit(nn.Linear(3, 4), tiny_data(), epochs=1, batch_size=0)", r"batch_size.*got 0"),
    ("lc_compress(_resnet(), tiny_data(), rank='params:0.5', n_steps=1, mu0=0.0)", r"mu0 must be .* > 0"),
    ("admm_compress(_resnet(), tiny_data(), rank='params:0.5', epochs=1, rho=-1.0)", r"rho must be .* >= 0"),
]


@pytest.mark.parametrize("call,match", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_case(call, match):
    from tuckerlab import compress_model  # noqa: F401
    from tuckerlab.formats import get_format  # noqa: F401
    from tuckerlab.layers import CPConv2d, TTConv2d, TTTuckerConv2d, TuckerConv2d  # noqa: F401
    from tuckerlab.methods import admm_compress, lc_compress  # noqa: F401
    from tuckerlab.rank import solve_budget  # noqa: F401
    from tuckerlab.rank.selectors import as_selector  # noqa: F401
    from tuckerlab.train import fit  # noqa: F401

    with pytest.raises(ValueError, match=match):
        eval(call)


def test_labels_beyond_the_model_are_refused_before_training():
    from tuckerlab.train import fit

    with pytest.raises(ValueError, match="labels"):
        fit(_Logits(2), tiny_data(classes=4), epochs=1, batch_size=16, device="cpu", progress=False)


class _Logits(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.fc = nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def test_a_diverging_lc_run_keeps_its_last_good_checkpoint(tmp_path):
    from tuckerlab.methods import lc_compress
    from tuckerlab.train import TrainingDiverged

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    ck = tmp_path / "ck"
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch \d+") as info:
        lc_compress(model, tiny_data(), {"2": ("tucker2", (4, 4))}, n_steps=6, epochs_per_step=1, lr=1e3,
                    schedule="constant", checkpoint_dir=ck, batch_size=16, device="cpu", progress=False)
    err = info.value
    assert err.last_good_epoch is None or (ck / "lc" / "last.pt").is_file()
    if err.last_good_epoch is not None:
        saved = torch.load(ck / "lc" / "last.pt", weights_only=True)
        assert saved["epoch"] == err.last_good_epoch
        assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_ctrl_c_says_how_to_resume(monkeypatch, tmp_path, capsys):
    import tuckerlab.cli.train as train_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "cmd_train", interrupted)
    assert run(["train", "--data", "synthetic", "--epochs", "1", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "interrupted" in err and str(tmp_path / "run") in err and "run the same command again" in err
