"""Shortcuts where the width changes: zero-padding (option A) and projections (B, C) of He et al. (2016)."""

import math

import pytest
import torch
from torch import nn

from deepgrad.residual import (
    SHORTCUTS,
    PadShortcut,
    ProjectionBlock,
    ResidualBlock,
    StagedResidualMLP,
    block_input_gradients,
)

WIDTHS = [(3, 5), (5, 3), (4, 4)]  # widening, narrowing, equal


def _eval_block(block):
    """Float64, evaluation mode, batch-norm statistics that are not the identity (so they count)."""
    block = block.double().eval()
    with torch.no_grad():
        for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm1d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return block


def _jacobians(block, x):
    whole = torch.autograd.functional.jacobian(lambda v: block(v[None])[0], x)
    branch = torch.autograd.functional.jacobian(lambda v: block.branch(v[None])[0], x)
    return whole, branch


def _padding_matrix(n_out, n_in):
    """P built entry by entry: P[i, j] = 1 if i == j else 0."""
    return torch.tensor([[1.0 if i == j else 0.0 for j in range(n_in)] for i in range(n_out)],
                        dtype=torch.float64)


@pytest.mark.parametrize("n_in,n_out", WIDTHS)
@pytest.mark.parametrize("shortcut", ["pad", "projection"])
def test_pre_activation_jacobian_is_ws_plus_branch_jacobian(n_in, n_out, shortcut):
    """d(W_s x + F(x))/dx = W_s + J, with W_s read off the layer (or built by hand for padding)."""
    torch.manual_seed(0)
    block = _eval_block(ProjectionBlock(n_in, n_out, "pre", shortcut=shortcut))
    x = torch.randn(n_in, dtype=torch.float64)
    whole, branch = _jacobians(block, x)
    assert whole.shape == (n_out, n_in)
    w_s = _padding_matrix(n_out, n_in) if shortcut == "pad" else block.shortcut.weight.detach()
    torch.testing.assert_close(whole, w_s + branch)
    torch.testing.assert_close(block.shortcut_matrix(), w_s)
    # ... and W_s matters: the Jacobian is not the branch's alone, nor the identity's
    assert (whole - branch).abs().max() > 0.1
    if n_in == n_out and shortcut == "projection":
        assert (whole - (torch.eye(n_in, dtype=torch.float64) + branch)).abs().max() > 0.1


@pytest.mark.parametrize("n_in,n_out", WIDTHS)
@pytest.mark.parametrize("norm", [True, False])
def test_post_activation_projection_jacobian(n_in, n_out, norm):
    """relu(S x + F(x)): slopes × (S + J), S = W_s, or diag(γ / √(var + ε)) W_s with batch norm."""
    torch.manual_seed(1)
    block = _eval_block(ProjectionBlock(n_in, n_out, "post", shortcut="projection", norm=norm))
    x = torch.randn(n_in, dtype=torch.float64)
    whole, branch = _jacobians(block, x)
    linear = block.shortcut[0] if norm else block.shortcut
    w_s = linear.weight.detach()
    if norm:
        bn = block.shortcut[1]
        w_s = torch.diag(bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)) @ w_s
    total = block.shortcut(x[None])[0] + block.branch(x[None])[0]
    slopes = torch.diag((total > 0).double())
    torch.testing.assert_close(whole, slopes @ (w_s + branch))


def test_padding_keeps_the_input_on_the_kept_coordinates():
    x = torch.randn(7, 3, dtype=torch.float64)
    wide = PadShortcut(3, 5)(x)
    torch.testing.assert_close(wide[:, :3], x)
    assert torch.count_nonzero(wide[:, 3:]) == 0
    narrow = PadShortcut(3, 2)(x)
    torch.testing.assert_close(narrow, x[:, :2])
    torch.testing.assert_close(PadShortcut(3, 3)(x), x)
    # a zero-padding block: output = (x, 0) + F(x), exactly, on every coordinate
    block = ProjectionBlock(3, 5, "pre", shortcut="pad").double()
    out = block(x)
    torch.testing.assert_close(out[:, :3] - block.branch(x)[:, :3], x)
    torch.testing.assert_close(out[:, 3:], block.branch(x)[:, 3:])
    assert not list(block.shortcut.parameters())
    # singular values of P are all 1
    s = torch.linalg.svdvals(PadShortcut(3, 5).matrix(torch.float64))
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64))


