"""Exported files (TorchScript, torch.export, ONNX) compute what the eager model computes."""
import importlib.util

import pytest
import torch
from torch import nn

from tuckerlab.export import (
    FORMATS,
    SUFFIXES,
    ExportMismatchError,
    check_export,
    export_model,
    load_exported,
    run_export,
)
from tuckerlab.layers import CPConv2d, LowRankLinear, TTConv2d, TTTuckerConv2d, TuckerConv2d
from tuckerlab.metrics import measure_latency
from tuckerlab.models import get_model
from tuckerlab.serialization import save_model
from tuckerlab.surgery import compress_model

pytestmark = [
    pytest.mark.usefixtures("one_thread_module"),
    # TorchScript is deprecated upstream (documented in tuckerlab.export); the format is still tested
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning"),
]

ATOL = 1e-5
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def _format(name):
    """A format parameter; ONNX skips (only) when its packages are not installed."""
    missing = [p for p in _ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if name == "onnx" and missing:
        return pytest.param(name, marks=pytest.mark.skip(reason=f"not installed: {missing} (tuckerlab[export])"))
    return name


ALL_FORMATS = [_format(f) for f in FORMATS]


def _conv_layer(cls):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, (3, 2), stride=(2, 1), padding=(1, 0), bias=True)
    rank = {TuckerConv2d: (5, 4), TTConv2d: (4, 5, 4), TTTuckerConv2d: ((5, 4), (3, 4, 3)), CPConv2d: 7}[cls]
    return cls.from_conv(conv, rank), torch.randn(2, 6, 9, 8)


def _linear_layer():
    torch.manual_seed(0)
    return LowRankLinear.from_linear(nn.Linear(12, 7), rank=3), torch.randn(2, 12)


LAYERS = {
    "tucker2": lambda: _conv_layer(TuckerConv2d),
    "tt": lambda: _conv_layer(TTConv2d),
    "tt_tucker": lambda: _conv_layer(TTTuckerConv2d),
    "cp": lambda: _conv_layer(CPConv2d),
    "lowrank": _linear_layer,
}


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("execution", ["factorized", "reconstructed"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_every_layer_format_exports_exactly(tmp_path, layer, execution, fmt):
    module, x = LAYERS[layer]()
    module.execution = execution
    path = export_model(module, tmp_path / f"layer.{fmt}", fmt, example_input=x, check=False)
    assert path.is_file()
    # the example batch, one image, and a batch the graph was not traced at
    inputs = [x, x[:1], torch.randn(5, *x.shape[1:])]
    assert check_export(path, module, inputs, fmt) <= ATOL


@pytest.fixture(scope="module")
def compressed_resnet20():
    torch.manual_seed(0)
    model = get_model("resnet20").eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    small, report = compress_model(model, "tucker2", (8, 8))
    return small.eval(), report


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_compressed_resnet20_exports_exactly(tmp_path, compressed_resnet20, fmt):
    model, _ = compressed_resnet20
    x = torch.randn(4, 3, 32, 32)
    # export_model itself checks the file at batch 4 and 1 and raises beyond atol
    path = export_model(model, tmp_path / ("model" + SUFFIXES[fmt]), example_input=x, atol=ATOL)
    assert check_export(path, model, [x, torch.randn(3, 3, 32, 32)]) <= ATOL
    assert model.training is False


def test_fused_export_matches_the_unfused_model(tmp_path, compressed_resnet20):
    model, _ = compressed_resnet20
    path = export_model(model, tmp_path / "fused.pt2", fuse=True, input_size=(3, 32, 32))
    runtime = load_exported(path)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in runtime.modules())  # folded
    assert check_export(path, model, torch.randn(3, 3, 32, 32)) <= ATOL


def test_check_finds_a_different_model(tmp_path):
    module, x = LAYERS["tucker2"]()
    path = export_model(module, tmp_path / "m.pt2", example_input=x)
    other, _ = _conv_layer(TTConv2d)
    assert check_export(path, other, x) > 1e-3
    with pytest.raises(ExportMismatchError, match="differs from the eager model"):
        export_model(module, tmp_path / "m2.pt2", example_input=x, atol=-1.0)


def test_run_export_from_a_model_file(tmp_path, compressed_resnet20):
    model, report = compressed_resnet20
    model_file = save_model(tmp_path / "model.pt", model, arch="resnet20", num_classes=10,
                            compression={"method": "tucker2", "ranks": {r.name: r.rank for r in report.rows}})
    out = run_export(model_file, format="torchscript")
    assert out == tmp_path / "model.ts" and out.is_file()
    x = torch.randn(2, 3, 32, 32)
    assert check_export(out, model, x) <= ATOL
    runtime = load_exported(out)
    assert measure_latency(runtime, (3, 32, 32), batch_size=2, warmup=1, repeats=2)["median_ms"] > 0


@pytest.mark.parametrize("fmt", [_format("onnx")])
def test_onnxruntime_module_is_timed_by_measure_latency(tmp_path, fmt):
    module, x = LAYERS["cp"]()
    runtime = load_exported(export_model(module, tmp_path / f"cp.{fmt}", example_input=x))
    result = measure_latency(runtime, tuple(x.shape[1:]), batch_size=3, warmup=1, repeats=2)
    assert result["batch_size"] == 3 and result["median_ms"] > 0


def test_bad_arguments(tmp_path):
    module, x = LAYERS["tucker2"]()
    with pytest.raises(ValueError, match="`format` must be one of"):
        export_model(module, tmp_path / "m.onnx", "tflite", example_input=x)
    with pytest.raises(ValueError, match="suffix"):
        export_model(module, tmp_path / "m.bin", example_input=x)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        export_model(module, tmp_path / "m.pt2", input_size=(6, 9, 8), batch_size=0)
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.pt2")
    assert not any(tmp_path.iterdir())  # nothing half-written
