import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepgrad.residual import (
    KINDS,
    ResidualBlock,
    ResidualMLP,
    block_input_gradients,
    freeze_batch_statistics,
    gradient_correlations,
)


def _double(module):
    return module.to(torch.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_layer_count(kind):
    model = ResidualMLP(64, 10, width=16, blocks=3, kind=kind)
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert model.n_layers == 8 == len(model.linear_layers())
    sizes = [(layer.in_features, layer.out_features) for layer in model.linear_layers()]
    assert sizes == [(64, 16)] + [(16, 16)] * 6 + [(16, 10)]


@pytest.mark.parametrize("layers", [4, 8, 20, 56])
def test_with_layers_counts_like_he_et_al(layers):
    model = ResidualMLP.with_layers(3, 2, layers, width=4)
    assert model.n_layers == layers
    assert len(model.blocks) == (layers - 2) // 2


def test_post_activation_block_formula():
    block = _double(ResidualBlock(6, "post"))
    x = torch.randn(9, 6, dtype=torch.float64)
    bn1, bn2 = block.norm1, block.norm2
    assert isinstance(bn1, nn.BatchNorm1d) and isinstance(bn2, nn.BatchNorm1d)
    branch = bn2(block.linear2(torch.relu(bn1(block.linear1(x)))))
    # fresh copies of the statistics are irrelevant in training mode: batch statistics are used
    torch.testing.assert_close(block(x), torch.relu(x + branch))


def test_pre_activation_block_formula():
    block = _double(ResidualBlock(6, "pre"))
    x = torch.randn(9, 6, dtype=torch.float64)
    branch = block.linear2(torch.relu(block.norm2(block.linear1(torch.relu(block.norm1(x))))))
    torch.testing.assert_close(block(x), x + branch)


def test_plain_block_has_no_shortcut():
    block = _double(ResidualBlock(6, "plain"))
    assert not block.has_shortcut
    x = torch.randn(9, 6, dtype=torch.float64)
    torch.testing.assert_close(block(x), torch.relu(block.branch(x)))
    # the output does not depend on x except through the branch: zero the branch, get zero
    for layer in (block.linear1, block.linear2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    assert torch.count_nonzero(block(x)) == 0
    post = _double(ResidualBlock(6, "post"))
    assert post.has_shortcut


def test_plain_and_post_blocks_have_the_same_parameters():
    plain, post = ResidualBlock(6, "plain"), ResidualBlock(6, "post")
    assert [p.shape for p in plain.parameters()] == [p.shape for p in post.parameters()]


@pytest.mark.parametrize("kind", ["pre", "post"])
def test_scaled_shortcut_and_branch(kind):
    block = _double(ResidualBlock(5, kind, shortcut_scale=0.5, branch_scale=0.25))
    x = torch.randn(8, 5, dtype=torch.float64)
    unscaled = _double(ResidualBlock(5, kind))
    unscaled.load_state_dict(block.state_dict())
    f = unscaled.branch(x)
    torch.testing.assert_close(block.branch(x), 0.25 * f)
    total = 0.5 * x + 0.25 * f
    torch.testing.assert_close(block(x), torch.relu(total) if kind == "post" else total)


def test_rezero_starts_as_the_identity_and_learns_alpha():
    block = _double(ResidualBlock(5, "pre", norm=False, rezero=True))
    x = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), x)
    assert block.alpha.item() == 0
    block(x).pow(2).sum().backward()
    assert block.alpha.grad is not None and block.alpha.grad.abs() > 0
    # the branch's weights get no gradient while alpha is zero: only alpha moves first
    assert torch.count_nonzero(block.linear1.weight.grad) == 0
    # ... for one step only: once alpha has moved, the branch's weights get a gradient too
    with torch.no_grad():
        block.alpha -= 0.1 * block.alpha.grad
    block.zero_grad()
    block(x).pow(2).sum().backward()
    assert block.alpha.item() != 0
    assert torch.count_nonzero(block.linear1.weight.grad) > 0
    assert torch.count_nonzero(block.linear2.weight.grad) > 0