def test_padding_gradient_drops_the_padded_coordinates():
    """Backward through P: the gradient of the kept coordinates passes unchanged, the others are dropped."""
    pad = PadShortcut(2, 4)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64)
    (pad(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, g[:, :2])


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("kind", ["pre", "post"])
def test_staged_network_structure(shortcut, kind):
    model = StagedResidualMLP(64, 10, widths=(4, 6, 6, 3), blocks=2, kind=kind, shortcut=shortcut)
    assert model(torch.randn(5, 64)).shape == (5, 10)
    assert model.n_layers == 2 * 8 + 2 == len(model.linear_layers())
    assert model.point_widths == [4, 4, 4, 6, 6, 6, 6, 3, 3]
    changes = [isinstance(b, ProjectionBlock) for b in model.blocks]
    if shortcut == "all-projections":
        assert all(changes)
    else:
        # a width change at the first block of stages 2 and 4 only (stage 3 keeps width 6)
        assert changes == [False, False, True, False, False, False, True, False]
        assert all(isinstance(b, ResidualBlock) for b in model.blocks)
    # zero-padding adds no parameter; projections add width_in × width_out each
    plain_count = sum(p.numel() for p in StagedResidualMLP(
        64, 10, widths=(4, 6, 6, 3), blocks=2, kind=kind, shortcut="pad").parameters())
    count = sum(p.numel() for p in model.parameters())
    extra = {"pad": 0, "projection": 4 * 6 + 6 * 3,
             "all-projections": 2 * 4 * 4 + 4 * 6 + 3 * 6 * 6 + 6 * 3 + 3 * 3}[shortcut]
    if kind == "post" and shortcut != "pad":  # batch norm after each projection: γ and β
        extra += 2 * sum(b.width for b in model.projection_blocks())
    assert count - plain_count == extra


def test_direct_path_is_the_product_of_the_shortcut_matrices():
    torch.manual_seed(2)
    model = StagedResidualMLP(8, 2, widths=(2, 3, 5), blocks=2, shortcut="projection").double()
    first, second = (b.shortcut.weight.detach() for b in model.projection_blocks())
    torch.testing.assert_close(model.direct_path(), second @ first)
    padded = StagedResidualMLP(8, 2, widths=(2, 3, 5), blocks=2, shortcut="pad").double()
    torch.testing.assert_close(padded.direct_path(), _padding_matrix(5, 2))


def test_block_input_gradients_through_width_changes():
    torch.manual_seed(3)
    model = StagedResidualMLP(6, 3, widths=(4, 8), blocks=2, shortcut="pad").double()
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    norms = block_input_gradients(model, x, y)
    assert len(norms) == len(model.point_widths) == 5
    assert all(math.isfinite(n) and n > 0 for n in norms)


def test_with_layers():
    model = StagedResidualMLP.with_layers(64, 10, 44, widths=(16, 32, 64))
    assert model.n_layers == 44 and len(model.blocks) == 21
    with pytest.raises(ValueError, match="layers"):
        StagedResidualMLP.with_layers(64, 10, 22, widths=(16, 32, 64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shortcut must be one of 'pad', 'projection', 'all-projections'"):
        StagedResidualMLP(4, 2, shortcut="B")
    with pytest.raises(ValueError, match="shortcut must be one of 'pad', 'projection'"):
        ProjectionBlock(3, 4, shortcut="all-projections")
    with pytest.raises(ValueError, match="kind must be one of 'post', 'pre'"):
        ProjectionBlock(3, 4, "plain")
    with pytest.raises(ValueError, match="kind"):
        StagedResidualMLP(4, 2, kind="plain")
    with pytest.raises(TypeError, match="widths"):
        StagedResidualMLP(4, 2, widths=())
    with pytest.raises(TypeError, match="widths"):
        StagedResidualMLP(4, 2, widths=16)
    with pytest.raises(ValueError, match="widths"):
        StagedResidualMLP(4, 2, widths=(16, 0))
    with pytest.raises(TypeError, match="widths"):
        StagedResidualMLP(4, 2, widths=(16, 2.5))
    for arg in ("in_features", "out_features"):
        with pytest.raises(ValueError, match=arg):
            ProjectionBlock(**{"in_features": 3, "out_features": 4, arg: 0})
        with pytest.raises(ValueError, match=arg):
            PadShortcut(**{"in_features": 3, "out_features": 4, arg: 0})
    with pytest.raises(ValueError, match="blocks"):
        StagedResidualMLP(4, 2, blocks=0)
    with pytest.raises(TypeError, match="norm"):
        StagedResidualMLP(4, 2, norm=1)


def test_all_projections_direct_path_depends_on_the_projections_initialisation():
    """Option C's direct path: orthogonal projections keep every singular value at one; PyTorch's
    default U(±1/√n) gives weights of variance 1/(3n), a mean squared singular value of about 1/3
    per square projection, so that the product of many of them vanishes."""
    import deepgrad as dg

    torch.manual_seed(0)
    model = StagedResidualMLP.with_layers(8, 2, 44, widths=(16, 32, 64), shortcut="all-projections")
    projections = model.projection_blocks()
    assert len(projections) == 21
    square = [b.shortcut.weight.detach().double() for b in projections if b.in_features == b.width]
    mean_square = [float((w ** 2).sum()) / w.shape[0] for w in square]   # ||W||_F² / n
    assert all(abs(m - 1 / 3) < 0.05 for m in mean_square), mean_square
    assert torch.linalg.svdvals(model.direct_path()).max() < 1e-3
    for block in projections:
        dg.init.orthogonal_(block.shortcut.weight)
    singular = torch.linalg.svdvals(model.direct_path())
    torch.testing.assert_close(singular, torch.ones(16, dtype=torch.float64), atol=1e-4, rtol=0)
