"""Reference networks: shapes, sizes and costs against He et al. (2016) and the
VGG-16-BN numbers in PAPERS.md."""

import pytest
import torch
from torch import nn

from tuckerlab.metrics import count_macs
from tuckerlab.models import get_model, list_models

# (params, MACs per 32x32 image or None) as published; tolerance 2 %.
REFERENCE = {
    "resnet20": (0.27e6, 40.8e6),
    "resnet32": (0.46e6, 69.1e6),
    "resnet56": (0.85e6, 125.8e6),
    "resnet110": (1.7e6, None),
    "resnet18": (11.2e6, None),
    "vgg16": (15.25e6, 313.7e6),
}
ALL = list(REFERENCE)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_list_models():
    assert list_models() == ALL


@pytest.mark.parametrize("name", ALL)
def test_param_count(name):
    expected, _ = REFERENCE[name]
    assert n_params(get_model(name)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet56", "vgg16"])
def test_macs_per_image(name):
    _, expected = REFERENCE[name]
    # torch.utils.flop_counter FLOPs / 2, conv and linear layers
    assert count_macs(get_model(name), (3, 32, 32)) == pytest.approx(expected, rel=0.02)


def test_exact_sizes():
    # Option-A shortcuts: no parameters outside the 6n+1 convs, the BNs and fc.
    assert n_params(get_model("resnet20")) == 269_722
    assert n_params(get_model("resnet56")) == 853_018
    assert n_params(get_model("vgg16")) == 15_249_354
    assert n_params(get_model("vgg16", num_classes=100)) == 15_295_524


@pytest.mark.parametrize("name", ALL)
def test_forward_cifar(name):
    model = get_model(name, num_classes=100).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_forward_fashion_mnist(name):
    model = get_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert model.get_submodule("conv1" if name != "vgg16" else "features.conv1_1").in_channels == 1


def test_get_model_names():
    assert isinstance(get_model("vgg16_bn"), type(get_model("vgg16")))
    assert isinstance(get_model("ResNet20"), type(get_model("resnet20")))
    with pytest.raises(ValueError) as err:
        get_model("resnet21")
    for name in ALL:
        assert repr(name) in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_convs_are_plain_and_named(name):
    model = get_model(name)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(m.bias is None for m in convs.values())
    # every conv is followed by batch norm of matching width
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(convs)
    n3x3 = sum(m.kernel_size == (3, 3) for m in convs.values())
    expected = {"resnet20": 19, "resnet32": 31, "resnet56": 55, "resnet110": 109, "resnet18": 17}
    assert n3x3 == expected.get(name, 13)
    first = "features.conv1_1" if name == "vgg16" else "layer1.0.conv1"
    assert first in convs


def test_option_a_shortcut():
    model = get_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.kernel_size == (3, 3) for m in convs)
    block = model.layer2[0]
    x = torch.randn(2, 16, 32, 32)
    y = block.shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    # ResNet-18 uses 1x1 projections (option B) instead
    r18 = get_model("resnet18")
    assert isinstance(r18.layer2[0].shortcut[0], nn.Conv2d)
    assert r18.layer2[0].shortcut[0].kernel_size == (1, 1)


@pytest.mark.parametrize("name", ["resnet20", "vgg16"])
def test_channels_last(name):
    torch.manual_seed(0)
    model = get_model(name).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_backward_and_train_mode():
    model = get_model("resnet20")
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_kaiming_init_and_seed():
    torch.manual_seed(0)
    a = get_model("resnet56")
    torch.manual_seed(0)
    b = get_model("resnet56")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    w = a.layer3[1].conv1.weight  # 64 x 64 x 3 x 3, fan_out = 576
    assert w.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert torch.equal(a.layer3[1].bn1.weight, torch.ones(64))


def test_zero_init_residual():
    model = get_model("resnet20", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in model.layer1)
    model = get_model("resnet18", zero_init_residual=True)
    assert model.layer4[1].bn2.weight.abs().sum() == 0


# ---------------------------------------------------------------- torchvision models
def test_torchvision_models_by_name():
    import torchvision

    from tuckerlab.models import list_torchvision_models

    assert "resnet50" in list_torchvision_models() and "mobilenet_v2" in list_torchvision_models()
    torch.manual_seed(0)
    model = get_model("torchvision:resnet18", num_classes=10)
    assert isinstance(model, torchvision.models.ResNet)
    assert n_params(model) == n_params(torchvision.models.resnet18(num_classes=10))
    grey = get_model("torchvision:mobilenet_v2", num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert grey(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet5' \(did you mean .*'resnet50'"):
        get_model("torchvision:resnet5")
    with pytest.raises(ValueError, match="pretrained weights exist only for torchvision models"):
        get_model("resnet20", pretrained=True)
    with pytest.raises(ValueError, match="pretrained must be True, False or one of 'IMAGENET1K_V1', 'DEFAULT'"):
        get_model("torchvision:resnet18", pretrained="imagenet")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache and no network: downloads fail at once."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def test_pretrained_offline_says_which_file_to_put_where(torch_home):
    from tuckerlab.models import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match=r"resnet18 .*URLError.*network is unreachable.*"
                       r"https://download.pytorch.org/models/resnet18-f37072fd.pth to "
                       rf"{torch_home}/hub/checkpoints/resnet18-f37072fd.pth .*pretrained=False"):
        get_model("torchvision:resnet18", pretrained=True)


def test_pretrained_weights_from_the_cache_and_adapted(torch_home):
    """Weights already in torch's cache (as after a download) load; head and first conv adapt."""
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18()
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")

    same = get_model("torchvision:resnet18", num_classes=1000, pretrained=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    small = get_model("torchvision:resnet18", num_classes=10, in_channels=1, pretrained=True).eval()
    assert small.fc.weight.shape == (10, 512)  # a fresh classifier for 10 classes
    assert torch.equal(small.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    # the grey first convolution on a grey image = the RGB one on that image copied to 3 channels
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small.conv1(x), ref.conv1(x.expand(-1, 3, -1, -1)))
    # the architecture is the one get_model builds without weights (what load_model rebuilds)
    plain = get_model("torchvision:resnet18", num_classes=10, in_channels=1)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
