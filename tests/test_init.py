"""deepgrad.init against torch.nn.init, statistically and, given the same generator state, draw for draw.

Statistical tolerances come from the sample size n = tensor.numel() (at least 4608 here), at 5
standard errors, so a seeded test is far from its edge and a wrong factor is far outside it:

- mean: |mean| < 5 · std / √n;
- variance: relative error < 5 · s, with s = √(2/(n−1)) for a normal sample and s = √(0.8/n) for a
  uniform one (Var(x²) = b⁴/5 − b⁴/9 = (4/5) · (b²/3)²); comparing two independent samples, 5 · √2 · s.
  At n = 4608 (the conv kernel) 5 · s ≈ 0.10 for a normal sample; a factor 2 (2 vs 1, 6 vs 3, fan_in vs
  fan_out on these shapes) is an error of 0.5 to 1;
- uniform: every |w| ≤ b, and max |w| > b · (1 − 10/n) (missed with probability (1 − 10/n)^n ≈ e⁻¹⁰).
"""

import math

import pytest
import torch
from torch import nn

import deepgrad as dg
from deepgrad import init

SHAPES = [(256, 128), (64, 512), (32, 16, 3, 3)]
NORMAL = {"xavier_normal", "he_normal", "lecun_normal", "normal"}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def expected_fans(shape):
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def variance_tolerance(n: int, normal: bool) -> float:
    """Five standard errors of a sample variance, relative."""
    return 5 * (math.sqrt(2 / (n - 1)) if normal else math.sqrt(0.8 / n))


def check_sample(w: torch.Tensor, variance: float, normal: bool):
    n = w.numel()
    assert abs(w.mean().item()) < 5 * math.sqrt(variance / n)
    measured = w.pow(2).mean().item()  # the mean is known to be 0
    assert measured == pytest.approx(variance, rel=variance_tolerance(n, normal))
    if not normal:
        bound = math.sqrt(3 * variance)
        assert w.abs().max().item() <= bound * (1 + 1e-6)
        assert w.abs().max().item() > bound * (1 - 10 / n)


def formula(name: str, shape) -> float:
    """The variance each scheme should have, written independently of deepgrad.init."""
    fan_in, fan_out = expected_fans(shape)
    return {
        "xavier_normal": 2 / (fan_in + fan_out), "xavier_uniform": 2 / (fan_in + fan_out),
        "he_normal": 2 / fan_in, "he_uniform": 2 / fan_in,
        "lecun_normal": 1 / fan_in, "lecun_uniform": 1 / fan_in,
        "pytorch_default": 1 / (3 * fan_in),
    }[name]


def torch_counterpart(name: str):
    return {
        "xavier_normal": nn.init.xavier_normal_,
        "xavier_uniform": nn.init.xavier_uniform_,
        "he_normal": lambda t, generator: nn.init.kaiming_normal_(t, nonlinearity="relu", generator=generator),
        "he_uniform": lambda t, generator: nn.init.kaiming_uniform_(t, nonlinearity="relu", generator=generator),
        "lecun_normal": lambda t, generator: nn.init.kaiming_normal_(t, nonlinearity="linear", generator=generator),
        "lecun_uniform": lambda t, generator: nn.init.kaiming_uniform_(t, nonlinearity="linear",
                                                                         generator=generator),
        "pytorch_default": lambda t, generator: nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator),
    }[name]


SCALED = ["xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
          "pytorch_default"]


# --- fans and gains ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES + [(5, 7, 2), (3, 1)])
def test_fans_match_torch(shape):
    t = torch.empty(shape)
    assert init.fans(t) == expected_fans(shape)
    assert init.fans(t) == nn.init._calculate_fan_in_and_fan_out(t)


@pytest.mark.parametrize("name", ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "sigmoid", "tanh",
                                  "relu", "leaky_relu", "selu"])
def test_gain_equals_torch(name):
    assert init.gain(name) == pytest.approx(nn.init.calculate_gain(name), rel=1e-15)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, math.sqrt(5)])
def test_gain_with_slope_equals_torch(slope):
    assert init.gain("leaky_relu", slope) == pytest.approx(nn.init.calculate_gain("leaky_relu", slope), rel=1e-15)
    assert init.gain("prelu", slope) == init.gain("leaky_relu", slope)


