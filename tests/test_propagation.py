import math

import numpy as np
import pytest
import torch
from torch import nn

from deepgrad import activations, init, propagation

SIGMOID = activations.get("sigmoid")
TANH = activations.get("tanh")
RELU = activations.get("relu")


# --- Gaussian expectations --------------------------------------------------------------------

@pytest.mark.parametrize("q", [0.01, 0.7, 3.0, 250.0])
def test_gaussian_expectation_closed_forms(q):
    e = propagation.gaussian_expectation
    assert e(torch.ones_like, q).item() == pytest.approx(1.0, rel=1e-14)
    assert e(lambda z: z**2, q).item() == pytest.approx(q, rel=1e-12)
    assert e(lambda z: z**4, q).item() == pytest.approx(3 * q**2, rel=1e-12)
    assert e(lambda z: torch.relu(z) ** 2, q).item() == pytest.approx(q / 2, rel=1e-12)
    assert e(lambda z: RELU.derivative(z) ** 2, q).item() == pytest.approx(0.5, rel=1e-14)
    # a kink at 0 (relu itself, not squared) costs the midpoint rule its fast convergence: O(h^2)
    assert e(torch.relu, q).item() == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-5)


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("q", [0.3, 2.0, 20.0])
def test_gaussian_expectation_agrees_with_monte_carlo(name, q):
    act = activations.get(name)
    z = torch.randn(2_000_000, dtype=torch.float64) * math.sqrt(q)
    for g in (lambda t: act.fn(t) ** 2, lambda t: act.derivative(t) ** 2):
        sample = g(z)
        standard_error = sample.std().item() / math.sqrt(len(z))
        quadrature = propagation.gaussian_expectation(g, q).item()
        assert abs(quadrature - sample.mean().item()) < 5 * standard_error


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_gaussian_expectation_agrees_with_gauss_hermite_where_that_converges(q):
    # Gauss-Hermite converges slowly for tanh'^2 once q is large (poles at z = +-i pi/2): 160 nodes
    # reach 1e-12 at q = 1, only 1e-5 at q = 4
    nodes, weights = np.polynomial.hermite_e.hermegauss(160)
    z = torch.as_tensor(math.sqrt(q) * nodes)
    for g in (lambda t: TANH.derivative(t) ** 2, lambda t: SIGMOID.fn(t) ** 2):
        hermite = float((g(z).numpy() * weights).sum() / math.sqrt(2 * math.pi))
        assert propagation.gaussian_expectation(g, q).item() == pytest.approx(hermite, rel=1e-9)


def test_gaussian_expectation_resolves_saturated_slopes_at_large_variance():
    # E[tanh'(z)^2] -> (4/3) / sqrt(2 pi q) as q -> inf: the integral of sech^4 is 4/3
    q = 1000.0
    value = propagation.gaussian_expectation(lambda z: TANH.derivative(z) ** 2, q).item()
    assert value == pytest.approx(4 / 3 / math.sqrt(2 * math.pi * q), rel=2e-3)
    finer = propagation.gaussian_expectation(lambda z: TANH.derivative(z) ** 2, q, points=32768).item()
    assert value == pytest.approx(finer, rel=1e-9)


def test_gaussian_expectation_is_vectorised_and_handles_zero_and_infinite_variance():
    q = torch.tensor([[0.0, 1.0], [4.0, math.inf]], dtype=torch.float64)
    out = propagation.gaussian_expectation(lambda z: SIGMOID.fn(z) ** 2, q)
    assert out.shape == (2, 2)
    assert out[0, 0].item() == pytest.approx(0.25, rel=1e-15)  # sigma(0)^2
    assert out[1, 1].item() == pytest.approx(0.5, rel=1e-12)   # half the mass at sigma = 1
    assert propagation.gaussian_expectation(lambda z: TANH.derivative(z) ** 2, math.inf).item() == 0.0


# --- The recursion ----------------------------------------------------------------------------