def test_norm_false_has_no_batch_norm():
    model = ResidualMLP(4, 2, width=6, blocks=2, kind="pre", norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    model = ResidualMLP(4, 2, width=6, blocks=2, kind="post")
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 5


@pytest.mark.parametrize("kind", ["pre", "post"])
def test_jacobian_is_identity_plus_branch_jacobian(kind):
    """The identity the chapter derives: d(x + F(x))/dx = I + dF/dx (times relu' for 'post')."""
    block = _double(ResidualBlock(5, kind))
    block.eval()  # batch norm with fixed statistics: each example's output depends on it alone
    with torch.no_grad():
        for bn in (block.norm1, block.norm2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, dtype=torch.float64)
    whole = torch.autograd.functional.jacobian(lambda v: block(v[None])[0], x)
    branch = torch.autograd.functional.jacobian(lambda v: block.branch(v[None])[0], x)
    expected = torch.eye(5, dtype=torch.float64) + branch
    if kind == "post":
        slopes = (x + block.branch(x[None])[0] > 0).double()
        expected = torch.diag(slopes) @ expected
    torch.testing.assert_close(whole, expected)
    # ... and it is not the branch's Jacobian alone
    assert (whole - branch).abs().max() > 0.1


def test_jacobian_over_a_batch_in_training_mode():
    """With batch norm in training mode the examples are coupled; I + dF/dX still holds for the batch."""
    block = _double(ResidualBlock(3, "pre"))
    x = torch.randn(4, 3, dtype=torch.float64)
    whole = torch.autograd.functional.jacobian(block, x).reshape(12, 12)
    branch = torch.autograd.functional.jacobian(block.branch, x).reshape(12, 12)
    torch.testing.assert_close(whole, torch.eye(12, dtype=torch.float64) + branch)


def test_gradcheck_of_blocks():
    for kind in KINDS:
        block = _double(ResidualBlock(3, kind, norm=False))
        x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(block, (x,))


def test_block_input_gradients_match_autograd():
    torch.manual_seed(1)
    model = _double(ResidualMLP(6, 3, width=5, blocks=3, kind="pre"))
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    norms = block_input_gradients(model, x, y)
    assert len(norms) == 4
    # independent: recompute the block inputs by hand and differentiate
    h = model.stem(x)
    points = []
    for block in model.blocks:
        points.append(h)
        h = block(h)
    points.append(h)
    loss = F.cross_entropy(model.output(torch.relu(model.final_norm(h))), y)
    expected = [g.norm().item() for g in torch.autograd.grad(loss, points)]
    assert norms == pytest.approx(expected, rel=1e-10)
    # parameters' gradients are left alone
    assert all(p.grad is None for p in model.parameters())


def test_block_input_gradients_of_a_residual_stack_never_drop_below_the_shortcut():
    """Pre-activation blocks with tiny branches: the gradient at every block is the top one."""
    model = _double(ResidualMLP(6, 3, width=5, blocks=4, kind="pre", norm=False))
    for block in model.blocks:
        block.linear2.weight.data.mul_(1e-6)
        block.linear2.bias.data.mul_(1e-6)
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    norms = block_input_gradients(model, x, y)
    assert max(norms) / min(norms) == pytest.approx(1, abs=1e-4)


def test_freeze_batch_statistics():
    model = _double(ResidualMLP(2, 1, width=4, blocks=2, kind="post"))
    x = torch.randn(50, 2, dtype=torch.float64)
    in_train = model(x).detach()
    freeze_batch_statistics(model, x)
    assert not model.training
    # eval mode now normalises with x's own (biased-for-output) statistics: the same outputs up to the
    # unbiased-variance correction n/(n-1) that running_var stores
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
        bn.running_var.mul_(49 / 50)
    torch.testing.assert_close(model(x), in_train)


def test_gradient_correlations_of_smooth_and_rough_functions():
    grid = torch.linspace(-1, 1, 200, dtype=torch.float64)[:, None]
    smooth = gradient_correlations(lambda v: torch.sin(v), grid)
    assert smooth.item() > 0.99
    noise = torch.randn(200, dtype=torch.float64)
    rough = gradient_correlations(lambda v: v * noise[:, None], grid)
    assert abs(rough.item()) < 0.2
    # several input dimensions: one correlation per neighbouring pair
    points = torch.randn(7, 3, dtype=torch.float64)
    same = gradient_correlations(lambda v: (v * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)), points)
    assert same.shape == (6,)
    torch.testing.assert_close(same, torch.ones(6, dtype=torch.float64))