def test_gain_aliases_and_book_names():
    assert init.gain("identity") == init.gain("linear") == 1.0
    assert init.gain("logistic") == init.gain("sigmoid") == 1.0
    assert init.gain("relu") == pytest.approx(math.sqrt(2))
    assert init.gain("prelu") == pytest.approx(math.sqrt(2 / (1 + 0.25**2)))  # PReLU's initial slope
    assert init.gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.gain("selu") == 0.75 and init.gain("tanh") == pytest.approx(5 / 3)


def test_gain_errors_name_the_argument():
    with pytest.raises(ValueError, match="activation must be one of .*'relu'.*got 'swish'"):
        init.gain("swish")
    with pytest.raises(TypeError, match="activation must be a name"):
        init.gain(None)
    with pytest.raises(ValueError, match="param .* applies only to leaky_relu, prelu"):
        init.gain("relu", 0.1)
    with pytest.raises(TypeError, match="param must be a finite number"):
        init.gain("leaky_relu", "0.1")


# --- scaled schemes: the formula, and torch's counterpart ----------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SCALED)
def test_scheme_variance_matches_formula_and_torch(name, shape):
    normal = name in NORMAL
    ours = init.get(name)(torch.empty(shape), generator=gen(1))
    check_sample(ours, formula(name, shape), normal)
    theirs = torch_counterpart(name)(torch.empty(shape), generator=gen(2))
    check_sample(theirs, formula(name, shape), normal)
    # two independent samples of the same distribution
    tol = math.sqrt(2) * variance_tolerance(ours.numel(), normal)
    assert ours.pow(2).mean().item() == pytest.approx(theirs.pow(2).mean().item(), rel=tol)


@pytest.mark.parametrize("name", SCALED)
def test_same_generator_state_gives_torchs_draws(name):
    shape = (64, 512)
    ours = init.get(name)(torch.empty(shape), generator=gen(3))
    theirs = torch_counterpart(name)(torch.empty(shape), generator=gen(3))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


