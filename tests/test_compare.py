"""``tuckerlab compare``: cells resume, --list prints runnable commands, the table equals the cells' results."""
from __future__ import annotations

import json
import shlex

import pytest

from tuckerlab.cli import main
from tuckerlab.compare import Grid, cells, collect, load_grid, paired_difference, run_grid, write_table

EXTRA = ("--device", "cpu", "--max-steps-per-epoch", "1", "--batch-size", "32")
pytestmark = pytest.mark.usefixtures("one_thread_module")


def grid(**kw):
    args = dict(model="resnet20", data="synthetic", methods=("budget", "evbmf"), budgets=("params:0.6",),
                seeds=(0, 1), epochs=3, pretrain_epochs=2, batch_size=64, extra=EXTRA)
    args.update(kw)
    return Grid(**args)


def test_list_prints_runnable_commands_and_the_grid_resumes(tmp_path, capsys):
    g = grid()
    root = tmp_path / "cmp"
    assert main(["compare", "--out", str(root), "--list", "--model", "resnet20", "--data", "synthetic",
                 "--methods", "budget", "evbmf", "--budgets", "params:0.6", "--seeds", "0", "1", "--epochs", "3",
                 "--pretrain-epochs", "2", "--extra", " ".join(EXTRA)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [c.command() for c in cells(g, root)] and len(listed) == 2 + 2 * 2
    # run the first listed command as a scheduler would: it is an ordinary tuckerlab command
    argv = shlex.split(listed[0])
    assert argv[0] == "tuckerlab" and main(argv[1:]) == 0
    ran = run_grid(g, root, log=lambda line: None)
    assert [c.folder.name for c in ran] == [c.folder.name for c in cells(g, root)[1:]]  # the done cell is kept
    assert run_grid(g, root, log=lambda line: None) == []  # nothing left: nothing runs again
    table = collect(g, root, latency=False)
    by = {(r["method"], r["budget"]): r for r in table}
    for method in ("budget", "evbmf"):
        accs, params = [], []
        for cell in cells(g, root):
            if cell.method == method:
                res = json.loads((cell.folder / "results.json").read_text())["results"]
                accs.append(res["accuracy_finetuned"])
                params.append(res["params_after"])
                assert res["params_after"] / res["params_before"] <= 0.6 + 1e-9
        row = by[(method, "params:0.6")]
        assert row["accuracy"] == pytest.approx(sum(accs) / 2) and row["params"] == pytest.approx(sum(params) / 2)
        assert row["seeds"] == [0, 1] and row["missing"] == 0
    diff = paired_difference(g, root, "budget", "evbmf", "params:0.6")
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(by[("budget", "params:0.6")]["accuracy"]
                                                              - by[("evbmf", "params:0.6")]["accuracy"])
    csv_path, md_path = write_table(table, root)
    assert "budget solver + fine-tune" in md_path.read_text() and csv_path.read_text().count("\n") == len(table) + 1


def test_grid_files_and_bad_grids(tmp_path):
    assert load_grid().methods  # the shipped default grid reads
    path = tmp_path / "g.toml"
    path.write_text('[grid]\nmethods = ["budget"]\nseeds = [4]\nbogus = 1\n')
    with pytest.raises(ValueError, match="unknown grid keys \\['bogus'\\]"):
        load_grid(path)
    with pytest.raises(ValueError, match="methods=\\['nope'\\]"):
        grid(methods=("nope",))
    with pytest.raises(ValueError, match="budget 'flops:0.5'"):
        grid(budgets=("flops:0.5",))
    with pytest.raises(ValueError, match="pretrain_epochs=3"):
        grid(epochs=3, pretrain_epochs=3)
