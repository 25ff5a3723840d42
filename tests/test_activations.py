import pytest
import torch

from deepgrad import activations

ALL = [n for n in activations.NAMES if n not in ("linear", "swish", "logistic")]


@pytest.mark.parametrize("name", ALL)
def test_derivative_matches_autograd(name):
    act = activations.get(name)
    z = (torch.randn(4000, dtype=torch.float64) * 4).requires_grad_()
    (expected,) = torch.autograd.grad(act(z).sum(), z)
    torch.testing.assert_close(act.derivative(z.detach()), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_module_matches_function(name):
    act = activations.get(name)
    z = torch.randn(100, dtype=torch.float64) * 3
    torch.testing.assert_close(act.module()(z), act(z))


@pytest.mark.parametrize("name", ALL)
def test_max_slope_is_the_supremum_of_the_derivative(name):
    act = activations.get(name)
    z = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    assert act.derivative(z).abs().max().item() == pytest.approx(act.max_slope, rel=1e-3)


def test_sigmoid_slope_bound_is_a_quarter_at_zero():
    act = activations.get("sigmoid")
    assert act.derivative(torch.zeros(1, dtype=torch.float64)).item() == 0.25


def test_relu_derivative_at_zero_follows_pytorch():
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    torch.relu(z).sum().backward()
    assert torch.equal(activations.get("relu").derivative(z.detach()), z.grad)


@pytest.mark.parametrize("alias, name", [("linear", "identity"), ("swish", "silu"), ("logistic", "sigmoid")])
def test_aliases(alias, name):
    assert activations.get(alias) is activations.get(name)


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"activation must be one of .*'sigmoid'.*'relu'"):
        activations.get("sigmod")


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError, match="activation must be a name"):
        activations.get(torch.nn.ReLU)