def test_he_std_for_relu_is_sqrt_2_over_fan_in():
    # coverage item 7: sqrt(2/n), not sqrt(alpha/n)
    w = torch.empty(256, 128)
    assert init.he_std(w) == pytest.approx(math.sqrt(2 / 128), rel=1e-15)
    assert init.he_std(w, mode="fan_out") == pytest.approx(math.sqrt(2 / 256), rel=1e-15)
    assert init.he_std(w, "tanh") == pytest.approx(5 / 3 / math.sqrt(128), rel=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
def test_he_fan_out_and_gain_against_torch(shape):
    _, fan_out = expected_fans(shape)
    ours = init.he_normal_(torch.empty(shape), "leaky_relu", 0.2, mode="fan_out", generator=gen(4))
    variance = 2 / (1 + 0.2**2) / fan_out
    check_sample(ours, variance, normal=True)
    theirs = nn.init.kaiming_uniform_(torch.empty(shape), a=0.2, mode="fan_out", nonlinearity="leaky_relu",
                                      generator=gen(5))
    check_sample(init.he_uniform_(torch.empty(shape), "leaky_relu", 0.2, "fan_out", generator=gen(6)),
                 variance, normal=False)
    check_sample(theirs, variance, normal=False)


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_gain_scales_the_std(shape):
    fan_in, fan_out = expected_fans(shape)
    w = init.xavier_uniform_(torch.empty(shape), gain=5 / 3, generator=gen(7))
    check_sample(w, (5 / 3) ** 2 * 2 / (fan_in + fan_out), normal=False)
    assert w.abs().max().item() <= 5 / 3 * math.sqrt(6 / (fan_in + fan_out)) * (1 + 1e-6)


@pytest.mark.parametrize("shape", [(256, 128), (64, 512)])
def test_a_wrong_factor_would_fail(shape):
    # the tolerance is tight enough to tell the schemes apart on a non-square shape
    n = math.prod(shape)
    tol = variance_tolerance(n, normal=True)
    xavier = init.xavier_normal_(torch.empty(shape), generator=gen(8)).pow(2).mean().item()
    fan_in, fan_out = expected_fans(shape)
    for wrong in (2 / fan_in, 2 / fan_out, 1 / fan_in, 4 / (fan_in + fan_out), 1 / (fan_in + fan_out)):
        assert abs(xavier / wrong - 1) > 3 * tol
    he = init.he_normal_(torch.empty(shape), generator=gen(9)).pow(2).mean().item()
    for wrong in (1 / fan_in, 2 / fan_out, 4 / fan_in):  # (xavier's 2/(fan_in+fan_out) is 2/fan_in above)
        assert abs(he / wrong - 1) > 3 * tol
    bound = init.xavier_uniform_(torch.empty(shape), generator=gen(10)).abs().max().item()
    assert bound > math.sqrt(6 / (fan_in + fan_out)) * (1 - 10 / n)
    assert bound > math.sqrt(3 / (fan_in + fan_out)) * 1.3  # a 3 instead of the 6 would be caught


def test_lecun_is_what_selu_needs_and_differs_from_torchs_selu_gain():
    w = torch.empty(256, 128)
    assert init.he_std(w, "linear") == pytest.approx(1 / math.sqrt(128), rel=1e-15)
    assert init.he_std(w, "selu") == pytest.approx(0.75 / math.sqrt(128), rel=1e-15)


# --- plain draws ------------------------------------------------------------------------------

def test_constant_zeros_normal_uniform():
    w = torch.empty(32, 16)
    assert torch.all(init.constant_(w, 0.3) == 0.3)
    assert torch.all(init.zeros_(w) == 0)
    check_sample(init.normal_(torch.empty(256, 128), 0.05, generator=gen(11)), 0.05**2, normal=True)
    check_sample(init.uniform_(torch.empty(256, 128), 0.2, generator=gen(12)), 0.2**2 / 3, normal=False)
    bias = init.normal_(torch.empty(4096), 1.0, generator=gen(13))  # 1-D tensors need no fans
    check_sample(bias, 1.0, normal=True)


def test_generator_makes_draws_reproducible_without_global_state():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = init.he_normal_(torch.empty(8, 8), generator=gen(14))
    b = init.he_normal_(torch.empty(8, 8), generator=gen(14))
    assert torch.equal(a, b)
    assert torch.equal(before, torch.random.get_rng_state())


def test_init_runs_under_no_grad_on_parameters():
    layer = nn.Linear(16, 8)
    for name in init.SCHEMES:
        kwargs = {"constant": {"value": 0.1}, "normal": {"std": 0.1}, "uniform": {"bound": 0.1}}.get(name, {})
        out = init.get(name)(layer.weight, **kwargs)
        assert out is layer.weight and out.requires_grad and out.grad_fn is None


# --- orthogonal -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES + [(64, 64)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal_rows_or_columns_orthonormal(shape, gain):
    w = init.orthogonal_(torch.empty(shape), gain=gain, generator=gen(15))
    m = w.reshape(shape[0], -1) / gain
    product = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T  # tall: columns; wide: rows
    torch.testing.assert_close(product, torch.eye(product.shape[0]), atol=1e-5, rtol=0)
    theirs = nn.init.orthogonal_(torch.empty(shape), gain=gain, generator=gen(15))
    torch.testing.assert_close(w, theirs, rtol=1e-6, atol=1e-7)


def test_orthogonal_sign_correction_makes_it_haar():
    # Householder QR alone gives Q[0, 0] = -|a_00| / ||a_0|| < 0 every time; Haar-distributed Q has a
    # symmetric Q[0, 0]. Over 400 draws the positive fraction has standard error 0.025: 5 of them is 0.125.
    g = gen(16)
    positive = sum(init.orthogonal_(torch.empty(6, 6), generator=g)[0, 0].item() > 0 for _ in range(400))
    assert abs(positive / 400 - 0.5) < 0.125


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonal_entries_have_the_haar_moments_as_torch_draws_do(shape):
    """An entry q of a Haar-random matrix with orthonormal rows or columns (n = max(rows, cols)) has
    E[q²] = 1/n and E[q⁴] = 3/(n(n+2)) (q² ~ Beta(1/2, (n-1)/2)); QR without the sign correction
    keeps E[q²] but not the symmetry of q. 3000 draws of ours and, independently, of torch's."""
    n, draws = max(shape), 3000
    ours = torch.stack([init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=2.0, generator=g)
                        for g in [gen(60)] for _ in range(draws)]) / 2.0
    g = gen(61)
    theirs = torch.stack([nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), generator=g)
                          for _ in range(draws)])
    for q in (ours, theirs):
        q = q[:, 0, 0]
        m2, m4 = q.pow(2).mean().item(), q.pow(4).mean().item()
        se2 = math.sqrt((3 / (n * (n + 2)) - 1 / n**2) / draws)
        assert abs(m2 - 1 / n) < 5 * se2
        assert m4 == pytest.approx(3 / (n * (n + 2)), rel=0.25)
        assert abs(q.mean().item()) < 5 * math.sqrt(1 / n / draws)  # symmetric about 0: the sign correction