@pytest.mark.parametrize("weight_var, bias_var, q", [(2.0, 0.0, 1.3), (0.5, 0.2, 7.0), (3.1, 0.05, 0.0)])
def test_variance_map_and_backward_factor_in_closed_form_for_relu_and_linear(weight_var, bias_var, q):
    v = propagation.variance_map
    assert v("relu", weight_var, bias_var, q).item() == pytest.approx(weight_var * q / 2 + bias_var, rel=1e-12)
    assert v("identity", weight_var, bias_var, q).item() == pytest.approx(weight_var * q + bias_var, rel=1e-12)
    assert propagation.backward_factor("identity", weight_var, q).item() == pytest.approx(weight_var, rel=1e-14)
    if q > 0:
        assert propagation.backward_factor("relu", weight_var, q).item() == pytest.approx(weight_var / 2, rel=1e-14)


def test_small_variance_limit_of_the_backward_factor_is_the_slope_at_zero():
    for name, slope in [("tanh", 1.0), ("sigmoid", 0.25), ("relu", None)]:
        chi = propagation.backward_factor(name, 0.7, 1e-12).item()
        expected = 0.7 * (0.5 if slope is None else slope**2)  # ReLU: slope 1 on half the mass
        assert chi == pytest.approx(expected, rel=1e-6)


def test_forward_variances_start_from_the_data_and_iterate_the_map():
    q = propagation.forward_variances("tanh", 1.5, 0.1, depth=6, input_second_moment=0.8)
    assert q.shape == (6,)
    assert q[0].item() == pytest.approx(1.5 * 0.8 + 0.1)
    for a, b in zip(q, q[1:], strict=False):
        assert b.item() == pytest.approx(propagation.variance_map("tanh", 1.5, 0.1, a).item(), rel=1e-14)


def test_predicted_deltas_are_products_of_backward_factors_from_the_top():
    q = propagation.forward_variances("sigmoid", 9.0, 0.0, depth=5)
    deltas = propagation.predicted_deltas("sigmoid", 9.0, q)
    chi = propagation.backward_factor("sigmoid", 9.0, q)
    assert deltas[-1].item() == pytest.approx(chi[-1].item(), rel=1e-14)
    assert torch.allclose(deltas[:-1] / deltas[1:], chi[:-1], rtol=1e-12)


@pytest.mark.parametrize("name, weight_var, bias_var", [("tanh", 2.5, 0.0), ("tanh", 1.2, 0.05), ("sigmoid", 9.0, 0.0),
                                                        ("relu", 1.5, 0.1)])
def test_fixed_point_is_where_iterating_the_map_settles(name, weight_var, bias_var):
    q_star = propagation.fixed_point(name, weight_var, bias_var)
    assert propagation.variance_map(name, weight_var, bias_var, q_star).item() == pytest.approx(q_star, rel=1e-8)
    q = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(400):  # away from a critical point the iterates converge geometrically
        q = propagation.variance_map(name, weight_var, bias_var, q)
    assert q.item() == pytest.approx(q_star, rel=1e-8)


def test_fixed_point_is_zero_or_infinite_where_the_variance_vanishes_or_explodes():
    assert propagation.fixed_point("relu", 1.9, 0.0) == 0.0
    assert propagation.fixed_point("relu", 2.1, 0.0) == math.inf
    assert propagation.fixed_point("identity", 1.1, 0.0) == math.inf
    assert propagation.fixed_point("tanh", 0.9, 0.0) == 0.0
    assert propagation.fixed_point("tanh", 1.2, 0.0) > 0.1
    # ReLU with biases below critical: q* = sigma_b^2 / (1 - sigma_w^2 / 2)
    assert propagation.fixed_point("relu", 1.0, 0.3) == pytest.approx(0.6, rel=1e-8)


def test_relu_critical_weight_variance_is_two_with_or_without_biases():
    for bias_var in (0.0, 0.3):
        assert propagation.critical_weight_variance("relu", bias_var) == pytest.approx(2.0, rel=1e-8)


