"""deepgrad.normfree: the residual stream's variance, SkipInit / ReZero / Fixup, adaptive gradient clipping
and scaled weight standardisation, each against a direct computation from its formula."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from deepgrad import normfree as nf
from deepgrad.train import History, Run


def test_stream_variance_is_geometric():
    assert nf.stream_variance(3) == [1.0, 2.0, 4.0, 8.0]
    assert nf.stream_variance(2, branch_gain=0.5, start=4.0) == [4.0, 6.0, 9.0]
    with pytest.raises(ValueError, match="branch_gain"):
        nf.stream_variance(3, branch_gain=-1.0)


def test_measured_stream_doubles_per_block_without_normalisation():
    torch.manual_seed(0)
    model = nf.NormFreeResNet(64, 10, width=256, blocks=8, method="none").double()
    x = torch.randn(2048, 64, dtype=torch.float64)
    h, variances = model.stem(x), []
    with torch.no_grad():
        variances.append(float(h.var()))
        for block in model.blocks:
            h = block(h)
            variances.append(float(h.var()))
    ratios = [b / a for a, b in zip(variances[:-1], variances[1:], strict=True)]
    assert all(1.6 < r < 2.4 for r in ratios), ratios


@pytest.mark.parametrize("method", ["skipinit", "rezero", "fixup"])
def test_the_fixes_start_every_block_as_identity_or_relu(method):
    torch.manual_seed(0)
    model = nf.NormFreeResNet(8, 3, width=16, blocks=5, method=method)
    x = torch.randn(32, 16)
    for block in model.blocks:
        expected = torch.relu(x) if method == "fixup" else x
        assert torch.equal(block(x), expected)


def test_fixup_initialisation_follows_its_rule():
    torch.manual_seed(0)
    blocks, width = 64, 256
    model = nf.NormFreeResNet(8, 3, width=width, blocks=blocks, method="fixup")
    first = torch.cat([b.linear1.weight.detach().flatten() for b in model.blocks])
    expected = math.sqrt(2 / width) * blocks ** (-1 / (2 * 2 - 2))
    assert abs(float(first.std()) / expected - 1) < 0.01
    assert all(not b.linear2.weight.any() for b in model.blocks)
    assert not model.output.weight.any() and not model.output.bias.any()
    assert all(b.linear1.bias is None and b.linear2.bias is None for b in model.blocks)
    # 5 scalars per block (4 biases, 1 multiplier) and the bias before the output layer
    assert len(model.scalars()) == 5 * blocks + 1
    assert torch.equal(model(torch.randn(4, 8)), torch.zeros(4, 3))


def test_parameter_groups_put_fixup_scalars_at_a_tenth_of_the_rate():
    model = nf.NormFreeResNet(8, 3, width=4, blocks=2, method="fixup")
    weights, scalars = nf.parameter_groups(model, 0.5)
    assert weights["lr"] == 0.5 and scalars["lr"] == pytest.approx(0.05)
    assert all(p.ndim == 0 for p in scalars["params"]) and all(p.ndim > 0 for p in weights["params"])
    assert len(weights["params"]) + len(scalars["params"]) == len(list(model.parameters()))
    skip = nf.NormFreeResNet(8, 3, width=4, blocks=2, method="skipinit")
    assert len(nf.parameter_groups(skip, 0.5)) == 1
    assert nf.parameter_groups(skip, 0.5, 0.1)[1]["lr"] == pytest.approx(0.05)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        nf.NormFreeResNet(8, 3, method="layernorm")
    with pytest.raises(ValueError, match="clip"):
        nf.train("skipinit", 0.1, 0, clip="value", steps=1)
    with pytest.raises(ValueError, match="clipping"):
        nf.AdaptiveClip(0.0)
    with pytest.raises(ValueError, match="same shape"):
        nf.adaptive_clipped(torch.ones(3, 2), torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="weight"):
        nf.scaled_standardized(torch.ones(3))
    with pytest.raises(ValueError, match="eps"):
        nf.scaled_standardized(torch.ones(3, 2), eps=0.0)
    for value in (None, 0.0, -1.0):  # a clipping rule needs a positive threshold
        with pytest.raises(ValueError, match="clip_value"):
            nf.train("skipinit", 0.1, 0, clip="norm", clip_value=value, blocks=2, width=4, steps=1)
    with pytest.raises(TypeError, match="calls"):
        nf.run_many([1.0])
    with pytest.raises(ValueError, match="module-level"):
        nf.run_many([lambda: 1.0], workers=2)


# --- adaptive gradient clipping ------------------------------------------------------------

def _agc_by_rows(weight, grad, clipping, eps):
    """AGC written row by row from Brock et al. (2021, eq. 3), in float64, with Python numbers."""
    out = grad.double().clone()
    for i in range(weight.shape[0]):
        w = math.sqrt(sum(float(v) ** 2 for v in weight[i].flatten()))
        g = math.sqrt(sum(float(v) ** 2 for v in grad[i].flatten()))
        w_star = max(w, eps)
        if g / w_star > clipping:
            out[i] = grad[i].double() * (clipping * w_star / g)
    return out


def test_unitwise_norm_is_over_rows_and_whole_for_vectors():
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(nf.unitwise_norm(w), torch.tensor([[5.0], [1.0], [math.sqrt(2)]]))
    assert float(nf.unitwise_norm(torch.tensor([3.0, 4.0]))) == pytest.approx(5.0)
    assert float(nf.unitwise_norm(torch.tensor(-2.0))) == pytest.approx(2.0)
    conv = torch.randn(4, 3, 2, 2)
    assert torch.allclose(nf.unitwise_norm(conv).flatten(), conv.flatten(1).norm(dim=1))


def test_adaptive_clipping_matches_the_formula_row_by_row():
    torch.manual_seed(0)
    weight = torch.randn(12, 7, dtype=torch.float64)
    weight[3] = 0.0                      # a zero row: ‖W_i‖⋆ = ε
    weight[5] *= 1e-4                    # a tiny row, also below ε
    grad = torch.randn(12, 7, dtype=torch.float64) * torch.logspace(-3, 1, 12, dtype=torch.float64)[:, None]
    clipped = nf.adaptive_clipped(weight, grad, clipping=0.05, eps=1e-3)
    expected = _agc_by_rows(weight, grad, 0.05, 1e-3)
    assert torch.allclose(clipped, expected, rtol=1e-12, atol=0)
    changed = (clipped != grad).any(dim=1)
    assert 0 < int(changed.sum()) < 12  # some rows clipped, some left alone: the test can fail both ways
    ratio = nf.unitwise_norm(clipped) / nf.unitwise_norm(weight).clamp(min=1e-3)
    assert float(ratio.max()) <= 0.05 * (1 + 1e-12)


def test_adaptive_clipping_of_a_bias_vector_clips_it_as_one_unit():
    # a 1-d parameter (a bias) is one unit: its whole norm against the whole gradient's
    bias = torch.tensor([3.0, 4.0], dtype=torch.float64)          # ‖b‖ = 5
    grad = torch.tensor([6.0, 8.0], dtype=torch.float64)          # ‖g‖ = 10 > λ‖b‖ = 1
    expected = _agc_by_rows(bias[None], grad[None], 0.2, 1e-3)[0]
    assert torch.allclose(nf.adaptive_clipped(bias, grad, 0.2), expected, rtol=1e-12, atol=0)
    assert torch.allclose(expected, torch.tensor([0.6, 0.8], dtype=torch.float64))
    small = torch.tensor([0.03, 0.04], dtype=torch.float64)       # ‖g‖ = 0.05 < 1: untouched
    assert torch.equal(nf.adaptive_clipped(bias, small, 0.2), small)
    zero = torch.zeros(2, dtype=torch.float64)                    # ‖b‖⋆ = ε
    assert torch.allclose(nf.adaptive_clipped(zero, grad, 0.2),
                          _agc_by_rows(zero[None], grad[None], 0.2, 1e-3)[0], rtol=1e-12, atol=0)


def test_adaptive_clip_callback_leaves_scalars_and_excluded_modules_alone():
    torch.manual_seed(0)
    model = nf.NormFreeResNet(8, 3, width=6, blocks=3, method="skipinit")
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 10
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    callback = nf.AdaptiveClip(0.01, exclude=[model.output])
    callback.after_backward(Run(model, torch.optim.SGD(model.parameters(), lr=0.1), History()))
    for name, p in model.named_parameters():
        if name.startswith("output") or p.ndim == 0:
            assert torch.equal(p.grad, before[name]), name
        else:
            assert torch.allclose(p.grad, nf.adaptive_clipped(weights[name], before[name], 0.01)), name
    assert not torch.equal(model.blocks[0].linear1.weight.grad, before["blocks.0.linear1.weight"])
    # without the exclusion, α = 0 has ‖α‖⋆ = ε and its gradient is cut to λε: α is all but frozen
    alpha = model.blocks[0].alpha
    alpha.grad = torch.tensor(3.0)
    nf.AdaptiveClip(0.01, exclude_scalars=False).after_backward(
        Run(model, torch.optim.SGD(model.parameters(), lr=0.1), History()))
    assert float(alpha.grad) == pytest.approx(0.01 * 1e-3)


# --- scaled weight standardisation ---------------------------------------------------------

def test_scaled_standardisation_matches_its_formula():
    torch.manual_seed(0)
    w = torch.randn(5, 9, dtype=torch.float64) * 3 + 1
    out = nf.scaled_standardized(w, gain=2.0)
    for i in range(5):
        row = [float(v) for v in w[i]]
        mean = sum(row) / 9
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / 9)
        expected = [2.0 * (v - mean) / (std * math.sqrt(9)) for v in row]
        assert torch.allclose(out[i], torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(out.mean(dim=1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose((out ** 2).sum(dim=1), torch.full((5,), 4.0, dtype=torch.float64))


def test_scaled_standardisation_of_a_constant_row_is_finite():
    w = torch.zeros(3, 4)
    w[1] = 2.0
    w[2] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = nf.scaled_standardized(w, gain=1.0)
    assert torch.equal(out[:2], torch.zeros(2, 4))                 # σ = 0: zeros, not NaN
    assert torch.allclose((out[2] ** 2).sum(), torch.tensor(1.0))  # a normal row is unchanged by ε
    layer = nf.ScaledStdLinear(4, 3)
    nn.init.zeros_(layer.weight)
    assert torch.isfinite(layer(torch.randn(2, 4))).all()


def test_scaled_standardisation_keeps_the_variance_of_a_deep_relu_stack():
    torch.manual_seed(0)
    layers = [nf.ScaledStdLinear(128, 128, bias=False) for _ in range(30)]
    for layer in layers:  # a weight distribution far from zero mean and the wrong scale
        nn.init.uniform_(layer.weight, 0.0, 1.0)
    h = torch.randn(4096, 128)
    with torch.no_grad():
        for layer in layers:
            h = layer(nf.RELU_GAMMA * torch.relu(h))
    assert 0.5 < float(h.var()) < 2.0
    assert nf.RELU_GAMMA == pytest.approx(1 / math.sqrt(0.5 * (1 - 1 / math.pi)))


def test_mean_last_reports_divergence():
    assert math.isnan(nf.mean_last(History(train_loss=[1.0, float("nan")], diverged_at=2)))
    assert nf.mean_last(History(train_loss=[3.0, 1.0, 2.0]), last=2) == 1.5


def test_a_short_run_trains_and_is_deterministic():
    a = nf.final_loss("skipinit", 0.03, 0, blocks=3, width=8, steps=5)
    b = nf.final_loss("skipinit", 0.03, 0, blocks=3, width=8, steps=5)
    assert a == b and math.isfinite(a)
    assert math.isnan(nf.final_loss("none", 0.1, 0, blocks=60, width=8, steps=5))
    with nf.Runs(1) as runs:  # the same values through the runner, batch after batch
        assert runs([functools.partial(nf.final_loss, "skipinit", 0.03, 0, blocks=3, width=8, steps=5)]) == [a]
        assert runs([functools.partial(nf.clip_final_loss, "agc", 0.01, 0.03, 0, blocks=3, width=8,
                                       steps=5)])[0] > 0