def test_orthogonal_argument_errors():
    with pytest.raises(TypeError, match="gain must be a finite number >= 0"):
        init.orthogonal_(torch.empty(3, 3), gain="1")
    with pytest.raises(ValueError, match="gain must be a finite number >= 0"):
        init.orthogonal_(torch.empty(3, 3), gain=-1.0)
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        init.orthogonal_([[1.0, 0.0], [0.0, 1.0]])


# --- PyTorch's nn.Linear default ----------------------------------------------------------------

def test_pytorch_default_linear_reproduces_nn_linear():
    ours = nn.Linear(300, 200)  # constructing it draws once already: re-seed before drawing again
    torch.manual_seed(17)
    reference = nn.Linear(300, 200)
    torch.manual_seed(17)
    init.pytorch_default_linear_(ours)
    torch.testing.assert_close(ours.weight, reference.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, reference.bias, rtol=0, atol=0)


def test_pytorch_default_is_a_third_of_lecun_and_a_sixth_of_he():
    layer = init.pytorch_default_linear_(nn.Linear(512, 256), generator=gen(18))
    w = layer.weight.detach()
    check_sample(w, 1 / (3 * 512), normal=False)
    assert w.abs().max().item() <= 1 / math.sqrt(512) * (1 + 1e-6)
    assert layer.bias.abs().max().item() <= 1 / math.sqrt(512)
    lecun, he = 1 / 512, 2 / 512
    tol = variance_tolerance(w.numel(), normal=False)
    assert w.pow(2).mean().item() / lecun == pytest.approx(1 / 3, rel=tol)
    assert w.pow(2).mean().item() / he == pytest.approx(1 / 6, rel=tol)


def test_pytorch_default_linear_without_bias_and_type_error():
    layer = init.pytorch_default_linear_(nn.Linear(8, 4, bias=False), generator=gen(19))
    assert layer.bias is None
    with pytest.raises(TypeError, match="layer must be an nn.Linear"):
        init.pytorch_default_linear_(nn.Conv1d(2, 2, 3))


# --- registry and MLP --------------------------------------------------------------------------

def test_registry_names():
    required = {"zeros", "normal", "xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal",
                "lecun_uniform", "orthogonal", "pytorch_default"}
    assert required <= set(init.SCHEMES)
    for name, fn in init.SCHEMES.items():
        assert init.get(name) is fn


@pytest.mark.parametrize("name", ["he_normal", "xavier_uniform", "orthogonal", "lecun_normal", "zeros"])
def test_for_linear_inside_mlp(name):
    model = dg.models.MLP(64, 10, width=32, depth=4, init=init.for_linear(name, generator=gen(20)))
    for layer in model.linear_layers():
        assert torch.all(layer.bias == 0)
    first = model.linear_layers()[0].weight.detach()
    if name == "he_normal":
        check_sample(first, 2 / 64, normal=True)
    if name == "orthogonal":
        torch.testing.assert_close(first @ first.T, torch.eye(32), atol=1e-5, rtol=0)
    assert model(torch.randn(5, 64)).shape == (5, 10)


def test_for_linear_kwargs_and_pytorch_default_bias():
    model = dg.models.MLP(64, 10, width=32, depth=2, activation="tanh",
                          init=init.for_linear("xavier_normal", gain=init.gain("tanh")))
    assert model.linear_layers()[0].weight.std().item() == pytest.approx(5 / 3 * math.sqrt(2 / 96), rel=0.1)
    model = dg.models.MLP(64, 10, width=32, depth=2, init=init.for_linear("normal", std=0.01))
    assert model.linear_layers()[1].weight.std().item() == pytest.approx(0.01, rel=0.1)
    model = dg.models.MLP(64, 10, width=32, depth=2, init=init.for_linear("pytorch_default", generator=gen(21)))
    bias = model.linear_layers()[0].bias
    assert bias.abs().max().item() <= 1 / 8 and bias.abs().max().item() > 0.1  # torch's bias rule kept