def test_tanh_and_linear_critical_weight_variance_is_one_without_biases():
    assert propagation.critical_weight_variance("tanh", 0.0) == pytest.approx(1.0, rel=1e-6)
    assert propagation.critical_weight_variance("identity", 0.0) == pytest.approx(1.0, rel=1e-8)


def test_tanh_critical_point_at_small_bias_matches_schoenholz_et_al():
    # Schoenholz et al. (2017): the order-to-chaos transition at sigma_b^2 = 0.05 is sigma_w^2 ~ 1.76
    critical = propagation.critical_weight_variance("tanh", 0.05)
    assert critical == pytest.approx(1.76, abs=0.01)
    assert propagation.factor_at_fixed_point("tanh", critical, 0.05) == pytest.approx(1.0, abs=1e-6)


def test_factor_at_fixed_point_grows_with_the_weight_variance_for_tanh():
    # saturating units lose slope, but the weights win: chi(q*) increases with sigma_w^2
    chis = [propagation.factor_at_fixed_point("tanh", s**2) for s in (0.5, 1.5, 3.0, 8.0)]
    assert all(a < b for a, b in zip(chis, chis[1:], strict=False))
    assert chis[0] == pytest.approx(0.25, rel=1e-6) and chis[-1] > 4


# --- Saturating activations -------------------------------------------------------------------

def test_slope_bounds_on_a_dense_grid_with_the_maximum_at_zero():
    z = torch.arange(-400_000, 400_001, dtype=torch.float64) / 10_000  # steps of 1e-4, 0 included
    for act, bound in [(SIGMOID, 0.25), (TANH, 1.0)]:
        slope = act.derivative(z)
        assert slope.max().item() == bound
        assert z[slope.argmax()].item() == 0.0
        assert (slope[z != 0] < bound).all()