class TestBadArguments:
    def test_kind(self):
        with pytest.raises(ValueError, match="kind must be one of 'post', 'pre', 'plain'"):
            ResidualBlock(4, "resnet")
        with pytest.raises(ValueError, match="kind"):
            ResidualMLP(4, 2, kind="highway")

    @pytest.mark.parametrize("arg", ["width", "blocks", "in_features", "out_features"])
    def test_sizes(self, arg):
        kwargs = {"in_features": 4, "out_features": 2, "width": 3, "blocks": 2, arg: 0}
        with pytest.raises(ValueError, match=arg):
            ResidualMLP(**kwargs)
        kwargs[arg] = 2.5
        with pytest.raises(TypeError, match=arg):
            ResidualMLP(**kwargs)

    def test_scales(self):
        with pytest.raises(ValueError, match="shortcut_scale"):
            ResidualBlock(4, shortcut_scale=-1.0)
        with pytest.raises(ValueError, match="branch_scale"):
            ResidualBlock(4, branch_scale=math.inf)
        with pytest.raises(TypeError, match="shortcut_scale"):
            ResidualBlock(4, shortcut_scale="half")

    def test_plain_block_refuses_shortcut_knobs(self):
        for kwargs in ({"shortcut_scale": 0.5}, {"branch_scale": 0.5}, {"rezero": True}):
            with pytest.raises(ValueError, match="plain"):
                ResidualBlock(4, "plain", **kwargs)

    def test_flags(self):
        with pytest.raises(TypeError, match="norm"):
            ResidualBlock(4, norm=1)
        with pytest.raises(TypeError, match="rezero"):
            ResidualMLP(4, 2, rezero="yes")

    def test_with_layers(self):
        with pytest.raises(ValueError, match="even"):
            ResidualMLP.with_layers(4, 2, 9)
        with pytest.raises(ValueError, match="layers"):
            ResidualMLP.with_layers(4, 2, 2)

    def test_helpers(self):
        with pytest.raises(TypeError, match="ResidualMLP"):
            block_input_gradients(nn.Linear(2, 2), torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
        with pytest.raises(ValueError, match="points"):
            gradient_correlations(nn.Linear(1, 1), torch.randn(2, 1))
        with pytest.raises(ValueError, match="points"):
            gradient_correlations(nn.Linear(1, 1), torch.randn(5))
        with pytest.raises(TypeError, match="model"):
            freeze_batch_statistics("net", torch.randn(3, 2))


def _stack_signals(model, x):
    """The signals x_l entering every block and leaving the last one, recomputed by hand."""
    h = model.stem(x)
    signals = [h]
    for block in model.blocks:
        h = block(h)
        signals.append(h)
    return signals


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_unrolled_form(scale):
    """x_L = λ^(L-l) x_l + Σ_k λ^(L-1-k) μ F_k(x_k), the identity-mappings unrolling."""
    model = _double(ResidualMLP(4, 2, width=5, blocks=5, kind="pre", shortcut_scale=scale,
                                branch_scale=0.7))
    x = torch.randn(6, 4, dtype=torch.float64)
    signals = _stack_signals(model, x)
    top, n = signals[-1], len(model.blocks)
    for l in range(n):
        total = scale ** (n - l) * signals[l]
        for k in range(l, n):
            total = total + scale ** (n - 1 - k) * model.blocks[k].branch(signals[k])
        torch.testing.assert_close(total, top)


@pytest.mark.parametrize("kind", ["pre", "plain"])
def test_gradient_bounds_of_the_proposition(kind):
    """(1-ε)^(L-l) ||g_L|| <= ||g_l|| <= (1+ε)^(L-l) ||g_L|| for residual stacks, ||g_l|| <= ε^(L-l) ||g_L||
    for plain ones, with ε the largest spectral norm of a branch Jacobian (one example)."""
    torch.manual_seed(3)
    model = _double(ResidualMLP(4, 3, width=6, blocks=6, kind=kind, norm=False))
    for block in model.blocks:
        block.linear2.weight.data.mul_(0.3)
    x = torch.randn(1, 4, dtype=torch.float64)
    signals = _stack_signals(model, x)
    eps = max(
        torch.linalg.matrix_norm(
            torch.autograd.functional.jacobian(lambda v, b=block: b.branch(v[None])[0], h[0]), ord=2).item()
        for block, h in zip(model.blocks, signals, strict=False)
    )
    assert 0 < eps < 1
    # any linear functional of the top signal as the loss: g_L = c
    c = torch.randn(6, dtype=torch.float64)
    points = [h.detach().requires_grad_(True) for h in signals[:-1]]
    g_top = c.norm().item()
    for l, start in enumerate(points):
        h = start
        for block in model.blocks[l:]:
            h = block(h)
        (g,) = torch.autograd.grad((h[0] * c).sum(), start)
        depth = len(model.blocks) - l
        norm = g.norm().item()
        if kind == "pre":
            assert (1 - eps) ** depth * g_top * (1 - 1e-12) <= norm <= (1 + eps) ** depth * g_top * (1 + 1e-12)
        else:
            # the plain block ends in a ReLU, whose slopes are at most 1: the bound still holds
            assert norm <= eps ** depth * g_top * (1 + 1e-12)