def test_for_linear_checks_its_arguments_early():
    with pytest.raises(ValueError, match="scheme must be one of .*'he_normal'.*got 'kaiming'"):
        init.for_linear("kaiming")
    with pytest.raises(TypeError, match="for_linear\\('normal'\\).*std"):
        init.for_linear("normal")
    with pytest.raises(TypeError, match="for_linear\\('he_normal'\\).*nonlinearity"):
        init.for_linear("he_normal", nonlinearity="relu")


# --- products of random matrices ----------------------------------------------------------------

def test_product_singular_values_orthogonal_is_an_isometry():
    sv = init.product_singular_values(30, 64, "orthogonal", generator=gen(22))
    assert sv.dtype == torch.float64 and sv.shape == (64,)
    torch.testing.assert_close(sv, torch.ones(64, dtype=torch.float64), atol=1e-4, rtol=0)


def test_product_singular_values_gaussian_spreads_but_keeps_mean_square():
    depth, size = 10, 64
    sv = init.product_singular_values(depth, size, "gaussian", generator=gen(23))
    assert torch.all(sv[:-1] >= sv[1:])  # descending
    assert sv[0].item() / sv[-1].item() > 1e6  # orders of magnitude
    assert sv[0].item() > 2 and sv[-1].item() < 1e-3
    # E[mean sv^2] = 1; each layer multiplies it by at most a chi^2_n / n factor (relative sd sqrt(2/n)),
    # so log(mean sv^2) has sd at most sqrt(2 depth / n) = 0.56; allow 3 of them (loose).
    assert abs(math.log(sv.pow(2).mean().item())) < 3 * math.sqrt(2 * depth / size)


def test_product_singular_values_argument_errors():
    with pytest.raises(ValueError, match="scheme must be one of 'gaussian', 'orthogonal'"):
        init.product_singular_values(3, 4, "he")
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        init.product_singular_values(0, 4, "gaussian")
    with pytest.raises(TypeError, match="size must be an int"):
        init.product_singular_values(3, 4.0, "gaussian")


# --- argument errors ---------------------------------------------------------------------------

def test_argument_errors_name_the_argument():
    w = torch.empty(8, 4)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init.get("glorot")
    with pytest.raises(ValueError, match="activation must be one of"):
        init.he_normal_(w, activation="swish")
    with pytest.raises(ValueError, match="mode must be one of 'fan_in', 'fan_out'; got 'fan_avg'"):
        init.he_uniform_(w, mode="fan_avg")
    with pytest.raises(ValueError, match="tensor must have at least 2 dimensions"):
        init.xavier_normal_(torch.empty(5))
    with pytest.raises(ValueError, match="tensor must have at least 2 dimensions"):
        init.orthogonal_(torch.empty(5))
    with pytest.raises(ValueError, match="tensor must have at least 2 dimensions"):
        init.fans(torch.empty(5))
    with pytest.raises(ValueError, match="std must be a finite number >= 0, got -0.1"):
        init.normal_(w, -0.1)
    with pytest.raises(ValueError, match="bound must be a finite number >= 0"):
        init.uniform_(w, -1.0)
    with pytest.raises(ValueError, match="gain must be a finite number >= 0"):
        init.xavier_uniform_(w, gain=-1.0)
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        init.lecun_normal_([[1.0]])
    with pytest.raises(ValueError, match="value must be a finite number"):  # right type, bad value
        init.constant_(w, float("nan"))
    with pytest.raises(ValueError, match="zero fan_in"):
        init.lecun_normal_(torch.empty(4, 0))


# --- variance by formula, recommendations, signal profiles ----------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SCALED)
def test_variance_is_the_formula_and_the_draws(name, shape):
    assert init.variance(name, torch.empty(shape)) == pytest.approx(formula(name, shape), rel=1e-12)
    theirs = torch_counterpart(name)(torch.empty(shape), generator=gen(31))
    check_sample(theirs, init.variance(name, torch.empty(shape)), name in NORMAL)


@pytest.mark.parametrize("shape", SHAPES)
def test_variance_with_gains_and_modes(shape):
    fan_in, fan_out = expected_fans(shape)
    t = torch.empty(shape)
    assert init.variance("xavier_uniform", t, gain=3.0) == pytest.approx(9 * 2 / (fan_in + fan_out))
    assert init.variance("he_normal", t, activation="tanh") == pytest.approx((5 / 3) ** 2 / fan_in)
    assert init.variance("he_uniform", t, mode="fan_out") == pytest.approx(2 / fan_out)
    assert init.variance("he_normal", t, activation="leaky_relu", param=0.2) == pytest.approx(
        2 / (1 + 0.04) / fan_in)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("g", [1.0, 1.5])
