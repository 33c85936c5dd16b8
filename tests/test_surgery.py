"""compress_model: layer replacement, rank forms, skipping rules and the report."""

import json

import pytest
import torch
from torch import nn

from tuckerlab.layers import CPConv2d, LowRankLinear, TTConv2d, TTTuckerConv2d, TuckerConv2d
from tuckerlab.metrics import count_macs, count_params
from tuckerlab.surgery import CompressionReport, compress_model, replace_module

INPUT = (3, 12, 12)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.body = nn.Sequential(
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, (3, 1), padding=(1, 0), bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1),
            nn.Conv2d(4, 4, 3, padding=1, groups=2),
        )
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        x = self.body(torch.relu(self.bn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def make_model():
    torch.manual_seed(0)
    model = SmallCNN().double()
    # non-trivial BatchNorm statistics, so eval mode matters
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def full_rank_rule(name, module, method):
    if method == "lowrank":
        return min(module.weight.shape)
    t, s, kh, kw = module.weight.shape
    tt = (min(s, kh * kw * t), min(s * kh, kw * t), min(s * kh * kw, t))
    return {"tucker2": (t, s), "tt": tt, "tt_tucker": ((t, s), tt), "cp": None}[method]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, *INPUT, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
@pytest.mark.parametrize("method", ["tucker2", "tt", "tt_tucker"])
def test_full_rank_keeps_the_output(method, execution, x):
    model = make_model()
    with torch.no_grad():
        y_ref = model(x)
    new, report = compress_model(
        model, method, full_rank_rule, include_linear=True, execution=execution, input_size=INPUT
    )
    with torch.no_grad():
        assert _rel(new(x), y_ref) < 1e-5
    cls = {"tucker2": TuckerConv2d, "tt": TTConv2d, "tt_tucker": TTTuckerConv2d}[method]
    assert isinstance(new.body[0], cls) and isinstance(new.body[2], cls)
    assert new.body[0].execution == execution
    assert isinstance(new.head, LowRankLinear)
    assert [r.name for r in report.rows] == ["body.0", "body.2", "head"]
    # the input model is untouched
    assert type(model.body[0]) is nn.Conv2d and type(model.head) is nn.Linear


def test_cp_with_planted_rank_keeps_the_output(x):
    model = make_model()
    with torch.no_grad():
        for conv in (model.body[0], model.body[2]):
            t, s, kh, kw = conv.weight.shape
            factors = [torch.randn(d, 2, dtype=torch.float64) for d in (t, s, kh, kw)]
            conv.weight.copy_(torch.einsum("tr,sr,hr,wr->tshw", *factors))
        y_ref = model(x)
    new, report = compress_model(
        model, "cp", 2, input_size=INPUT, decompose_kwargs=dict(n_iter_max=60, tol=1e-14, random_state=0)
    )
    assert isinstance(new.body[0], CPConv2d) and new.body[0].rank == 2
    with torch.no_grad():
        assert _rel(new(x), y_ref) < 1e-5


def test_report_totals_match_metrics():
    model = make_model()
    ranks = {"body.0": (2, 2), "body.2": (2, 2), "head": 2}
    new, report = compress_model(model, "tucker2", ranks, include_linear=True, input_size=INPUT)
    assert [r.method for r in report.rows] == ["tucker2", "tucker2", "lowrank"]
    assert report.params_before == count_params(model)
    assert report.params_after == count_params(new)
    assert report.macs_before == count_macs(model, INPUT)
    assert report.macs_after == count_macs(new, INPUT)
    # rows: own parameters, and the totals move by exactly the per-layer changes
    for row in report.rows:
        layer = new.get_submodule(row.name)
        assert row.params_after == layer.n_params
        assert row.params_before == sum(p.numel() for p in model.get_submodule(row.name).parameters())
    delta = sum(r.params_before - r.params_after for r in report.rows)
    assert report.params_before - report.params_after == delta
    mac_delta = sum(r.macs_before - r.macs_after for r in report.rows)
    assert report.macs_before - report.macs_after == mac_delta
    # the cost formulas agree with the measured MACs of each row
    row = next(r for r in report.rows if r.name == "body.0")
    assert row.weight_shape == (8, 6, 3, 3) and row.rank == (2, 2)
    assert TuckerConv2d.cost(row.weight_shape, row.rank, (6, 6), (12, 12))[1] == row.macs_after
    assert report.params_ratio == pytest.approx(report.params_before / report.params_after)
    assert report.macs_ratio > 1


def test_defaults_skip_first_pointwise_grouped_and_linear():
    new, report = compress_model(make_model(), "tucker2", (2, 2), input_size=INPUT)
    skipped = dict(report.skipped)
    assert skipped == {
        "stem": "first conv",
        "body.4": "1x1 conv",
        "body.5": "groups=2",
        "head": "linear (include_linear=False)",
    }
    assert type(new.stem) is nn.Conv2d and type(new.body[4]) is nn.Conv2d and type(new.head) is nn.Linear
    assert [r.name for r in report.rows] == ["body.0", "body.2"]


def test_skip_flags_and_skip_argument():
    _, report = compress_model(
        make_model(), "tucker2", 1, skip_first=False, skip_pointwise=False, skip=["body.2"], input_size=INPUT
    )
    assert [r.name for r in report.rows] == ["stem", "body.0", "body.4"]
    assert ("body.2", "skip") in report.skipped
    _, report = compress_model(
        make_model(), "tucker2", 1, skip=lambda name, m: m.out_channels == 8, input_size=INPUT
    )
    assert report.rows == []
    _, report = compress_model(make_model(), "tucker2", 1, skip=["body.*"], input_size=INPUT)
    assert report.rows == []
    with pytest.raises(ValueError, match=r"match no module of the model: \['nope'\]"):
        compress_model(make_model(), "tucker2", 1, skip=["body.0", "nope"], input_size=INPUT)


def test_dict_rank():
    model = make_model()
    new, report = compress_model(model, "tt", {"body.0": (2, 3, 2), "body.2": None}, input_size=INPUT)
    assert [r.name for r in report.rows] == ["body.0"]
    assert new.body[0].rank == (2, 3, 2)
    assert dict(report.skipped)["body.2"] == "rank None"
    with pytest.raises(ValueError, match=r"not in the model: \['body.9', 'missing'\]"):
        compress_model(model, "tt", {"body.0": 2, "missing": 2, "body.9": 2}, input_size=INPUT)
    with pytest.raises(ValueError, match=r"not nn.Conv2d or nn.Linear.*'bn', 'BatchNorm2d'"):
        compress_model(model, "tt", {"bn": 2}, input_size=INPUT)


def test_rule_returning_none_skips():
    seen = []

    def rule(name, module, method):
        seen.append((name, method))
        return (2, 2) if name == "body.2" else None

    new, report = compress_model(make_model(), "tucker2", rule, include_linear=True, input_size=INPUT)
    assert seen == [("body.0", "tucker2"), ("body.2", "tucker2"), ("head", "lowrank")]
    assert [r.name for r in report.rows] == ["body.2"]
    assert dict(report.skipped)["body.0"] == "rule returned None"
    assert type(new.body[0]) is nn.Conv2d


def test_bad_arguments():
    model = make_model()
    with pytest.raises(ValueError, match=r"Unknown method 'svd'; accepted: \['cp', 'tt', 'tt_tucker', 'tucker2'\]"):
        compress_model(model, "svd", 2, input_size=INPUT)
    with pytest.raises(ValueError, match="execution"):
        compress_model(model, "tucker2", 2, execution="dense", input_size=INPUT)
    with pytest.raises(ValueError, match=r"Linear layer 'head' needs an int rank"):
        compress_model(model, "tucker2", (2, 2), include_linear=True, input_size=INPUT)
    with pytest.raises(ValueError, match=r"rank\[0\]=9 for mode 0 of size 8"):
        compress_model(model, "tucker2", (9, 2), input_size=INPUT)


def test_inplace_and_copy():
    model = make_model()
    new, _ = compress_model(model, "tucker2", (2, 2), input_size=INPUT)
    assert new is not model and type(model.body[0]) is nn.Conv2d
    same, _ = compress_model(model, "tucker2", (2, 2), inplace=True, input_size=INPUT)
    assert same is model and isinstance(model.body[0], TuckerConv2d)
    assert not model.training  # modes are kept


def test_report_json_round_trip_and_table():
    _, report = compress_model(make_model(), "tt_tucker", ((2, 2), 2), include_linear=False, input_size=INPUT)
    text = report.to_json()
    data = json.loads(text)
    assert data["totals"]["params_after"] == report.params_after
    back = CompressionReport.from_json(text)
    assert back == report
    assert back.rows[0].rank == ((2, 2), (2, 2, 2))
    dicts = report.to_dicts()
    assert [d["name"] for d in dicts] == ["body.0", "body.2"]
    assert set(dicts[0]) >= {"name", "weight_shape", "method", "rank", "params_before", "params_after",
                             "macs_before", "macs_after", "params_ratio", "macs_ratio"}
    json.dumps(dicts)  # plain built-in types only
    table = str(report)
    lines = table.splitlines()
    assert "body.0" in table and "model total" in table and "skipped: stem (first conv)" in table
    # aligned: header, rules, rows and total line have the same width
    assert len({len(line) for line in lines[1:6]}) == 1


def test_replace_module():
    model = make_model()
    old = replace_module(model, "body.2", nn.Identity())
    assert isinstance(old, nn.Conv2d) and isinstance(model.body[2], nn.Identity)
    replace_module(model, "head", nn.Linear(4, 2))
    assert model.head.out_features == 2
    with pytest.raises(ValueError, match="no submodule named 'body.9'"):
        replace_module(model, "body.9", nn.Identity())
    with pytest.raises(ValueError, match="the model itself"):
        replace_module(model, "", nn.Identity())
