import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepgrad import normalization as norm
from deepgrad.normalization import BatchNorm, NoisyBatchNorm

SHAPES = [(2, 1), (2, 5), (3, 4), (16, 7), (64, 3)]
f64 = torch.float64


def _params(c):
    gamma = torch.rand(c, dtype=f64) + 0.5
    beta = torch.randn(c, dtype=f64)
    return gamma, beta


def _reference(c, gamma, beta, momentum=0.1):
    ref = nn.BatchNorm1d(c, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(gamma)
        ref.bias.copy_(beta)
    return ref


def _pair(c, momentum=0.1, affine=True):
    """A BatchNorm and an nn.BatchNorm1d with the same (random) γ and β."""
    mine = BatchNorm(c, momentum=momentum, affine=affine).double()
    ref = nn.BatchNorm1d(c, momentum=momentum, affine=affine).double()
    if affine:
        gamma, beta = _params(c)
        for m in (mine, ref):
            with torch.no_grad():
                m.weight.copy_(gamma)
                m.bias.copy_(beta)
    return mine, ref


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_batchnorm1d(shape):
    x = 3 * torch.randn(*shape, dtype=f64) + 2
    gamma, beta = _params(shape[1])
    y, cache = norm.batch_norm_forward(x, gamma, beta)
    expected = _reference(shape[1], gamma, beta)(x)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(cache.mean, x.mean(0), rtol=0, atol=1e-13)


def test_forward_constant_column_gives_beta():
    x = torch.randn(6, 3, dtype=f64)
    x[:, 1] = 4.2
    gamma, beta = _params(3)
    y, _ = norm.batch_norm_forward(x, gamma, beta)
    torch.testing.assert_close(y, _reference(3, gamma, beta)(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(y[:, 1], beta[1].expand(6), rtol=0, atol=1e-12)


def test_output_mean_is_beta_and_std_is_gamma_not_zero_and_one():
    # coverage item 21: batch norm does not leave outputs at mean 0, std 1; γ and β set them.
    x = torch.randn(500, 4, dtype=f64) * 7 - 3
    gamma = torch.tensor([0.5, 2.0, 3.0, 1.0], dtype=f64)
    beta = torch.tensor([-1.0, 0.0, 5.0, 2.0], dtype=f64)
    y, _ = norm.batch_norm_forward(x, gamma, beta)
    torch.testing.assert_close(y.mean(0), beta, rtol=0, atol=1e-12)
    torch.testing.assert_close(y.std(0, unbiased=False), gamma, rtol=1e-6, atol=0)


def test_forward_uses_biased_variance():
    # With the unbiased variance the forward pass would be off by a factor √((N−1)/N): visibly wrong.
    x = torch.randn(4, 3, dtype=f64)
    ones, zeros = torch.ones(3, dtype=f64), torch.zeros(3, dtype=f64)
    y, _ = norm.batch_norm_forward(x, ones, zeros, eps=1e-12)
    wrong = (x - x.mean(0)) / x.std(0, unbiased=True)
    assert (y - wrong).abs().max() > 0.05
    torch.testing.assert_close(y, (x - x.mean(0)) / x.std(0, unbiased=False), rtol=1e-9, atol=0)


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd_of_batchnorm1d(shape):
    x = torch.randn(*shape, dtype=f64)
    if shape[1] > 2:
        x[:, 2] = -1.5  # a constant column
    gamma, beta = _params(shape[1])
    dy = torch.randn(*shape, dtype=f64)
    ref = _reference(shape[1], gamma, beta)
    xr = x.clone().requires_grad_(True)
    ref(xr).backward(dy)
    _, cache = norm.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = norm.batch_norm_backward(dy, cache)
    torch.testing.assert_close(dx, xr.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dgamma, ref.weight.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dbeta, ref.bias.grad, rtol=1e-10, atol=1e-10)


def test_naive_backward_ignoring_batch_statistics_is_wrong():
    # The mean(dy) and x̂·mean(dy·x̂) terms come from μ and σ² depending on x: dropping them is detectably wrong.
    x, dy = torch.randn(8, 3, dtype=f64), torch.randn(8, 3, dtype=f64)
    gamma, beta = _params(3)
    _, cache = norm.batch_norm_forward(x, gamma, beta)
    dx, _, _ = norm.batch_norm_backward(dy, cache)
    naive = gamma * cache.inv_std * dy
    assert (dx - naive).abs().max() > 1e-2
    # The true dx sums to zero over the batch in each column (shifting a column does not change y).
    torch.testing.assert_close(dx.sum(0), torch.zeros(3, dtype=f64), rtol=0, atol=1e-12)


def test_gradcheck_through_the_hand_written_backward():
    x = torch.randn(5, 3, dtype=f64, requires_grad=True)
    gamma = (torch.rand(3, dtype=f64) + 0.5).requires_grad_(True)
    beta = torch.randn(3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: norm.batch_norm_train(*a)[0], (x, gamma, beta))
    module = BatchNorm(3).double()
    assert torch.autograd.gradcheck(module, (x,))
    assert module(x).grad_fn.name().startswith("BatchNormFunction")  # the hand-written backward, not autograd's


def test_module_gradients_match_batchnorm1d():
    mine, ref = _pair(4)
    x = torch.randn(10, 4, dtype=f64)
    dy = torch.randn(10, 4, dtype=f64)
    xm, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    mine(xm).backward(dy)
    ref(xr).backward(dy)
    for a, b in [(xm.grad, xr.grad), (mine.weight.grad, ref.weight.grad), (mine.bias.grad, ref.bias.grad)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_backward_rejects_wrong_shape():
    _, cache = norm.batch_norm_forward(torch.randn(4, 3, dtype=f64), *_params(3))
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(4, 3\)"):
        norm.batch_norm_backward(torch.randn(4, 2, dtype=f64), cache)


# ---------------------------------------------------------------- running statistics and eval mode


@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0, 1.0, None])
@pytest.mark.parametrize("affine", [True, False])
def test_running_stats_and_eval_match_batchnorm1d(momentum, affine):
    mine, ref = _pair(3, momentum=momentum, affine=affine)
    for n in [2, 5, 9, 4]:
        x = torch.randn(n, 3, dtype=f64) * 2 + 1
        torch.testing.assert_close(mine(x), ref(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(mine.running_mean, ref.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(mine.running_var, ref.running_var, rtol=0, atol=1e-12)
    assert int(mine.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    mine.eval()
    ref.eval()
    x = torch.randn(6, 3, dtype=f64)
    torch.testing.assert_close(mine(x), ref(x), rtol=0, atol=1e-12)
    one = torch.randn(1, 3, dtype=f64)  # a single example is fine in eval mode
    torch.testing.assert_close(mine(one), ref(one), rtol=0, atol=1e-12)


def test_running_variance_is_unbiased():
    x = torch.randn(4, 2, dtype=f64)
    mine = BatchNorm(2, momentum=1.0).double()
    mine(x)
    torch.testing.assert_close(mine.running_var, x.var(0, unbiased=True), rtol=1e-12, atol=0)
    assert (mine.running_var - x.var(0, unbiased=False)).abs().min() > 1e-3  # the N/(N−1) factor matters


def test_momentum_weighs_the_new_value():
    # PyTorch's momentum is the weight of the *new* batch statistic: after one batch with momentum 0.1
    # the running mean is 0.9·0 + 0.1·μ, not 0.1·0 + 0.9·μ.
    x = torch.randn(8, 2, dtype=f64) + 5
    mine = BatchNorm(2, momentum=0.1).double()
    mine(x)
    torch.testing.assert_close(mine.running_mean, 0.1 * x.mean(0), rtol=1e-12, atol=0)
    new_mean, new_var = norm.update_running_stats(torch.zeros(2), torch.ones(2), torch.full((2,), 4.0),
                                                  torch.full((2,), 3.0), batch_size=4, momentum=0.25)
    torch.testing.assert_close(new_mean, torch.full((2,), 1.0))
    torch.testing.assert_close(new_var, torch.full((2,), 0.75 + 0.25 * 4.0))


def test_cumulative_average_with_momentum_none():
    batches = [torch.randn(n, 2, dtype=f64) for n in (3, 5, 7)]
    mine = BatchNorm(2, momentum=None).double()
    for x in batches:
        mine(x)
    torch.testing.assert_close(mine.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(mine.running_var, torch.stack([x.var(0) for x in batches]).mean(0),
                               rtol=1e-12, atol=0)


def test_eval_function_formula():
    x = torch.randn(5, 3, dtype=f64)
    rm, rv = torch.randn(3, dtype=f64), torch.rand(3, dtype=f64) + 0.1
    gamma, beta = _params(3)
    expected = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    torch.testing.assert_close(norm.batch_norm_eval(x, rm, rv, gamma, beta), expected, rtol=0, atol=1e-12)


def test_state_dict_loads_both_ways():
    mine, ref = _pair(3)
    ref(torch.randn(6, 3, dtype=f64))
    mine.load_state_dict(ref.state_dict())
    torch.testing.assert_close(mine.running_var, ref.running_var)
    ref2 = nn.BatchNorm1d(3).double()
    ref2.load_state_dict(mine.state_dict())
    x = torch.randn(4, 3, dtype=f64)
    torch.testing.assert_close(mine.eval()(x), ref2.eval()(x), rtol=0, atol=1e-12)


def test_drop_in_inside_sequential_trains_like_batchnorm1d():
    def net(bn):
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(6, 16), bn(16), nn.ReLU(), nn.Linear(16, 3)).double()

    x = torch.randn(32, 6, dtype=f64)
    y = torch.randint(0, 3, (32,))
    histories = []
    for bn in (BatchNorm, nn.BatchNorm1d):
        model = net(bn)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        losses.append(F.cross_entropy(model(x), y).item())
        histories.append(losses)
    mine, ref = histories
    assert mine[39] < 0.7 * mine[0]
    assert mine == pytest.approx(ref, rel=1e-9, abs=0)


# ---------------------------------------------------------------- layer norm


@pytest.mark.parametrize("shape", [(1, 5), (4, 3), (2, 3, 6), (7,)])
def test_layer_norm_matches_functional(shape):
    x = torch.randn(*shape, dtype=f64) * 3 + 1
    gamma, beta = _params(shape[-1])
    expected = F.layer_norm(x, (shape[-1],), gamma, beta, eps=1e-5)
    torch.testing.assert_close(norm.layer_norm_forward(x, gamma, beta), expected, rtol=0, atol=1e-12)


def test_layer_norm_is_per_example_batch_norm_is_not():
    x = torch.randn(6, 4, dtype=f64)
    gamma, beta = _params(4)
    y_ln = norm.layer_norm_forward(x, gamma, beta)
    torch.testing.assert_close(norm.layer_norm_forward(x[:1], gamma, beta), y_ln[:1])  # independent of the batch
    y_bn, _ = norm.batch_norm_forward(x, gamma, beta)
    y_bn_half, _ = norm.batch_norm_forward(x[:3], gamma, beta)
    assert (y_bn[:3] - y_bn_half).abs().max() > 1e-3  # batch norm's output depends on the rest of the batch


# ---------------------------------------------------------------- noisy batch norm


def _noisy(seed, **kwargs):
    g = torch.Generator().manual_seed(seed)
    return NoisyBatchNorm(3, generator=g, **kwargs).double()


def test_noisy_batch_norm_differs_in_training_and_is_deterministic():
    x = torch.randn(8, 3, dtype=f64)
    a, b, c = _noisy(3), _noisy(3), _noisy(4)
    plain = BatchNorm(3).double()
    ya, yb, yc, yp = a(x), b(x), c(x), plain(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    assert (ya - yc).abs().max() > 1e-3
    assert (ya - yp).abs().max() > 1e-3
    torch.testing.assert_close(ya, yp * a.last_scale + a.last_shift, rtol=0, atol=1e-12)
    assert ((a.last_scale >= 0.5) & (a.last_scale <= 1.5)).all()
    assert (a.last_shift.abs() <= 0.5).all()
    scale = a.last_scale.clone()
    assert (a(x) - ya).abs().max() > 1e-3 and not torch.equal(a.last_scale, scale)  # redrawn every step


def test_noisy_batch_norm_is_batch_norm_in_eval_and_without_noise():
    x = torch.randn(8, 3, dtype=f64)
    noisy, plain = _noisy(0), BatchNorm(3).double()
    for _ in range(3):
        noisy(x)
        plain(x)
    torch.testing.assert_close(noisy.running_var, plain.running_var, rtol=0, atol=1e-12)  # noise is after BN
    noisy.eval()
    plain.eval()
    z = torch.randn(5, 3, dtype=f64)
    torch.testing.assert_close(noisy(z), plain(z), rtol=0, atol=0)
    quiet = _noisy(0, scale_noise=0.0, shift_noise=0.0)
    torch.testing.assert_close(quiet(x), BatchNorm(3).double()(x), rtol=0, atol=0)


def test_noisy_batch_norm_gradients_flow():
    layer = _noisy(0)
    x = torch.randn(6, 3, dtype=f64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert x.grad is not None and layer.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_features": 0}, ValueError, r"num_features must be an int >= 1"),
    ({"num_features": 2.0}, TypeError, r"num_features must be an int"),
    ({"num_features": 3, "eps": 0.0}, ValueError, r"eps must be a finite number > 0"),
    ({"num_features": 3, "eps": -1e-5}, ValueError, r"eps must be a finite number >= 0"),
    ({"num_features": 3, "momentum": 1.5}, ValueError, r"momentum must be in \[0, 1\]"),
    ({"num_features": 3, "momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\]"),
    ({"num_features": 3, "affine": 1}, TypeError, r"affine must be True or False"),
])
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        BatchNorm(**kwargs)


def test_noisy_constructor_errors():
    with pytest.raises(ValueError, match=r"scale_noise must be in \[0, 1\)"):
        NoisyBatchNorm(3, scale_noise=1.0)
    with pytest.raises(ValueError, match=r"shift_noise must be a finite number >= 0"):
        NoisyBatchNorm(3, shift_noise=-1.0)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator"):
        NoisyBatchNorm(3, generator=0)


def test_input_errors():
    layer = BatchNorm(3).double()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(4, 2\)"):
        layer(torch.randn(4, 2, dtype=f64))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(4, 3, 2\)"):
        layer(torch.randn(4, 3, 2, dtype=f64))
    with pytest.raises(ValueError, match=r"more than 1 example per feature.*N − 1 = 0"):
        layer(torch.randn(1, 3, dtype=f64))
    with pytest.raises(ValueError, match=r"more than 1 example"):
        norm.batch_norm_forward(torch.randn(1, 3, dtype=f64), *_params(3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        norm.batch_norm_forward(torch.randn(4, 3, dtype=f64), torch.ones(2, dtype=f64), torch.zeros(3, dtype=f64))
    with pytest.raises(ValueError, match=r"beta must have shape \(5,\)"):
        norm.layer_norm_forward(torch.randn(4, 5, dtype=f64), torch.ones(5, dtype=f64), torch.zeros(3, dtype=f64))
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        norm.layer_norm_forward(torch.randn(4, 5, dtype=f64), *_params(5), eps=0)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 2"):
        norm.update_running_stats(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2), batch_size=1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        norm.update_running_stats(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2), 4, momentum=2.0)


# ---------------------------------------------------------------- scale invariance, tiny batches


@pytest.mark.parametrize("a", [1e-3, 0.5, 7.0, 1e3])
def test_batch_norm_of_a_scaled_layer_is_unchanged_and_its_weight_gradient_scales_by_1_over_a(a):
    """BN(x (aW)^T) = BN(x W^T) (up to eps), and dL/d(aW) = (1/a) dL/dW: checked with autograd."""
    torch.manual_seed(0)
    x = torch.randn(32, 5, dtype=f64)
    w = torch.randn(4, 5, dtype=f64)
    gamma, beta = _params(4)
    target = torch.randn(32, 4, dtype=f64)
    outs, grads = [], []
    for scale in (1.0, a):
        ws = (scale * w).requires_grad_()
        y = F.batch_norm(x @ ws.T, None, None, gamma, beta, training=True, eps=1e-20)
        ((y - target) ** 2).sum().backward()
        outs.append(y.detach())
        grads.append(ws.grad)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(grads[1], grads[0] / a, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("a", [1e-2, 5.0])
def test_gradient_passed_down_through_a_scaled_normalised_layer_is_unchanged(a):
    """dL/dx through BN(x (aW)^T) does not depend on a: the 1/a of BN cancels the a of W."""
    torch.manual_seed(2)
    w = torch.randn(4, 5, dtype=f64)
    target = torch.randn(16, 4, dtype=f64)
    grads = []
    for scale in (1.0, a):
        x = torch.randn(16, 5, dtype=f64, generator=torch.Generator().manual_seed(3)).requires_grad_()
        y = F.batch_norm(x @ (scale * w).T, None, None, training=True, eps=1e-20)
        ((y - target) ** 2).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-7, atol=1e-10)


def test_gradient_into_batch_norm_sums_to_zero_and_is_orthogonal_to_x_hat():
    """Checked on autograd's gradient through nn.BatchNorm1d (eps tiny, so the orthogonality is exact)."""
    torch.manual_seed(4)
    x = (3 * torch.randn(20, 6, dtype=f64) + 1).requires_grad_()
    layer = nn.BatchNorm1d(6, eps=1e-20).double()
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    x_hat = (x - x.mean(0)) / x.std(0, unbiased=False)
    torch.testing.assert_close(x.grad.sum(0), torch.zeros(6, dtype=f64), rtol=0, atol=1e-12)
    torch.testing.assert_close((x.grad * x_hat).sum(0), torch.zeros(6, dtype=f64), rtol=0, atol=1e-12)


def test_bias_before_batch_norm_gets_no_gradient():
    from deepgrad.models import MLP
    torch.manual_seed(5)
    model = MLP(8, 3, width=10, depth=3, activation="sigmoid", norm="batch").double()
    x, y = torch.randn(32, 8, dtype=f64), torch.randint(0, 3, (32,))
    F.cross_entropy(model(x), y).backward()
    for layer in model.hidden:
        assert layer.linear.bias.grad.abs().max() < 1e-12
        assert layer.linear.weight.grad.abs().max() > 1e-6


def test_batch_of_two_normalises_every_unit_to_plus_and_minus_one():
    torch.manual_seed(1)
    x = torch.randn(2, 6, dtype=f64) * 3 + 1
    y, cache = norm.batch_norm_forward(x, torch.ones(6, dtype=f64), torch.zeros(6, dtype=f64), eps=1e-12)
    torch.testing.assert_close(y.abs(), torch.ones_like(y))
    torch.testing.assert_close(y[0], -y[1])
    # ... whatever the input: the magnitudes are lost, only the sign of x_1 - x_2 survives
    torch.testing.assert_close(y[0].sign(), (x[0] - x[1]).sign())


# ---------------------------------------------------------------- noise without normalisation


def test_scale_shift_noise_is_per_unit_affine_and_within_bounds():
    g = torch.Generator().manual_seed(3)
    layer = norm.ScaleShiftNoise(5, scale_noise=0.3, shift_noise=0.2, generator=g)
    x = torch.randn(10, 5, dtype=f64)
    y = layer(x)
    torch.testing.assert_close(y, x * layer.last_scale + layer.last_shift)
    assert ((layer.last_scale - 1).abs() <= 0.3).all() and (layer.last_shift.abs() <= 0.2).all()
    s1 = layer.last_scale.clone()
    layer(x)
    assert not torch.equal(layer.last_scale, s1)  # redrawn every step


def test_scale_shift_noise_draws_the_same_noise_as_noisy_batch_norm():
    x = torch.randn(8, 4, dtype=f64)
    noise = norm.ScaleShiftNoise(4, generator=torch.Generator().manual_seed(5))
    noisy = NoisyBatchNorm(4, generator=torch.Generator().manual_seed(5)).double()
    torch.testing.assert_close(noisy(x), noise(BatchNorm(4).double()(x)))


def test_scale_shift_noise_statistics_match_the_uniform_distributions():
    g = torch.Generator().manual_seed(0)
    layer = norm.ScaleShiftNoise(20000, scale_noise=0.5, shift_noise=0.4, generator=g)
    layer(torch.zeros(2, 20000, dtype=f64))
    # U(-h, h) has mean 0 and variance h^2/3; 5 standard errors of tolerance
    n = 20000
    for draws, h in ((layer.last_scale - 1, 0.5), (layer.last_shift, 0.4)):
        assert abs(draws.mean().item()) < 5 * h / (3 * n) ** 0.5
        assert abs(draws.var().item() - h * h / 3) < 5 * h * h * (4 / 45 / n) ** 0.5


def test_scale_shift_noise_is_the_identity_in_eval_and_rejects_bad_input():
    layer = norm.ScaleShiftNoise(3).eval()
    x = torch.randn(1, 3)
    assert layer(x) is x
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(2, 4\)"):
        layer(torch.randn(2, 4))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        norm.ScaleShiftNoise(3, generator=0)
    with pytest.raises(ValueError, match=r"scale_noise must be in \[0, 1\), got 1"):
        norm.ScaleShiftNoise(3, scale_noise=1)


# ---------------------------------------------------------------- quantiles of a unit's input


def test_unit_quantiles_match_torch_quantile_on_training_passes_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid())
    xs = [torch.randn(16, 3) for _ in range(6)]
    with norm.UnitQuantiles(model[1], unit=2, every=2) as rec:
        for x in xs:
            model(x)
        with torch.no_grad():
            model(xs[0])          # evaluation pass without gradients: skipped
        model.eval()
        model(xs[0])              # eval mode: skipped
    model.train()
    model(xs[0])                  # after the block: the hook is gone
    assert rec.steps == [2, 4, 6]
    expected = torch.stack([torch.quantile(model[0](xs[i])[:, 2].detach().double(),
                                           torch.tensor([0.15, 0.5, 0.85], dtype=f64))
                            for i in (1, 3, 5)])
    torch.testing.assert_close(rec.values, expected)


def test_unit_quantiles_argument_errors():
    sig = nn.Sigmoid()
    with pytest.raises(ValueError, match="unit must be an int >= 0"):
        norm.UnitQuantiles(sig, unit=-1)
    with pytest.raises(ValueError, match=r"quantiles must be in \[0, 1\], got 1.5"):
        norm.UnitQuantiles(sig, unit=0, quantiles=(0.5, 1.5))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        norm.UnitQuantiles("sigmoid", unit=0)
    with norm.UnitQuantiles(sig, unit=5) as rec, pytest.raises(ValueError, match="unit must index a column"):
        sig(torch.randn(4, 3).requires_grad_())
    assert rec.values.shape == (0, 3)


def test_jacobian_of_the_normalised_column_matches_the_proofs_formula():
    """d x_hat_k / d z_i = s (1[k=i] - 1/N - x_hat_k x_hat_i / N), s = (sigma^2 + eps)^(-1/2): autograd's Jacobian."""
    torch.manual_seed(6)
    z = 2 * torch.randn(7, dtype=f64) + 3
    eps = 0.3  # exact for any eps, so a large one tests that too

    def normalise(col):
        return (col - col.mean()) / torch.sqrt(col.var(unbiased=False) + eps)

    jac = torch.autograd.functional.jacobian(normalise, z)
    n, x_hat = len(z), normalise(z)
    s = (z.var(unbiased=False) + eps) ** -0.5
    formula = s * (torch.eye(n, dtype=f64) - 1 / n - torch.outer(x_hat, x_hat) / n)
    torch.testing.assert_close(jac, formula)


# ---------------------------------------------------------------- double backward, composition


def test_batch_norm_is_correct_under_double_backward():
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=f64, requires_grad=True)
    gamma, beta = torch.randn(3, dtype=f64, requires_grad=True), torch.randn(3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, g, b: norm.batch_norm_train(x, g, b)[0], (x, gamma, beta))
    # a gradient penalty through a small net, against nn.BatchNorm1d
    grads = []
    for layer in (BatchNorm(4).double(), nn.BatchNorm1d(4).double()):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(3, 4), layer, nn.Tanh(), nn.Linear(4, 1)).double()
        inp = torch.randn(8, 3, dtype=f64, requires_grad=True)
        (g,) = torch.autograd.grad(net(inp).pow(2).sum(), inp, create_graph=True)
        g.pow(2).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


def test_noisy_batch_norm_is_batch_norm_then_scale_shift_noise():
    layer = NoisyBatchNorm(4, generator=torch.Generator().manual_seed(5), scale_noise=0.3, shift_noise=0.2)
    assert isinstance(layer, BatchNorm) and isinstance(layer.noise, norm.ScaleShiftNoise)
    assert (layer.scale_noise, layer.shift_noise) == (0.3, 0.2)
    layer(torch.randn(5, 4))
    assert layer.last_scale is layer.noise.last_scale and layer.last_shift is layer.noise.last_shift
    assert set(layer.state_dict()) == set(nn.BatchNorm1d(4).state_dict())  # loads both ways still
    assert not layer.eval().noise.training


def test_only_the_recorder_registers_hooks():
    import pathlib
    import re

    lib = pathlib.Path(norm.__file__).parent
    hooks = re.compile(r"\.register_(forward_pre_|forward_|full_backward_|post_accumulate_grad_)?hook\(")
    users = sorted(p.name for p in lib.glob("*.py") if hooks.search(p.read_text()))
    assert users == ["diagnostics.py"]
