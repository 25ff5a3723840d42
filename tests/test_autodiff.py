import pytest
import torch
import torch.nn.functional as F

import deepgrad as dg
from deepgrad import autodiff
from deepgrad.autodiff import Network

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "silu", "gelu", "identity"]


def _model(depth, activation, residual=False, width=7, bias=True):
    return dg.models.MLP(5, 3, width=width, depth=depth, activation=activation, residual=residual,
                         bias=bias).double()


def _autograd_grads(model, x, y, loss="cross_entropy"):
    model.zero_grad()
    out = model(x)
    value = F.cross_entropy(out, y) if loss == "cross_entropy" else F.mse_loss(out, y)
    value.backward()
    layers = model.linear_layers()
    return value, [l.weight.grad for l in layers], [None if l.bias is None else l.bias.grad for l in layers]


@pytest.mark.parametrize("depth", [1, 2, 5, 12])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("residual", [False, True])
def test_backprop_equals_autograd(depth, activation, residual):
    model = _model(depth, activation, residual)
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (11,))
    value, gw, gb = _autograd_grads(model, x, y)
    mine_value, grads = autodiff.backprop(Network.from_mlp(model), x, y)
    torch.testing.assert_close(mine_value, value.detach(), rtol=1e-13, atol=0)
    for mine, ref in zip(grads.weights + grads.biases, gw + gb, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-14)


def test_mse_backprop_equals_autograd():
    model = _model(4, "tanh")
    x = torch.randn(9, 5, dtype=torch.float64)
    y = torch.randn(9, 3, dtype=torch.float64)
    value, gw, gb = _autograd_grads(model, x, y, loss="mse")
    mine_value, grads = autodiff.backprop(Network.from_mlp(model), x, y, loss="mse")
    torch.testing.assert_close(mine_value, value.detach())
    for mine, ref in zip(grads.weights + grads.biases, gw + gb, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-14)


def test_without_biases():
    model = _model(3, "sigmoid", bias=False)
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    _, gw, _ = _autograd_grads(model, x, y)
    _, grads = autodiff.backprop(Network.from_mlp(model), x, y)
    assert grads.biases == [None] * 4
    for mine, ref in zip(grads.weights, gw, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("residual", [False, True])
def test_deltas_and_activation_grads_equal_autograd(residual):
    """δ^l = ∂L/∂z^l and ∂L/∂a^l, the back-propagated gradients, checked with retain_grad."""
    net = Network.from_mlp(_model(4, "tanh", residual))
    x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (8,))
    fp = autodiff.forward(net, x)
    for t in fp.pre_activations + fp.activations:
        t.retain_grad()
    F.cross_entropy(fp.output, y).backward()
    _, grads = autodiff.backprop(net, x.detach(), y)
    for mine, z in zip(grads.deltas, fp.pre_activations, strict=True):
        torch.testing.assert_close(mine, z.grad, rtol=1e-10, atol=1e-14)
    for mine, a in zip(grads.activation_grads, [x] + fp.activations, strict=True):
        torch.testing.assert_close(mine, a.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "gelu"])
