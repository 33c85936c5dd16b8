"""Parameter and MAC counts against closed-form formulas; latency returns sane numbers."""

import pytest
import torch
from torch import nn

from tuckerlab.metrics import count_macs, count_params, layer_macs, measure_latency


def conv_macs(out_hw, t, s_per_group, kh, kw):
    return out_hw[0] * out_hw[1] * t * s_per_group * kh * kw


@pytest.mark.parametrize(
    "conv, input_size, expected",
    [
        (nn.Conv2d(3, 16, 3, padding=1), (3, 32, 32), conv_macs((32, 32), 16, 3, 3, 3)),
        (nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), (3, 32, 32), conv_macs((16, 16), 16, 3, 3, 3)),
        (nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(0, 2)), (4, 9, 10), conv_macs((4, 10), 8, 4, 3, 5)),
        (nn.Conv2d(4, 8, 3, dilation=2), (4, 9, 10), conv_macs((5, 6), 8, 4, 3, 3)),
        (nn.Conv2d(16, 16, 3, padding=1, groups=16), (16, 8, 8), conv_macs((8, 8), 16, 1, 3, 3)),  # depthwise
        (nn.Conv2d(8, 12, 3, padding=1, groups=4), (8, 8, 8), conv_macs((8, 8), 12, 2, 3, 3)),  # grouped
        (nn.Conv2d(8, 4, 1), (8, 5, 5), conv_macs((5, 5), 4, 8, 1, 1)),
    ],
)
def test_conv_macs_by_formula(conv, input_size, expected):
    assert count_macs(conv, input_size) == expected


def test_linear_macs_and_params():
    lin = nn.Linear(20, 7)
    assert count_macs(lin, (20,)) == 140
    assert count_params(lin) == 147
    assert count_macs(nn.Linear(20, 7, bias=False), (20,)) == 140  # bias is never counted


def small_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 16*16*8*27 = 55296
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # 8*8*8*9 = 4608
        nn.Conv2d(8, 16, 1),  # 8*8*16*8 = 8192
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),  # 160
    )


def test_small_model_macs_and_layer_macs():
    model = small_model()
    expected = {"0": 55296, "1": 0, "2": 0, "3": 4608, "4": 8192, "5": 0, "6": 0, "7": 160}
    per_layer = layer_macs(model, (3, 16, 16))
    assert per_layer == expected
    assert list(per_layer) == list(expected)  # execution order
    assert count_macs(model, (3, 16, 16)) == sum(expected.values())


def test_layer_macs_names_are_qualified_and_shared_modules_summed():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))

        def forward(self, x):
            return self.block(self.block(x))

    assert layer_macs(Twice(), (4, 6, 6)) == {"block.0": 2 * 6 * 6 * 4 * 4 * 9}


def test_count_params():
    model = small_model()
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - model[0].weight.numel()
    shared = nn.Linear(3, 3)
    assert count_params(nn.Sequential(shared, shared)) == 12


def test_counting_restores_modes_and_uses_model_dtype():
    model = small_model().double().train()
    model[1].eval()
    count_macs(model, (3, 16, 16))
    layer_macs(model, (3, 16, 16))
    assert model.training and model[0].training and not model[1].training
    assert model[1].num_batches_tracked.item() == 0  # eval: running stats untouched


def test_measure_latency():
    model = small_model().train()
    result = measure_latency(model, (3, 16, 16), batch_size=2, warmup=1, repeats=5)
    for key in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "throughput"):
        assert result[key] > 0, key
    assert result["min_ms"] <= result["p10_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["batch_size"] == 2 and result["device"] == "cpu" and result["repeats"] == 5
    assert model.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, (3, 16, 16), repeats=0)


class _RecordsLayout(nn.Module):
    """A conv that records whether its input and weight arrive channels_last."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen = []

    def forward(self, x):
        cl = torch.channels_last
        self.seen.append((x.is_contiguous(memory_format=cl), self.conv.weight.is_contiguous(memory_format=cl)))
        return self.conv(x)


def test_measure_latency_memory_format():
    model = _RecordsLayout()
    result = measure_latency(model, (3, 8, 8), warmup=0, repeats=2)
    assert result["memory_format"] == "channels_last" and model.seen == [(True, True)] * 2
    assert model.conv.weight.is_contiguous()  # put back afterwards
    model.seen.clear()
    result = measure_latency(model, (3, 8, 8), warmup=0, repeats=1, memory_format=torch.contiguous_format)
    assert result["memory_format"] == "contiguous" and model.seen == [(False, False)]
    linear = measure_latency(nn.Linear(5, 2), (5,), repeats=1)
    assert linear["memory_format"] == "contiguous"  # not a 4-D input
    with pytest.raises(ValueError, match="`memory_format` must be one of"):
        measure_latency(model, (3, 8, 8), memory_format="nhwc")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_latency_cuda():
    result = measure_latency(small_model(), (3, 16, 16), device="cuda", warmup=1, repeats=3)
    assert result["device"].startswith("cuda") and result["median_ms"] > 0
