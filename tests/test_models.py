import pytest
import torch

from misleader.errors import UserError
from misleader.models import MODEL_NAMES, Generator, create_model
from misleader.models.generator import UpConv


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_order():
    assert MODEL_NAMES == (
        "lenet5", "lenet5half", "lenet5fifth", "resnet18_8x", "resnet34_8x", "mobilenet_v2", "densenet121",
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shape(name, in_channels, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


def test_exact_param_counts():
    assert n_params(create_model("lenet5", num_classes=10, in_channels=1)) == 61706
    assert n_params(create_model("resnet18_8x", num_classes=10, in_channels=3)) == 11173962


def test_lenet_variants_are_narrower():
    counts = [n_params(create_model(n, in_channels=3)) for n in ("lenet5", "lenet5half", "lenet5fifth")]
    assert counts[0] > counts[1] > counts[2]


def test_unknown_name_lists_valid_models():
    with pytest.raises(UserError) as err:
        create_model("vgg16")
    msg = str(err.value)
    assert "vgg16" in msg and "\n" not in msg
    for name in MODEL_NAMES:
        assert name in msg


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = create_model("resnet18_8x", in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("nc", [1, 3])
def test_generator_output(nc):
    torch.manual_seed(0)
    gen = Generator(nz=256, nc=nc)
    assert gen.nz == 256 and gen.nc == nc
    z = torch.randn(4, gen.nz)
    x = gen(z)
    assert x.shape == (4, nc, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    pre = gen(z, pre_x=True)
    assert pre.shape == x.shape
    assert pre.abs().max() > 1  # really before tanh: batch-normalized values exceed 1
    torch.testing.assert_close(torch.tanh(pre), x)


def test_generator_backward():
    torch.manual_seed(0)
    gen = Generator(nc=3)
    z = torch.randn(4, gen.nz, requires_grad=True)
    gen(z).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for name, p in gen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_upconv_fast_form_equals_upsample_then_conv(fmt):
    """The transposed-convolution form gives the same output and the same gradients (input, weight,
    bias) as interpolate-then-conv, on an odd-sized input with non-square shape, in both layouts."""
    torch.manual_seed(0)
    slow = UpConv(5, 7, fast=False)
    fast = UpConv(5, 7, fast=True)
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(3, 5, 6, 9).contiguous(memory_format=fmt)
    outs, grads = [], []
    for m in (slow, fast):
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        out.mul(torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out)
        grads.append((xi.grad, m.conv.weight.grad, m.conv.bias.grad))
    assert outs[1].shape == (3, 7, 12, 18)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for g_fast, g_slow in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-4)


def test_generator_channels_last_feature_maps_agree_with_contiguous():
    """memory_format=channels_last (what DFME passes under --channels_last 1) lays out every feature map and the
    image channels-last and changes nothing else: same images, same parameter gradients, up to float rounding."""
    torch.manual_seed(0)
    gen = Generator(nz=16, ngf=8, nc=3)
    z = torch.randn(5, 16)
    outs, grads = [], []
    for fmt in (torch.contiguous_format, torch.channels_last):
        gen.zero_grad()
        out = gen(z, memory_format=fmt)
        out.mul(torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in gen.parameters()])
    assert outs[1].is_contiguous(memory_format=torch.channels_last) and not outs[1].is_contiguous()
    assert outs[0].is_contiguous()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    scale = max(g.abs().max().item() for g in grads[0])  # a conv bias before batch norm: zero up to rounding
    for g_cl, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_cl, g_ref, rtol=1e-4, atol=1e-4 * scale)