def test_variance_of_orthogonal_is_its_mean_square_entry(shape, g):
    w = nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=g, generator=gen(32))
    assert init.variance("orthogonal", w, gain=g) == pytest.approx(w.pow(2).mean().item(), rel=1e-10)


def test_variance_argument_errors():
    with pytest.raises(ValueError, match="scheme must be one of .*got 'normal'"):
        init.variance("normal", torch.empty(4, 4))
    with pytest.raises(TypeError, match="draws nothing"):
        init.variance("he_normal", torch.empty(4, 4), generator=gen(0))
    with pytest.raises(TypeError, match="variance\\('lecun_normal'\\)"):
        init.variance("lecun_normal", torch.empty(4, 4), gain=2.0)


def test_recommended_schemes_make_chi_one_except_for_the_sigmoid():
    from deepgrad import propagation
    t = torch.empty(256, 256)
    for activation in init.RECOMMENDED:
        scheme, kwargs = init.recommended(activation)
        assert scheme in init.SCHEMES
        weight_var = init.variance(scheme, t, **kwargs) * 256  # sigma_w^2
        if activation in ("identity", "relu", "tanh"):
            chi = propagation.factor_at_fixed_point(activation, weight_var)
            assert chi == pytest.approx(1.0, abs=1e-6), activation
    chi_sigmoid = propagation.factor_at_fixed_point("sigmoid", init.variance("xavier_normal", t) * 256)
    assert chi_sigmoid < 0.1
    kwargs = init.recommended("relu")[1]
    kwargs["activation"] = "tanh"  # a copy: the registry is unchanged
    assert init.RECOMMENDED["relu"][1] == {"activation": "relu"}
    with pytest.raises(ValueError, match="activation must be one of"):
        init.recommended("swish")


def _independent_profile(activation, scheme_torch, depth, width, batch, seed):
    """The same stack built from nn.Linear, torch.nn.init and autograd hooks."""
    g = gen(seed)
    layers = [nn.Linear(width, width, bias=False).double() for _ in range(depth)]
    for layer in layers:
        scheme_torch(layer.weight, generator=g)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    u = torch.randn(batch, width, generator=g, dtype=torch.float64) / math.sqrt(width)
    f = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}[activation]
    zs, a_std, a = [], [], x
    for layer in layers:
        z = layer(a)
        z.retain_grad()
        zs.append(z)
        a = f(z)
        a_std.append(a.std().item())
    (a * u).sum().backward()
    return a_std, [z.grad.std().item() for z in zs]


@pytest.mark.parametrize("activation,scheme", [("tanh", "xavier_normal"), ("relu", "he_uniform"),
                                               ("identity", "orthogonal"), ("relu", "pytorch_default")])
def test_signal_profile_against_nn_linear_and_autograd(activation, scheme):
    prof = init.signal_profile(activation, scheme, depth=6, width=32, batch=16, generator=gen(40))
    a_std, d_std = _independent_profile(activation, torch_counterpart(scheme) if scheme != "orthogonal"
                                        else nn.init.orthogonal_, 6, 32, 16, 40)
    torch.testing.assert_close(prof.activation_std, torch.tensor(a_std, dtype=torch.float64))
    torch.testing.assert_close(prof.gradient_std, torch.tensor(d_std, dtype=torch.float64))
    assert prof.activation == activation and prof.scheme == scheme


def test_signal_profile_follows_the_variance_argument():
    # He keeps a ReLU stack's scale; PyTorch's default loses a factor sqrt(6) per layer in the
    # second moment of z (chi = 1/6), so the activations' std shrinks by about 6^(-1/2) a layer.
    he = init.signal_profile("relu", "he_normal", depth=20, width=256, generator=gen(41))
    default = init.signal_profile("relu", "pytorch_default", depth=20, width=256, generator=gen(41))
    assert 0.5 < (he.activation_std[-1] / he.activation_std[0]).item() < 2
    assert 0.5 < (he.gradient_std[0] / he.gradient_std[-1]).item() < 2
    per_layer = (default.activation_std[-1] / default.activation_std[0]).item() ** (1 / 19)
    assert per_layer == pytest.approx(6 ** -0.5, rel=0.05)
    # an orthogonal linear stack keeps every example's norm exactly
    ortho = init.signal_profile("identity", "orthogonal", depth=30, width=64, generator=gen(42))
    assert (ortho.activation_std[-1] / ortho.activation_std[0]).item() == pytest.approx(1, rel=0.05)


