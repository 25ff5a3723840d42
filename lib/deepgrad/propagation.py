"""How signals and gradients propagate through a deep random network: predicted, then measured.

A network at initialisation is a stack of random layers. With weights W^l_ij ~ N(0, σ_w²/n_{l-1})
(n_{l-1} the layer's fan-in) and biases b^l_i ~ N(0, σ_b²), the pre-activations
z^l = W^l a^{l-1} + b^l, a^l = f(z^l), of a wide network are close to Gaussian with mean zero and a
variance q^l that obeys a one-dimensional recursion (Poole et al., 2016; Schoenholz et al., 2017;
He et al., 2015 for ReLU; Glorot & Bengio, 2010 for linear and tanh layers)::

    forward    q^l = σ_w² E[f(z)²] + σ_b²,            z ~ N(0, q^{l-1})
    backward   E‖δ^{l-1}‖² = χ(q^{l-1}) E‖δ^l‖²,      χ(q) = σ_w² E[f'(z)²],  z ~ N(0, q)

where δ^l = ∂L/∂z^l is the back-propagated gradient of one example. The backward step assumes that
the weights met on the way back behave as if drawn afresh, independent of the gradient they multiply
and of the slopes they meet (the "gradient independence" assumption of Schoenholz et al.): exact for
linear layers, accurate for wide nonlinear ones.

The prediction:

- :func:`gaussian_expectation`: E[g(z)] for z ~ N(0, q), by quadrature;
- :func:`variance_map`, :func:`forward_variances`: the forward recursion and its iterates;
- :func:`backward_factor` (χ), :func:`predicted_deltas`: the backward recursion;
- :func:`fixed_point`, :func:`factor_at_fixed_point`, :func:`critical_weight_variance`: where the
  recursion settles and the weight variance at which χ = 1 there (the order-to-chaos transition);
- :func:`saturation_threshold`: where a sigmoid or tanh unit's slope drops below a fraction of its maximum.

The measurement:

- :func:`propagate`: the one forward-and-backward measurement of a stack of layers: run a batch
  through it, back-propagate a random readout with autograd, return per-layer statistics
  (:class:`RandomNetStats`), among them δ^l, the quantity that vanishes or explodes;
- :func:`random_mlp_stats`: a random MLP parametrised by σ_w and σ_b (Gaussian or orthogonal
  weights, drawn with :mod:`deepgrad.init`'s samplers), measured by :func:`propagate`;
- :func:`signal_profile`: a random stack initialised by any :mod:`deepgrad.init` scheme, measured by
  :func:`propagate` (:class:`SignalProfile`: the std of a^l and of δ^l per layer);
- :func:`first_layer_gradients`: ‖δ^1‖ for networks of many depths at once, by the backward
  recursion written out (tested against autograd).

Non-finite values (overflow in float32, say) are returned as they are; nothing here raises or warns
because a network diverged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deepgrad import activations, init
from deepgrad._checks import fraction, non_negative, one_of, positive_int
from deepgrad.diagnostics import SATURATION

#: Default number of quadrature points of :func:`gaussian_expectation` (midpoints of equal cells).
QUADRATURE_POINTS = 2048
#: Half-width, in standard deviations, of the interval :func:`gaussian_expectation` integrates over.
QUADRATURE_HALF_WIDTH = 10.0
#: Activations whose slope decays to zero on both sides (:func:`saturation_threshold`).
SATURATING = ("sigmoid", "tanh")
#: Floating-point types the measuring functions accept.
DTYPES = (torch.float32, torch.float64)
#: Stand-in for q → 0⁺ where a limit is needed (ReLU's slope at exactly z = 0 is 0, its limit 1/2).
_TINY_VARIANCE = 1e-200


# ----------------------------------------------------------------------------------------------
# Gaussian expectations
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _quadrature(points: int, half_width: float) -> tuple[Tensor, Tensor]:
    """Nodes x_k and weights w_k with Σ_k w_k g(x_k) ≈ E[g(x)], x ~ N(0, 1): the midpoint rule.

    The nodes are the midpoints of ``points`` equal cells of [-half_width, half_width]. With an even
    number of cells no node sits at 0, so the rule is exactly symmetric: it integrates the step
    1[x > 0] (ReLU's derivative) to exactly 1/2. The weights are normalised to sum to 1.
    """
    h = 2 * half_width / points
    x = -half_width + h * (torch.arange(points, dtype=torch.float64) + 0.5)
    w = torch.exp(-0.5 * x**2)
    return x, w / w.sum()


def _variances(name: str, value: float | Tensor) -> Tensor:
    """``value`` as a float64 tensor of variances, checked to be >= 0 (``inf`` allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise TypeError(f"{name} must be a number >= 0 or a tensor of them, got {type(value).__name__} {value!r}")
    q = torch.as_tensor(value, dtype=torch.float64)
    if torch.isnan(q).any() or (q < 0).any():
        raise ValueError(f"{name} must be >= 0 (inf allowed), got {value!r}")
    return q


def gaussian_expectation(fn: Callable[[Tensor], Tensor], variance: float | Tensor, *,
                         points: int = QUADRATURE_POINTS) -> Tensor:
    """E[fn(z)] for z ~ N(0, variance), by quadrature; vectorised over a tensor of variances.

    Writes z = √q·x with x ~ N(0, 1) and applies the midpoint rule on ``points`` equal cells of
    x ∈ [-10, 10] (the mass outside is below 10⁻²²). For the smooth, fast-decaying integrands of this
    book the error falls geometrically with the number of points (with 2048, below 10⁻¹² for tanh and
    sigmoid up to q ≈ 1000, checked by the tests); unlike Gauss–Hermite with a few dozen nodes, the
    rule also resolves the narrow bump f'(z)² of a saturating unit when q is large (its width in x is
    about 1/√q). An integrand with a kink at 0, such as ReLU itself, converges only like the square
    of the cell width (relative error about 10⁻⁶); ReLU's f² and f'² are integrated exactly, by
    symmetry. ``variance`` may be 0 (the result is fn(0)) or ``inf`` (the
    limit, where fn has one at ±∞). Returns a float64 tensor shaped like ``variance``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable taking a tensor, got {fn!r}")
    positive_int("points", points, minimum=2)
    if points % 2:
        raise ValueError(f"points must be an even int (no node at 0), got {points}")
    q = _variances("variance", variance)
    x, w = _quadrature(points, QUADRATURE_HALF_WIDTH)
    z = q.sqrt().unsqueeze(-1) * x  # inf * x is ±inf, never nan, because no node is 0
    return (fn(z) * w).sum(-1)


# ----------------------------------------------------------------------------------------------
# The recursion
# ----------------------------------------------------------------------------------------------

def _weight_vars(value: float | Tensor) -> Tensor:
    """σ_w² as a float64 tensor of finite values >= 0."""
    if isinstance(value, Tensor):
        w = value.detach().to(torch.float64)
        if not (torch.isfinite(w).all() and (w >= 0).all()):
            raise ValueError(f"weight_var must be finite and >= 0, got {value!r}")
        return w
    return torch.tensor(non_negative("weight_var", value), dtype=torch.float64)


def variance_map(activation: str, weight_var: float | Tensor, bias_var: float, q: float | Tensor) -> Tensor:
    """One step of the forward recursion, q^l = V(q^{l-1}) = σ_w² E[f(z)²] + σ_b², z ~ N(0, q^{l-1}).

    ``weight_var`` is σ_w² (weights N(0, σ_w²/fan_in)), ``bias_var`` is σ_b², ``q`` is q^{l-1};
    tensors of ``weight_var`` and ``q`` broadcast. Poole et al. (2016), eq. (3); for ReLU,
    V(q) = σ_w² q/2 + σ_b² (He et al., 2015); for a linear layer, σ_w² q + σ_b² (Glorot & Bengio, 2010).
    """
    f = activations.get(activation).fn
    w = _weight_vars(weight_var)
    non_negative("bias_var", bias_var)
    return w * gaussian_expectation(lambda z: f(z) ** 2, q) + bias_var


def backward_factor(activation: str, weight_var: float | Tensor, q: float | Tensor) -> Tensor:
    """χ(q) = σ_w² E[f'(z)²], z ~ N(0, q): the factor one layer multiplies E‖δ‖² by.

    From δ^{l-1}_j = f'(z^{l-1}_j) Σ_i W^l_ij δ^l_i with W^l independent of the rest,
    E‖δ^{l-1}‖² = Σ_j E[f'(z_j)²] Σ_i E[(W^l_ij)²] E[(δ^l_i)²] = σ_w² E[f'(z)²] E‖δ^l‖²
    (Schoenholz et al., 2017, eq. (6): their χ_1 is χ at the fixed point q*).
    For ReLU E[f'(z)²] = 1/2 whatever q > 0, so χ = σ_w²/2 (He et al., 2015). At q = 0 exactly the
    slope is f'(0), which for ReLU is 0 by PyTorch's convention; see :func:`factor_at_fixed_point`.
    Tensors of ``weight_var`` and ``q`` broadcast.
    """
    df = activations.get(activation).derivative
    return _weight_vars(weight_var) * gaussian_expectation(lambda z: df(z) ** 2, q)


def forward_variances(activation: str, weight_var: float, bias_var: float, depth: int,
                      input_second_moment: float = 1.0) -> Tensor:
    """Predicted q^1, ..., q^depth of a network's hidden layers, as a float64 tensor.

    The first layer sees the data: q^1 = σ_w² · (1/n_0)‖x‖² + σ_b², where ``input_second_moment``
    is the mean of x_j² over features and examples. Every later layer applies :func:`variance_map`.
    """
    activations.get(activation)
    positive_int("depth", depth)
    non_negative("weight_var", weight_var)
    non_negative("bias_var", bias_var)
    non_negative("input_second_moment", input_second_moment)
    q = [torch.tensor(weight_var * input_second_moment + bias_var, dtype=torch.float64)]
    for _ in range(depth - 1):
        q.append(variance_map(activation, weight_var, bias_var, q[-1]))
    return torch.stack(q)


def predicted_deltas(activation: str, weight_var: float, q: Tensor) -> Tensor:
    """Predicted E‖δ^l‖² of one example for hidden layers l = 1..L, given their variances q^1..q^L.

    For a network whose loss is its readout's output (so δ = 1 there, the convention of
    :func:`random_mlp_stats`), with readout weights of variance σ_w²/n like every other layer:

        E‖δ^l‖² = χ(q^l) χ(q^{l+1}) ··· χ(q^L).
    """
    q = _variances("q", q)
    if q.ndim != 1 or len(q) == 0:
        raise ValueError(f"q must be a 1-D tensor of per-layer variances, got shape {tuple(q.shape)}")
    non_negative("weight_var", weight_var)
    chi = backward_factor(activation, weight_var, q)
    return torch.flip(torch.cumprod(torch.flip(chi, [0]), 0), [0])


_LOG_LIMIT = math.log(1e300)


def _illinois(h: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, ha: Tensor, hb: Tensor,
              tol: float, max_iter: int = 200) -> Tensor:
    """Roots of h in the brackets (a, b) (h(a), h(b) of opposite signs), by the Illinois method.

    Vectorised: ``h(t, idx)`` evaluates h for the entries ``idx`` at points ``t``. Regula falsi whose
    retained end has its value halved, so that both ends close in (superlinear convergence).
    """
    a, b, ha, hb = a.clone(), b.clone(), ha.clone(), hb.clone()
    for _ in range(max_iter):
        idx = ((b - a).abs() > tol).nonzero().squeeze(-1)
        if len(idx) == 0:
            break
        c = (a[idx] * hb[idx] - b[idx] * ha[idx]) / (hb[idx] - ha[idx])
        hc = h(c, idx)
        flip = hc * hb[idx] < 0
        a[idx] = torch.where(flip, b[idx], a[idx])
        ha[idx] = torch.where(flip, hb[idx], ha[idx] / 2)
        b[idx], hb[idx] = c, hc
        exact = idx[hc == 0]
        a[exact] = b[exact]
    return (a + b) / 2


def fixed_point(activation: str, weight_var: float | Tensor, bias_var: float = 0.0, *, start: float = 1.0,
                rtol: float = 1e-10) -> float | Tensor:
    """q* = lim q^l: the variance a deep network settles at when the recursion starts from ``start``.

    V(q) is increasing in q, so the iterates move monotonically towards the first fixed point
    V(q) = q in the direction of V(start) - start. We bracket it on log q, stepping away from
    ``start`` by log 2, 2 log 2, 4 log 2, ..., and solve V(q)/q = 1 in the bracket by the Illinois
    method to a relative ``rtol`` (the iterates themselves approach q* slowly near a critical point).
    Vectorised over a tensor of ``weight_var``. Returns ``inf`` where there is no fixed point below
    10³⁰⁰ (ReLU or linear layers above the critical weight variance: q^l grows geometrically) and 0.0
    where the iterates decay to zero (no biases, below it). A float for a float ``weight_var``.
    """
    f = activations.get(activation).fn
    w = _weight_vars(weight_var)
    non_negative("bias_var", bias_var)
    non_negative("start", start)
    fraction("rtol", rtol)
    flat = w.reshape(-1)
    t0 = math.log(start if start > 0 else max(bias_var, 1e-300))

    def excess(t: Tensor, idx: Tensor) -> Tensor:  # V(q)/q - 1 at q = e^t
        q = t.exp()
        return (flat[idx] * gaussian_expectation(lambda z: f(z) ** 2, q) + bias_var) / q - 1

    everyone = torch.arange(len(flat))
    h0 = excess(torch.full_like(flat, t0), everyone)
    sign = torch.where(h0 > 0, 1.0, -1.0).to(torch.float64)  # direction of travel on log q
    # Bracket: distances d_near < d_far from t0 with the sign change between them
    d_near, d_far = torch.zeros_like(flat), torch.full_like(flat, math.log(2.0))
    h_near, h_far = h0.clone(), torch.zeros_like(flat)
    escaped = torch.zeros(len(flat), dtype=torch.bool)
    looking = h0 != 0
    while looking.any():
        idx = looking.nonzero().squeeze(-1)
        h_far[idx] = excess(t0 + sign[idx] * d_far[idx], idx)
        grow = idx[h_far[idx] * sign[idx] > 0]
        d_near[grow], h_near[grow] = d_far[grow], h_far[grow]
        d_far[grow] = d_far[grow] * 2
        out = grow[(t0 + sign[grow] * d_far[grow]).abs() > _LOG_LIMIT]
        escaped[out] = True
        looking[idx[h_far[idx] * sign[idx] <= 0]] = False
        looking[out] = False
    solve = ((h0 != 0) & ~escaped).nonzero().squeeze(-1)
    t_star = torch.full_like(flat, t0)
    if len(solve):
        def h(t: Tensor, idx: Tensor) -> Tensor:
            return excess(t, solve[idx])

        a, b = t0 + sign[solve] * d_near[solve], t0 + sign[solve] * d_far[solve]
        t_star[solve] = _illinois(h, a, b, h_near[solve], h_far[solve], tol=rtol)
    q_star = torch.where(escaped, torch.where(sign > 0, math.inf, 0.0), t_star.exp()).reshape(w.shape)
    return q_star if isinstance(weight_var, Tensor) else q_star.item()


def factor_at_fixed_point(activation: str, weight_var: float | Tensor, bias_var: float = 0.0) -> float | Tensor:
    """χ(q*), the per-layer factor of E‖δ‖² deep inside a network (Schoenholz et al.'s χ_1).

    Where q* = 0 the factor is the limit q → 0⁺, σ_w² f'(0⁺)²; where q* = ∞ it is the limit q → ∞
    (for ReLU and linear layers χ does not depend on q at all). Vectorised like :func:`fixed_point`.
    """
    q = torch.as_tensor(fixed_point(activation, weight_var, bias_var), dtype=torch.float64)
    chi = backward_factor(activation, weight_var, q.clamp(min=_TINY_VARIANCE))
    return chi if isinstance(weight_var, Tensor) else chi.item()


def critical_weight_variance(activation: str, bias_var: float = 0.0, *, low: float = 1e-2,
                             high: float = 1e3, rtol: float = 1e-10) -> float:
    """The σ_w² at which χ(q*) = 1: the edge between vanishing and exploding gradients.

    Solves χ(q*(σ_w²)) = 1 on log σ_w² in [``low``, ``high``] by the Illinois method, assuming a single
    crossing (χ(q*) increases with σ_w² for the activations of this book). Schoenholz et al. (2017)
    call this line in the (σ_w², σ_b²) plane the order-to-chaos transition: for tanh it passes through
    σ_w² = 1 at σ_b² = 0 and through about 1.76 at σ_b² = 0.05; for ReLU it is σ_w² = 2 whatever σ_b²
    (He et al., 2015). Raises ``ValueError`` if χ(q*) - 1 has the same sign at both ends of the range.
    """
    activations.get(activation)
    non_negative("bias_var", bias_var)
    fraction("rtol", rtol)
    if not 0 < low < high:
        raise ValueError(f"low and high must satisfy 0 < low < high, got low={low}, high={high}")

    def h(s: Tensor, idx: Tensor | None = None) -> Tensor:
        return factor_at_fixed_point(activation, s.exp(), bias_var) - 1

    ends = h(torch.tensor([math.log(low), math.log(high)], dtype=torch.float64))
    if not ends[0] < 0 < ends[1]:
        raise ValueError(f"χ(q*) - 1 does not change sign for weight_var in [{low}, {high}] "
                         f"(activation {activation!r}, bias_var {bias_var})")
    s = _illinois(h, torch.tensor([math.log(low)], dtype=torch.float64),
                  torch.tensor([math.log(high)], dtype=torch.float64), ends[:1], ends[1:], tol=rtol)
    return math.exp(s.item())


def saturation_threshold(activation: str, fraction_of_max: float = SATURATION) -> float:
    """The |z| beyond which a sigmoid or tanh unit's slope is below ``fraction_of_max`` of its maximum.

    The default is the book's one definition of a saturated unit, :data:`deepgrad.diagnostics.SATURATION`
    (10 % of the maximum slope): |z| > 3.64 for the sigmoid, 1.82 for tanh.

    Closed form: σ'(z) = s(1 - s) with s = σ(z), so σ'(z) = c at s = (1 - √(1 - 4c))/2 and
    |z| = log((1 - s)/s); with c = fraction_of_max / 4. Since tanh'(z) = 4σ'(2z), tanh's threshold
    (for the same fraction of its maximum, 1) is half the sigmoid's.
    """
    one_of("activation", activation, SATURATING)
    c = fraction("fraction_of_max", fraction_of_max) / 4
    s = (1 - math.sqrt(1 - 4 * c)) / 2
    z = math.log((1 - s) / s)
    return z if activation == "sigmoid" else z / 2


# ----------------------------------------------------------------------------------------------
# Measurement on random networks
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RandomNetStats:
    """What :func:`propagate` measured, one entry per hidden layer l = 1..depth (float64).

    Entry 0 is layer 1, next to the inputs; entry -1 is layer ``depth``, next to the loss, where the
    gradient enters. The quantity that vanishes or explodes is δ^l = ∂L/∂z^l, the back-propagated
    gradient; ``weight_grad_norm`` is the weight gradient δᵀa, which also carries the activations'
    size and can stay level while δ vanishes. Ratios across the stack (``delta_sq[0] / delta_sq[-1]``)
    are therefore taken against the last hidden layer, layers 2..depth being the ones crossed.

    ``second_moment``: mean of (z^l)² over examples and units, the measured q^l.
    ``delta_sq``: mean over examples of ‖δ^l‖², with δ^l = ∂L/∂z^l for one example. The gradient
    leaving the loss is 1 per example (see :func:`random_mlp_stats`), so this is also the squared
    factor by which it grew or shrank from the loss down to layer l.
    ``slope_sq``: mean of f'(z^l)² over examples and units, so σ_w² · slope_sq is the measured χ.
    ``weight_grad_norm``: ‖∂L/∂W^l‖_F, summed over the batch.
    ``activation_std``: standard deviation of a^l = f(z^l) over examples and units.
    ``delta_std``: standard deviation of the entries of δ^l over examples and units (mean ~0).
    ``weight_std``, ``bias_std``: σ_w and σ_b of :func:`random_mlp_stats`; ``nan`` when the weights
    came from elsewhere.
    ``pre_activations``: the z^l themselves (batch × width), if asked for, else ``None``.
    """

    activation: str
    width: int
    second_moment: Tensor
    delta_sq: Tensor
    slope_sq: Tensor
    weight_grad_norm: Tensor
    activation_std: Tensor
    delta_std: Tensor
    weight_std: float = math.nan
    bias_std: float = math.nan
    pre_activations: tuple[Tensor, ...] | None = None

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.second_moment)


def _check_stack(inputs: Tensor, weights: Sequence[Tensor], readout: Tensor,
                 biases: Sequence[Tensor] | None) -> None:
    if not isinstance(inputs, Tensor) or inputs.ndim != 2 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a 2-D floating-point tensor (examples × features), got {shape}")
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise ValueError("weights must be a non-empty sequence of 2-D tensors (out × in), "
                         f"got {type(weights).__name__}")
    fan_in = inputs.shape[1]
    for l, w in enumerate(weights, start=1):
        if not isinstance(w, Tensor) or w.ndim != 2 or w.shape[1] != fan_in:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"weights[{l - 1}] (layer {l}) must be a 2-D tensor with {fan_in} columns, got {shape}")
        fan_in = w.shape[0]
    if not isinstance(readout, Tensor) or tuple(readout.shape) != (inputs.shape[0], fan_in):
        shape = tuple(readout.shape) if isinstance(readout, Tensor) else type(readout).__name__
        raise ValueError(f"readout must be a tensor of shape {(inputs.shape[0], fan_in)} "
                         f"(examples × units of the last layer), got {shape}")
    if biases is not None and (isinstance(biases, Tensor) or not isinstance(biases, Sequence)
                               or [tuple(b.shape) for b in biases] != [(w.shape[0],) for w in weights]):
        raise ValueError("biases must be None or one 1-D tensor per layer, as long as the layer's output")


def propagate(activation: str, inputs: Tensor, weights: Sequence[Tensor], readout: Tensor, *,
              biases: Sequence[Tensor] | None = None, keep_pre_activations: bool = False) -> RandomNetStats:
    """Run ``inputs`` forward through the given layers and back-propagate a linear readout; measure each layer.

    The one forward-and-backward measurement of this module: :func:`random_mlp_stats` and
    :func:`signal_profile` draw a stack and call it. The network: z^l = a^{l-1} (W^l)ᵀ + b^l,
    a^l = f(z^l), a^0 = ``inputs``, W^l = ``weights[l-1]`` (out × in, as ``nn.Linear`` stores it),
    b^l = ``biases[l-1]`` (none when ``None``). The loss is L = Σ_b u_b · a^depth_b with u_b the
    rows of ``readout`` (examples × units), one readout vector per example, so that the examples'
    backward passes are independent samples. Gradients come from autograd; the weights are not
    modified. Non-finite values (overflow) are returned as they are.
    """
    act = activations.get(activation)
    _check_stack(inputs, weights, readout, biases)
    ws = [w.detach().requires_grad_(True) for w in weights]
    zs, a, a_std = [], inputs.detach(), []
    for l, w in enumerate(ws):
        z = a @ w.T
        if biases is not None:
            z = z + biases[l].detach()
        zs.append(z)
        a = act.fn(z)
        a_std.append(a.detach().double().std())
    grads = torch.autograd.grad((a * readout.detach()).sum(), zs + ws)
    deltas, weight_grads = grads[:len(zs)], grads[len(zs):]

    def per_layer(values) -> Tensor:
        return torch.stack(list(values)).double()

    with torch.no_grad():
        return RandomNetStats(
            activation=act.name, width=ws[-1].shape[0],
            second_moment=per_layer(z.pow(2).mean() for z in zs),
            delta_sq=per_layer(d.double().pow(2).sum(1).mean() for d in deltas),
            slope_sq=per_layer(act.derivative(z).pow(2).mean() for z in zs),
            weight_grad_norm=per_layer(torch.linalg.vector_norm(g.double()) for g in weight_grads),
            activation_std=torch.stack(a_std),
            delta_std=per_layer(d.double().std() for d in deltas),
            pre_activations=tuple(z.detach() for z in zs) if keep_pre_activations else None,
        )


def _check_measurement(activation: str, width: int, weight_std: float, bias_std: float,
                       inputs: Tensor | None, batch: int, dtype: torch.dtype) -> None:
    activations.get(activation)
    positive_int("width", width)
    non_negative("weight_std", weight_std)
    non_negative("bias_std", bias_std)
    positive_int("batch", batch)
    one_of("dtype", dtype, DTYPES)
    if inputs is not None and (not isinstance(inputs, Tensor) or inputs.ndim != 2):
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be None or a 2-D tensor (examples × features), got {shape}")


def _inputs(inputs: Tensor | None, batch: int, width: int, generator: torch.Generator | None,
            dtype: torch.dtype) -> Tensor:
    if inputs is None:
        return torch.randn(batch, width, generator=generator, dtype=dtype)
    return inputs.detach().to("cpu", dtype)


#: Weight distributions of the measuring functions.
WEIGHTS = ("gaussian", "orthogonal")


def _random_layers(n_in: int, width: int, depth: int, weight_std: float, bias_std: float,
                   generator: torch.Generator | None, dtype: torch.dtype,
                   weights: str = "gaussian") -> tuple[list[Tensor], list[Tensor]]:
    """Weights W^l (width × fan_in) with E[W_ij²] = weight_std²/fan_in, and biases b^l ~ N(0, bias_std²).

    ``"gaussian"``: W_ij ~ N(0, weight_std²/fan_in), by :func:`deepgrad.init.normal_`.
    ``"orthogonal"``: :func:`deepgrad.init.orthogonal_` with gain weight_std · √(max(width, fan_in)/fan_in),
    a matrix with orthonormal rows or columns so scaled; for a square layer, W = weight_std · Q
    multiplies every vector's norm by exactly weight_std.
    """
    fan_ins = [n_in] + [width] * (depth - 1)
    if weights == "gaussian":
        ws = [init.normal_(torch.empty(width, n, dtype=dtype), weight_std / math.sqrt(n), generator=generator)
              for n in fan_ins]
    else:
        ws = [init.orthogonal_(torch.empty(width, n, dtype=dtype), gain=weight_std * math.sqrt(max(width, n) / n),
                               generator=generator) for n in fan_ins]
    biases = [torch.randn(width, generator=generator, dtype=dtype) * bias_std for _ in range(depth)]
    return ws, biases


def random_mlp_stats(activation: str, depth: int, width: int, weight_std: float, *, bias_std: float = 0.0,
                     inputs: Tensor | None = None, batch: int = 256, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64, weights: str = "gaussian",
                     keep_pre_activations: bool = False) -> RandomNetStats:
    """Draw a random MLP parametrised by σ_w and σ_b, and measure it with :func:`propagate`.

    The network: ``depth`` hidden layers of ``width`` units, with W^l_ij ~ N(0, weight_std²/fan_in)
    and b^l_i ~ N(0, bias_std²). The loss is a random linear readout of the last hidden layer,
    L = Σ_b u_b · a^depth_b, with a readout vector u_b drawn for each example b, entries
    N(0, weight_std²/width): it acts as one more layer with one output whose gradient is 1, so
    ``delta_sq`` can be compared directly with :func:`predicted_deltas`. Drawing u_b per example
    makes the examples' backward passes independent samples, so the batch averages estimate
    expectations (a shared readout would send the same vector down for every example).
    ``weights="orthogonal"`` draws scaled random orthogonal matrices (:func:`deepgrad.init.orthogonal_`)
    instead of Gaussian ones, with the same E[W_ij²] (the readout stays Gaussian). ``inputs``
    (examples × features) default to ``batch`` standard Gaussian vectors of dimension ``width``.
    Random numbers come from ``generator`` (the global torch generator when ``None``), in the order
    inputs, weights, biases, readout. Overflow shows up as ``inf``/``nan`` in the results.
    """
    _check_measurement(activation, width, weight_std, bias_std, inputs, batch, dtype)
    positive_int("depth", depth)
    one_of("weights", weights, WEIGHTS)
    x = _inputs(inputs, batch, width, generator, dtype)
    ws, biases = _random_layers(x.shape[1], width, depth, weight_std, bias_std, generator, dtype, weights)
    readout = torch.randn(x.shape[0], width, generator=generator, dtype=dtype) * (weight_std / math.sqrt(width))
    stats = propagate(activation, x, ws, readout, biases=biases, keep_pre_activations=keep_pre_activations)
    return dataclasses.replace(stats, weight_std=float(weight_std), bias_std=float(bias_std))


@dataclass(frozen=True)
class SignalProfile:
    """What :func:`signal_profile` measured, one value per hidden layer l = 1..depth (float64 tensors).

    ``activation_std``: standard deviation of a^l over examples and units.
    ``gradient_std``: standard deviation of δ^l = ∂L/∂z^l over examples and units (its mean is ~0):
    the back-propagated gradient, not the weight gradient. Entry 0 is layer 1 (inputs), entry -1
    layer ``depth`` (loss); a vanishing ratio is ``gradient_std[0] / gradient_std[-1]``, against
    the last hidden layer. ``stats``: everything :func:`propagate` measured on the same stack.
    """

    activation: str
    scheme: str
    activation_std: Tensor
    gradient_std: Tensor
    stats: RandomNetStats | None = None


def signal_profile(activation: str, scheme: str, *, depth: int, width: int, batch: int = 256,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                   scheme_kwargs: dict[str, Any] | None = None) -> SignalProfile:
    """Forward and back-propagate a batch through a random stack initialised by an :mod:`deepgrad.init` scheme.

    The stack: ``depth`` square layers of ``width`` units, z^l = a^{l-1} (W^l)ᵀ, a^l = f(z^l), no
    biases, each W^l filled in turn by ``init.get(scheme)(W, generator=generator, **scheme_kwargs)``
    (``scheme_kwargs`` a dict, e.g. ``{"std": 0.01}`` or ``{"activation": "selu"}``).
    The input a^0 holds ``batch`` standard Gaussian vectors; the loss is a random linear readout
    L = Σ_b u_b · a^depth_b with u_b ~ N(0, I/width) drawn per example (as in
    :func:`random_mlp_stats`), so the gradient leaves the top with the size of one more
    LeCun-initialised layer. Weights are drawn first, then the input, then the readout, all from
    ``generator``; :func:`propagate` measures. Non-finite values are returned as they are.
    """
    activations.get(activation)
    init.get(scheme)
    positive_int("depth", depth)
    positive_int("width", width)
    positive_int("batch", batch)
    one_of("dtype", dtype, DTYPES)
    if scheme_kwargs is not None and not isinstance(scheme_kwargs, dict):
        raise TypeError(f"scheme_kwargs must be None or a dict, got {type(scheme_kwargs).__name__}")
    fill, kwargs = init.get(scheme), dict(scheme_kwargs or {})
    weights = [fill(torch.empty(width, width, dtype=dtype), generator=generator, **kwargs) for _ in range(depth)]
    x = torch.randn(batch, width, generator=generator, dtype=dtype)
    readout = torch.randn(batch, width, generator=generator, dtype=dtype) / math.sqrt(width)
    stats = propagate(activation, x, weights, readout)
    return SignalProfile(activation=stats.activation, scheme=scheme, activation_std=stats.activation_std,
                         gradient_std=stats.delta_std, stats=stats)


def first_layer_gradients(activation: str, depths: Sequence[int], width: int, weight_std: float, *,
                          bias_std: float = 0.0, inputs: Tensor | None = None, batch: int = 256,
                          generator: torch.Generator | None = None,
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """‖δ^1‖ (root mean square over examples) of random networks with each number of hidden layers in ``depths``.

    The networks are nested: the one with d hidden layers is the first d layers of one random stack
    (drawn as in :func:`random_mlp_stats`), followed by random readouts of its own (one per example,
    entries N(0, weight_std²/width), as in :func:`random_mlp_stats`). The gradient leaves the readout
    with size 1 per example, so ‖δ^1‖ is the factor by which it shrank or grew on its way down. The backward recursion
    δ^{l-1} = f'(z^{l-1}) ⊙ (δ^l W^l) is written out (one forward pass serves every depth); the tests
    check it against autograd. Returns a float64 tensor, one value per depth: 0 where the gradient
    underflowed, ``nan`` where the forward or backward pass overflowed (``inf`` or ``nan`` met).
    """
    _check_measurement(activation, width, weight_std, bias_std, inputs, batch, dtype)
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or len(depths) == 0:
        raise ValueError(f"depths must be a non-empty sequence of ints >= 1, got {depths!r}")
    for d in depths:
        positive_int("each entry of depths", d)
    act = activations.get(activation)
    x = _inputs(inputs, batch, width, generator, dtype)
    deepest = max(depths)
    weights, biases = _random_layers(x.shape[1], width, deepest, weight_std, bias_std, generator, dtype)
    readouts = torch.randn(len(depths), x.shape[0], width, generator=generator, dtype=dtype)
    readouts = readouts * (weight_std / math.sqrt(width))
    zs, finite, a = [], [], x
    for w, b in zip(weights, biases, strict=True):
        z = a @ w.T + b
        zs.append(z)
        finite.append(bool(torch.isfinite(z).all()) and (not finite or finite[-1]))
        a = act.fn(z)
    # One backward sweep from the deepest layer down carries the gradients of every depth at once:
    # the network with d hidden layers joins the sweep at layer d (rows of `delta`, one per depth).
    start = {d: u for d, u in zip(depths, readouts, strict=True)}  # duplicates: the last readout wins
    delta = torch.empty(0, x.shape[0], width, dtype=dtype)
    joined: list[int] = []
    for l in range(deepest, 0, -1):
        if l < deepest:  # δ^l = f'(z^l) ⊙ (δ^{l+1} W^{l+1})
            delta = act.derivative(zs[l - 1]) * (delta @ weights[l])
        if l in start:  # δ^l of the network whose readout sits on layer l
            delta = torch.cat([delta, (act.derivative(zs[l - 1]) * start[l])[None]])
            joined.append(l)
    norms = delta.double().pow(2).sum(-1).mean(-1).sqrt()
    ok = torch.isfinite(delta).flatten(1).all(1)
    result = {d: (norms[i] if ok[i] and finite[d - 1] else torch.tensor(math.nan, dtype=torch.float64))
              for i, d in enumerate(joined)}
    return torch.stack([result[d] for d in depths])