def test_tanh_slope_is_four_times_the_sigmoid_slope_at_twice_the_input():
    z = torch.linspace(-20, 20, 10_001, dtype=torch.float64)
    torch.testing.assert_close(TANH.derivative(z), 4 * SIGMOID.derivative(2 * z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("frac", [0.01, 0.1, 0.5])
def test_saturation_threshold(frac):
    z_sig = propagation.saturation_threshold("sigmoid", frac)
    z_tanh = propagation.saturation_threshold("tanh", frac)
    at = torch.tensor([z_sig, z_sig * 0.999, z_sig * 1.001], dtype=torch.float64)
    slopes = SIGMOID.derivative(at) / 0.25
    assert slopes[0].item() == pytest.approx(frac, rel=1e-10)
    assert slopes[1] > frac > slopes[2]
    assert TANH.derivative(torch.tensor(z_tanh, dtype=torch.float64)).item() == pytest.approx(frac, rel=1e-10)
    assert z_tanh == pytest.approx(z_sig / 2)


# --- Measurement on random networks -----------------------------------------------------------

def _replayed_network(activation, depth, width, weight_std, bias_std, seed, batch):
    """The network random_mlp_stats draws from ``seed``, rebuilt from torch.nn modules."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    linears = [nn.Linear(width, width).double() for _ in range(depth)]
    weights = [torch.randn(width, width, generator=g, dtype=torch.float64) for _ in range(depth)]
    biases = [torch.randn(width, generator=g, dtype=torch.float64) for _ in range(depth)]
    readout = torch.randn(batch, width, generator=g, dtype=torch.float64) * weight_std / math.sqrt(width)
    with torch.no_grad():
        for layer, w, b in zip(linears, weights, biases, strict=True):
            layer.weight.copy_(w * weight_std / math.sqrt(width))
            layer.bias.copy_(b * bias_std)
    return x, linears, readout


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_random_mlp_stats_agree_with_torch_nn_and_autograd(activation):
    depth, width, std, bias_std, batch = 5, 16, 1.3, 0.2, 7
    stats = propagation.random_mlp_stats(activation, depth, width, std, bias_std=bias_std, batch=batch,
                                         generator=torch.Generator().manual_seed(3), keep_pre_activations=True)
    x, linears, readout = _replayed_network(activation, depth, width, std, bias_std, seed=3, batch=batch)
    f = activations.get(activation).module()
    zs, h = [], x
    for layer in linears:
        z = layer(h)
        z.retain_grad()
        zs.append(z)
        h = f(z)
    (h * readout).sum().backward()  # one random readout vector per example
    assert stats.depth == depth
    for l in range(depth):
        torch.testing.assert_close(stats.pre_activations[l], zs[l].detach(), rtol=1e-12, atol=1e-12)
        assert stats.second_moment[l].item() == pytest.approx(zs[l].pow(2).mean().item(), rel=1e-12)
        assert stats.delta_sq[l].item() == pytest.approx(zs[l].grad.pow(2).sum(1).mean().item(), rel=1e-12)
        assert stats.weight_grad_norm[l].item() == pytest.approx(linears[l].weight.grad.norm().item(), rel=1e-12)
        assert stats.activation_std[l].item() == pytest.approx(f(zs[l]).std().item(), rel=1e-12)
        assert stats.delta_std[l].item() == pytest.approx(zs[l].grad.std().item(), rel=1e-12)
        assert stats.slope_sq[l].item() == pytest.approx(
            activations.get(activation).derivative(zs[l]).pow(2).mean().item(), rel=1e-12)
    assert (stats.weight_std, stats.bias_std) == (std, bias_std)


@pytest.mark.parametrize("activation, std, bias_std, depth",
                         [("tanh", 1.5, 0.0, 4), ("relu", 1.4, 0.3, 6), ("sigmoid", 4.0, 0.0, 1)])
def test_first_layer_gradients_agree_with_autograd(activation, std, bias_std, depth):
    x = torch.randn(9, 12, dtype=torch.float64)
    kwargs = dict(bias_std=bias_std, inputs=x, dtype=torch.float64)
    mine = propagation.first_layer_gradients(activation, [depth], 10, std,
                                             generator=torch.Generator().manual_seed(5), **kwargs)
    stats = propagation.random_mlp_stats(activation, depth, 10, std,
                                         generator=torch.Generator().manual_seed(5), **kwargs)
    assert mine.shape == (1,)
    assert mine[0].item() == pytest.approx(math.sqrt(stats.delta_sq[0].item()), rel=1e-12)


def test_first_layer_gradients_report_overflow_as_nan_and_underflow_as_zero():
    x = torch.randn(32, 64)
    out = propagation.first_layer_gradients("relu", [2, 40], 64, 16.0, inputs=x, dtype=torch.float32)
    assert math.isfinite(out[0].item()) and out[0] > 1
    assert math.isnan(out[1].item())  # (16^2 / 2)^20 overflows float32 in the forward pass
    tiny = propagation.first_layer_gradients("relu", [60], 64, 0.1, inputs=x, dtype=torch.float32)
    assert tiny[0].item() == 0.0  # vanished below float32's smallest number


@pytest.mark.parametrize("activation, std, tolerance", [("tanh", 0.8, 0.05), ("tanh", 3.0, 0.05),
                                                        ("relu", 1.2, 0.15), ("sigmoid", 4.0, 0.15)])
def test_the_recursion_predicts_wide_random_networks(activation, std, tolerance):
    # Mean over 8 networks of width 256 and 12 layers, batch 128: measured / predicted within
    # `tolerance` per layer on average (in log). The tolerances come from the finite-width
    # fluctuations measured at these sizes over several seeds: about 1-3% for tanh, up to about 14%
    # for ReLU and sigmoid, whose positive mean output is shared by all the examples of a batch.
    g = torch.Generator().manual_seed(1)
    runs = [propagation.random_mlp_stats(activation, 12, 256, std, batch=128, generator=g) for _ in range(8)]
    q = propagation.forward_variances(activation, std**2, 0.0, 12)
    deltas = propagation.predicted_deltas(activation, std**2, q)
    for measured, predicted in [(torch.stack([r.second_moment for r in runs]).mean(0), q),
                                (torch.stack([r.delta_sq for r in runs]).mean(0), deltas)]:
        error = (measured / predicted).log().abs()
        assert error.mean().item() < tolerance, error
    # the profiles change by orders of magnitude, so agreement is not a foregone conclusion
    assert max(deltas[0] / deltas[-1], deltas[-1] / deltas[0]).item() > 10


def test_a_wrong_recursion_is_rejected():
    # Leaving out the slopes (chi = sigma_w^2) would mispredict tanh by orders of magnitude
    g = torch.Generator().manual_seed(2)
    stats = propagation.random_mlp_stats("tanh", 12, 256, 3.0, batch=128, generator=g)
    wrong = torch.full((12,), 9.0, dtype=torch.float64).flip(0).cumprod(0).flip(0)
    assert (stats.delta_sq / wrong).log10().abs().max().item() > 3


# --- Argument errors name the argument --------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: propagation.variance_map("sigmod", 1.0, 0.0, 1.0), "activation must be one of"),
    (lambda: propagation.variance_map("tanh", -1.0, 0.0, 1.0), "weight_var must be a finite number >= 0"),
    (lambda: propagation.variance_map("tanh", 1.0, -0.1, 1.0), "bias_var must be a finite number >= 0"),
    (lambda: propagation.backward_factor("tanh", 1.0, -2.0), "variance must be >= 0"),
    (lambda: propagation.gaussian_expectation(torch.tanh, 1.0, points=101), "points must be an even int"),
    (lambda: propagation.gaussian_expectation("tanh", 1.0), "fn must be a callable"),
    (lambda: propagation.forward_variances("tanh", 1.0, 0.0, 0), "depth must be an int >= 1"),
    (lambda: propagation.predicted_deltas("tanh", 1.0, torch.ones(2, 2)), "q must be a 1-D tensor"),
    (lambda: propagation.saturation_threshold("relu"), "activation must be one of 'sigmoid', 'tanh'"),
    (lambda: propagation.saturation_threshold("tanh", 1.5), r"fraction_of_max must be in \(0, 1\)"),
    (lambda: propagation.critical_weight_variance("sigmoid", 0.0, high=10.0), "does not change sign"),
    (lambda: propagation.critical_weight_variance("tanh", 0.0, low=2.0, high=1.0), "0 < low < high"),
    (lambda: propagation.random_mlp_stats("tanh", 0, 8, 1.0), "depth must be an int >= 1"),
    (lambda: propagation.random_mlp_stats("tanh", 3, 8.5, 1.0), "width must be an int >= 1"),
    (lambda: propagation.random_mlp_stats("tanh", 3, 8, -1.0), "weight_std must be a finite number >= 0"),
    (lambda: propagation.random_mlp_stats("tanh", 3, 8, 1.0, dtype=torch.float16), "dtype must be one of"),
    (lambda: propagation.random_mlp_stats("tanh", 3, 8, 1.0, inputs=torch.ones(4)), "inputs must be None or a 2-D"),
    (lambda: propagation.first_layer_gradients("tanh", [], 8, 1.0), "depths must be a non-empty sequence"),
    (lambda: propagation.random_mlp_stats("tanh", 3, 8, 1.0, weights="xavier"), "weights must be one of"),
    (lambda: propagation.first_layer_gradients("tanh", [3, 0], 8, 1.0), "each entry of depths must be an int >= 1"),
])
def test_argument_errors_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_orthogonal_weights_preserve_norms_exactly():
    stats = propagation.random_mlp_stats("identity", 6, 16, 1.0, batch=5, weights="orthogonal",
                                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(stats.second_moment, stats.second_moment[:1].expand(6), rtol=1e-12, atol=0)
    torch.testing.assert_close(stats.delta_sq, stats.delta_sq[:1].expand(6), rtol=1e-12, atol=0)


@pytest.mark.parametrize("fan_in, width", [(7, 16), (16, 16), (40, 16)])
def test_orthogonal_layers_have_the_gaussian_second_moment(fan_in, width):
    weights, _ = propagation._random_layers(fan_in, width, 2, 1.5, 0.0, torch.Generator().manual_seed(0),
                                            torch.float64, "orthogonal")
    for w, n in zip(weights, [fan_in, width], strict=True):
        assert w.shape == (width, n)
        assert w.pow(2).mean().item() == pytest.approx(1.5**2 / n, rel=1e-12)  # E[W_ij^2] = std^2 / fan_in
        gram = w @ w.T if width <= n else w.T @ w
        scale = gram.diagonal().mean()
        torch.testing.assert_close(gram, scale * torch.eye(len(gram), dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_slopes_alone_bound_each_layers_factor_when_the_weights_are_orthogonal():
    for name in ["sigmoid", "tanh", "relu"]:
        stats = propagation.random_mlp_stats(name, 10, 32, 1.0, weights="orthogonal", batch=16,
                                             generator=torch.Generator().manual_seed(0))
        factors = stats.delta_sq[:-1] / stats.delta_sq[1:]
        assert (factors <= activations.get(name).max_slope ** 2 * (1 + 1e-12)).all()


def test_nested_first_layer_gradients_agree_with_autograd_on_each_truncated_network():
    x = torch.randn(6, 5, dtype=torch.float64)
    depths, width, std = [3, 1, 4], 7, 1.3
    mine = propagation.first_layer_gradients("tanh", depths, width, std, bias_std=0.1, inputs=x,
                                             generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    weights, biases = propagation._random_layers(5, width, max(depths), std, 0.1, g, torch.float64)
    readouts = torch.randn(len(depths), 6, width, generator=g, dtype=torch.float64) * std / math.sqrt(width)
    for d, u, value in zip(depths, readouts, mine, strict=True):
        z1 = x @ weights[0].T + biases[0]
        z1.requires_grad_(True)
        h = torch.tanh(z1)
        for w, b in zip(weights[1:d], biases[1:d], strict=True):
            h = torch.tanh(h @ w.T + b)
        (delta1,) = torch.autograd.grad((h * u).sum(), z1)
        assert value.item() == pytest.approx(delta1.pow(2).sum(1).mean().sqrt().item(), rel=1e-12)


def test_random_mlp_stats_return_overflow_as_non_finite_values_without_warnings():
    stats = propagation.random_mlp_stats("relu", 40, 32, 16.0, batch=8, dtype=torch.float32,
                                         generator=torch.Generator().manual_seed(0))
    assert math.isfinite(stats.second_moment[0].item())
    assert not torch.isfinite(stats.second_moment[-1])  # (16^2 / 2)^40 is beyond float32


# --- one measurer, one orthogonal sampler -------------------------------------------------------------

def test_random_layers_draw_with_inits_samplers():
    """The Gaussian and orthogonal layers are deepgrad.init's draws (and so torch.nn.init's), in order."""
    g = torch.Generator().manual_seed(5)
    gauss, _ = propagation._random_layers(12, 16, 3, 1.5, 0.0, g, torch.float64, "gaussian")
    g = torch.Generator().manual_seed(5)
    for w, n in zip(gauss, [12, 16, 16], strict=True):
        assert torch.equal(w, torch.randn(16, n, generator=g, dtype=torch.float64) * (1.5 / math.sqrt(n)))
    g = torch.Generator().manual_seed(6)
    ortho, _ = propagation._random_layers(40, 16, 2, 1.5, 0.0, g, torch.float64, "orthogonal")
    g = torch.Generator().manual_seed(6)
    for w, n in zip(ortho, [40, 16], strict=True):
        gain = 1.5 * math.sqrt(max(16, n) / n)
        theirs = nn.init.orthogonal_(torch.empty(16, n, dtype=torch.float64), gain=gain, generator=g)
        torch.testing.assert_close(w, theirs, rtol=1e-12, atol=1e-14)
    assert not hasattr(propagation, "_orthogonal")  # one orthogonal sampler: deepgrad.init's


def test_signal_profile_is_propagates_measurement_on_an_init_stack():
    kwargs = dict(depth=5, width=12, batch=9, scheme_kwargs={"gain": 1.2})
    profile = propagation.signal_profile("tanh", "xavier_uniform", generator=torch.Generator().manual_seed(8),
                                         **kwargs)
    g = torch.Generator().manual_seed(8)
    weights = [init.xavier_uniform_(torch.empty(12, 12, dtype=torch.float64), gain=1.2, generator=g)
               for _ in range(5)]
    x = torch.randn(9, 12, generator=g, dtype=torch.float64)
    readout = torch.randn(9, 12, generator=g, dtype=torch.float64) / math.sqrt(12)
    stats = propagation.propagate("tanh", x, weights, readout)
    assert torch.equal(profile.activation_std, stats.activation_std)
    assert torch.equal(profile.gradient_std, stats.delta_std)  # δ = ∂L/∂z, not the weight gradient
    assert torch.equal(profile.stats.delta_sq, stats.delta_sq)
    # deepgrad.init's name for it is the same function
    again = init.signal_profile("tanh", "xavier_uniform", generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(again.gradient_std, profile.gradient_std) and again.scheme == "xavier_uniform"


def test_propagate_leaves_the_weights_alone_and_takes_non_square_layers():
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(7, 5, generator=g, dtype=torch.float64),
               torch.randn(3, 7, generator=g, dtype=torch.float64)]
    before = [w.clone() for w in weights]
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    u = torch.randn(4, 3, generator=g, dtype=torch.float64)
    biases = [torch.zeros(7, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    stats = propagation.propagate("relu", x, weights, u, biases=biases)
    assert stats.depth == 2 and stats.width == 3 and math.isnan(stats.weight_std)
    assert all(torch.equal(w, b) and not w.requires_grad and w.grad is None
               for w, b in zip(weights, before, strict=True))
    # the top layer's δ is f'(z) ⊙ u, by hand
    z2 = torch.relu(x @ weights[0].T) @ weights[1].T
    assert stats.delta_sq[1].item() == pytest.approx(((z2 > 0) * u).pow(2).sum(1).mean().item(), rel=1e-12)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: propagation.propagate("tanh", torch.ones(4), [torch.ones(3, 3)], torch.ones(4, 3)),
     "inputs must be a 2-D"),
    (lambda: propagation.propagate("tanh", torch.ones(4, 3), [], torch.ones(4, 3)), "weights must be a non-empty"),
    (lambda: propagation.propagate("tanh", torch.ones(4, 3), [torch.ones(5, 2)], torch.ones(4, 5)),
     r"weights\[0\] \(layer 1\) must be a 2-D tensor with 3 columns"),
    (lambda: propagation.propagate("tanh", torch.ones(4, 3), [torch.ones(5, 3)], torch.ones(4, 3)),
     r"readout must be a tensor of shape \(4, 5\)"),
    (lambda: propagation.propagate("tanh", torch.ones(4, 3), [torch.ones(5, 3)], torch.ones(4, 5),
                                   biases=[torch.ones(3)]),
     "biases must be None or one 1-D tensor per layer"),
    (lambda: propagation.signal_profile("relu", "glorot", depth=2, width=4), "scheme must be one of"),
])
def test_propagate_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_saturation_threshold_default_is_the_books_one_definition():
    from deepgrad.diagnostics import SATURATION, saturated_fraction

    assert SATURATION == 0.1
    z = propagation.saturation_threshold("sigmoid")
    assert z == propagation.saturation_threshold("sigmoid", SATURATION)
    # just inside and just outside the threshold, the diagnostics' definition agrees
    inside, outside = torch.sigmoid(torch.tensor([z - 1e-3])), torch.sigmoid(torch.tensor([z + 1e-3]))
    assert saturated_fraction(inside, torch.nn.Sigmoid).item() == 0.0
    assert saturated_fraction(outside, torch.nn.Sigmoid).item() == 1.0
