import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepgrad import activations
from deepgrad.models import MLP

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
    torch.testing.assert_close(act.module().to(torch.float64)(z), act(z))


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


def test_only_prelu_is_learnable():
    learnable = [n for n in ALL if activations.get(n).learnable]
    assert learnable == ["prelu"]
    for name in ALL:
        has_parameters = any(True for _ in activations.get(name).module().parameters())
        assert has_parameters == activations.get(name).learnable, name


def test_prelu_starts_at_pytorchs_default_slope():
    assert activations.PRELU_INIT == 0.25
    default = nn.PReLU()
    assert default.weight.item() == activations.PRELU_INIT
    module = activations.get("prelu").module()
    assert isinstance(module, nn.PReLU)
    assert module.weight.shape == (1,) and module.weight.item() == activations.PRELU_INIT


@pytest.mark.parametrize("slope", [0.0, 0.25, -0.3, 1.7])
def test_prelu_and_its_input_derivative_match_nn_prelu_for_any_slope(slope):
    module = nn.PReLU(init=slope).to(torch.float64)
    slope = module.weight.item()  # the float32 nearest the requested slope
    z = torch.cat([torch.randn(999, dtype=torch.float64) * 3, torch.zeros(1, dtype=torch.float64)])
    z.requires_grad_()
    out = module(z)
    (expected,) = torch.autograd.grad(out.sum(), z)
    torch.testing.assert_close(activations.prelu(z.detach(), slope), out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(activations.prelu_derivative(z.detach(), slope), expected, rtol=0, atol=0)


def test_prelu_with_one_slope_per_unit_broadcasts_like_nn_prelu():
    module = nn.PReLU(num_parameters=5).to(torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.0, 0.1, 0.25, -0.5, 2.0]))
    z = torch.randn(7, 5, dtype=torch.float64).requires_grad_()
    (expected,) = torch.autograd.grad(module(z).sum(), z)
    slope = module.weight.detach()
    torch.testing.assert_close(activations.prelu(z.detach(), slope), module(z).detach())
    torch.testing.assert_close(activations.prelu_derivative(z.detach(), slope), expected)


def test_mlp_with_prelu_has_one_learnable_slope_per_layer_that_training_moves():
    model = MLP(6, 3, width=8, depth=3, activation="prelu")
    slopes = [h.activation for h in model.hidden]
    assert all(isinstance(m, nn.PReLU) for m in slopes)
    assert len({id(m.weight) for m in slopes}) == 3  # not shared between layers
    params = {id(p) for p in model.parameters()}
    assert all(id(m.weight) in params for m in slopes)  # the optimiser sees them
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert all(m.weight.grad is not None and m.weight.grad.abs().item() > 0 for m in slopes)
        optimizer.step()
    assert all(abs(m.weight.item() - activations.PRELU_INIT) > 1e-4 for m in slopes)


EXPECTED_RANGES = {  # name: (range of f, range of f'), from the formulas
    "identity": ("(−∞, ∞)", "{1}"),
    "sigmoid": ("(0, 1)", "(0, 0.25]"),
    "tanh": ("(−1, 1)", "(0, 1]"),
    "relu": ("[0, ∞)", "{0, 1}"),
    "leaky_relu": ("(−∞, ∞)", "{0.01, 1}"),
    "prelu": ("(−∞, ∞)", "{0.25, 1}"),
    "elu": ("(−1, ∞)", "(0, 1]"),
    "selu": ("(−1.76, ∞)", "(0, 1.76]"),  # -λα and λα
    "silu": ("[−0.278, ∞)", "[−0.0998, 1.1]"),  # min z·σ(z) at z ≈ -1.278; f' extremes at ±2.40
    "gelu": ("[−0.17, ∞)", "[−0.129, 1.13]"),
    "softplus": ("(0, ∞)", "(0, 1)"),
}


def test_every_activation_has_an_expected_range():
    assert sorted(EXPECTED_RANGES) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_estimate_range_of_every_activation_and_its_derivative(name):
    act = activations.get(name)
    assert (activations.estimate_range(act.fn), activations.estimate_range(act.derivative)) == EXPECTED_RANGES[name]


@pytest.mark.parametrize("fn, expected", [
    (torch.exp, "(0, ∞)"),
    (lambda z: -(z**2), "(−∞, 0]"),
    (lambda z: torch.clamp(z, -1, 1), "[−1, 1]"),  # reached on whole half-lines: closed
    (lambda z: 2 + torch.tanh(z), "(1, 3)"),          # approached only: open
    (lambda z: torch.exp(-(z**2)), "(0, 1]"),
    (torch.sign, "{−1, 0, 1}"),
])
def test_estimate_range_distinguishes_open_closed_and_unbounded(fn, expected):
    assert activations.estimate_range(fn) == expected


def test_estimate_range_validates_its_arguments():
    with pytest.raises(ValueError, match="far must be > 0"):
        activations.estimate_range(torch.tanh, far=0.0)
    with pytest.raises(ValueError, match="points must be an int >= 3"):
        activations.estimate_range(torch.tanh, points=2)