def test_signal_profile_argument_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        init.signal_profile("softmax", "he_normal", depth=2, width=4)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init.signal_profile("relu", "glorot", depth=2, width=4)
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        init.signal_profile("relu", "he_normal", depth=0, width=4)
    with pytest.raises(TypeError):
        init.signal_profile("relu", "normal", depth=2, width=4)  # normal needs std=
    with pytest.raises(TypeError, match="scheme_kwargs must be None or a dict"):
        init.signal_profile("relu", "normal", depth=2, width=4, scheme_kwargs=[("std", 1.0)])
    # a scheme's own `activation` keyword does not clash with the stack's
    prof = init.signal_profile("selu", "he_normal", depth=2, width=4, scheme_kwargs={"activation": "selu"})
    assert prof.activation == "selu"


# --- the chapter's formulas, measured ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["lecun_normal", "xavier_normal", "xavier_uniform", "he_normal"])
@pytest.mark.parametrize("fan_in,fan_out", [(128, 256), (256, 64)])
def test_forward_and_backward_factors_of_a_linear_layer(name, fan_in, fan_out):
    """Var(z) = fan_in · v · E[a²] and Var(δ W) = fan_out · v · Var(δ) (eq-initialization-fans),
    measured on a linear layer: Glorot's factors are 2/(1+r) and 2r/(1+r), r = fan_out / fan_in."""
    g = gen(50)
    w = init.get(name)(torch.empty(fan_out, fan_in, dtype=torch.float64), generator=g)
    v = init.variance(name, w)
    x = torch.randn(4096, fan_in, generator=g, dtype=torch.float64)
    delta = torch.randn(4096, fan_out, generator=g, dtype=torch.float64)
    forward = (x @ w.T).pow(2).mean().item() / x.pow(2).mean().item()
    backward = (delta @ w).pow(2).mean().item() / delta.pow(2).mean().item()
    # the factor given this particular W is its squared Frobenius norm over the other fan: exact in
    # expectation over x; the draw of W adds a relative spread of order sqrt(2 / numel)
    assert forward == pytest.approx(fan_in * v, rel=0.1)
    assert backward == pytest.approx(fan_out * v, rel=0.1)
    if name.startswith("xavier"):
        r = fan_out / fan_in
        assert fan_in * v == pytest.approx(2 / (1 + r)) and fan_out * v == pytest.approx(2 * r / (1 + r))


@pytest.mark.parametrize("slope", [0.0, 0.2, 0.5])
def test_leaky_relu_keeps_the_fraction_one_plus_a_squared_over_two(slope):
    """E[f(z)²] = (1 + a²)/2 · E[z²] for symmetric z, so the preserving gain is √(2/(1+a²))."""
    z = torch.randn(400_000, generator=gen(51), dtype=torch.float64)
    kept = torch.nn.functional.leaky_relu(z, slope).pow(2).mean() / z.pow(2).mean()
    assert kept.item() == pytest.approx((1 + slope**2) / 2, rel=0.01)
    assert init.gain("leaky_relu", slope) ** 2 * kept.item() == pytest.approx(1, rel=0.01)


def test_uniform_variance_is_b_squared_over_three():
    w = init.uniform_(torch.empty(400_000, 1, dtype=torch.float64), 0.7, generator=gen(52))
    assert w.pow(2).mean().item() == pytest.approx(0.7**2 / 3, rel=0.01)


def test_constant_init_keeps_units_identical_under_sgd_with_momentum():
    """The symmetry proposition: equal units get equal gradients and stay equal."""
    torch.manual_seed(0)
    model = dg.models.MLP(8, 3, width=5, depth=2, activation="tanh",
                          init=init.for_linear("constant", value=0.3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = gen(53)
    for _ in range(5):
        x = torch.randn(16, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for layer in model.linear_layers()[:-1]:
            grad = layer.weight.grad
            torch.testing.assert_close(grad, grad[:1].expand_as(grad), rtol=1e-12, atol=1e-15)
        opt.step()
    for layer in model.linear_layers()[:-1]:
        w = layer.weight.detach()
        assert (w - w[0]).abs().max().item() < 1e-12
        assert (w[0] - 0.3).abs().max().item() > 1e-4  # they did move, together