def test_gradcheck_against_finite_differences(activation):
    """torch.autograd.gradcheck on the hand-written backward, wrapped as an autograd Function."""
    net = Network.from_mlp(_model(3, activation, residual=True, width=4))
    x0 = torch.randn(3, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (3,))

    class ManualLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *weights):
            candidate = Network(list(weights), net.biases, net.activation, net.residual)
            value, grads = autodiff.backprop(candidate, x0, y)
            ctx.grads = grads.weights
            return value

        @staticmethod
        def backward(ctx, grad_out):
            return tuple(grad_out * g for g in ctx.grads)

    weights = [w.clone().requires_grad_() for w in net.weights]
    assert torch.autograd.gradcheck(ManualLoss.apply, weights, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("residual", [False, True])
def test_product_of_layer_jacobians_is_the_input_output_jacobian(residual):
    net = Network.from_mlp(_model(5, "sigmoid", residual))
    x = torch.randn(4, 5, dtype=torch.float64)
    fp = autodiff.forward(net, x)
    product = torch.linalg.multi_dot(autodiff.layer_jacobians(net, fp, example=2)[::-1])
    expected = torch.autograd.functional.jacobian(lambda v: autodiff.forward(net, v[None]).output[0], x[2])
    torch.testing.assert_close(product, expected, rtol=1e-10, atol=1e-14)


def test_forward_matches_the_model():
    model = _model(3, "elu", residual=True)
    x = torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(autodiff.forward(Network.from_mlp(model), x).output, model(x))


def test_weight_norms_are_frobenius_norms():
    net = Network.from_mlp(_model(2, "relu"))
    _, grads = autodiff.backprop(net, torch.randn(5, 5, dtype=torch.float64), torch.randint(0, 3, (5,)))
    assert grads.weight_norms() == pytest.approx([g.pow(2).sum().sqrt().item() for g in grads.weights])


def test_create_from_tensors():
    w1, w2 = torch.randn(4, 2, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    net = Network.create([w1, w2], activation="tanh")
    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(autodiff.forward(net, x).output, torch.tanh(x @ w1.T) @ w2.T)


class TestBadArguments:
    def test_unknown_loss(self):
        net = Network.from_mlp(_model(1, "relu"))
        with pytest.raises(ValueError, match=r"loss must be one of 'cross_entropy', 'mse'"):
            autodiff.backprop(net, torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 1]), loss="l1")

    def test_wrong_input_width(self):
        net = Network.from_mlp(_model(1, "relu"))
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 5\)"):
            autodiff.forward(net, torch.randn(2, 4, dtype=torch.float64))

    def test_mismatched_layers(self):
        with pytest.raises(ValueError, match=r"weights\[1\] has 3 inputs but layer 1 has 4 outputs"):
            Network.create([torch.randn(4, 2), torch.randn(1, 3)])

    def test_residual_flags_count(self):
        with pytest.raises(ValueError, match="residual must have one flag per hidden layer"):
            Network.create([torch.randn(4, 2), torch.randn(1, 4)], residual=[True, False])

    def test_no_layers(self):
        with pytest.raises(ValueError, match="weights must hold at least one layer"):
            Network.create([])

    def test_bias_count(self):
        with pytest.raises(ValueError, match="biases must have one entry per layer"):
            Network.create([torch.randn(4, 2)], biases=[None, None])

    def test_normalised_mlp_is_refused(self):
        with pytest.raises(ValueError, match="from_mlp supports MLPs with norm=None"):
            Network.from_mlp(dg.models.MLP(5, 3, norm="batch"))

    def test_grad_output_shape(self):
        net = Network.from_mlp(_model(1, "relu"))
        fp = autodiff.forward(net, torch.randn(2, 5, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(2, 3\)"):
            autodiff.backward(net, fp, torch.ones(2, 2, dtype=torch.float64))

    def test_mse_target_shape(self):
        with pytest.raises(ValueError, match="targets must have the outputs' shape"):
            autodiff.mse(torch.zeros(2, 3), torch.zeros(2))

    def test_jacobian_example_out_of_range(self):
        net = Network.from_mlp(_model(1, "relu"))
        fp = autodiff.forward(net, torch.randn(2, 5, dtype=torch.float64))
        with pytest.raises(ValueError, match="example must index the batch of 2"):
            autodiff.layer_jacobians(net, fp, example=2)


def test_sgd_update_equals_torch_optim_sgd():
    model = _model(3, "sigmoid")
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    net = Network.from_mlp(model)
    for _ in range(5):
        _, grads = autodiff.backprop(net, x, y)
        net = autodiff.sgd_update(net, grads, lr=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for mine, layer in zip(net.weights, model.linear_layers(), strict=True):
        torch.testing.assert_close(mine, layer.weight.detach(), rtol=1e-12, atol=1e-14)


def test_sgd_update_rejects_a_negative_learning_rate():
    net = Network.from_mlp(_model(1, "relu"))
    _, grads = autodiff.backprop(net, torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.1"):
        autodiff.sgd_update(net, grads, lr=-0.1)


def test_from_mlp_refuses_learnable_activations():
    with pytest.raises(ValueError, match="'prelu' has learned parameters"):
        autodiff.Network.from_mlp(dg.models.MLP(4, 2, width=3, depth=2, activation="prelu"))
