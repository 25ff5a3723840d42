"""Activation functions by name, each with its derivative written out by hand.

The derivative is what backpropagation multiplies by at every layer, so it is the heart of the
vanishing-gradient story: the sigmoid's never exceeds 1/4, tanh's never exceeds 1, ReLU's is
exactly 0 or 1. :mod:`deepgrad.autodiff` uses these derivatives; the tests check each one
against autograd.

Conventions follow PyTorch at points of non-differentiability (ReLU'(0) = 0, LeakyReLU'(0) = slope,
PReLU'(0) = slope, SELU'(0) = λα).

PReLU (He et al., 2015) is the one activation here with a parameter: its negative slope is learned.
Its :class:`Activation` describes the function at initialisation (slope 0.25, ``torch.nn.PReLU``'s
default), and its ``module`` factory makes an ``nn.PReLU`` whose slope training then changes
(``learnable=True`` says so). :func:`prelu` and :func:`prelu_derivative` take any slope.

:func:`estimate_range` finds the range of a function on the real line numerically, as an interval
written for a table: ``(0, 1)``, ``[0, ∞)``, ``{0, 1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import non_negative, one_of, positive_int
from deepgrad.book import significant

#: Negative slope of ``leaky_relu`` (PyTorch's default).
LEAKY_SLOPE = 0.01
#: SELU constants of Klambauer et al. (2017), as used by ``torch.nn.SELU``.
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
#: Initial negative slope of ``prelu`` (``torch.nn.PReLU``'s default, as in He et al. 2015).
PRELU_INIT = 0.25


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity f with its derivative f'.

    Attributes
    ----------
    name: the name used everywhere in the book (``"sigmoid"``, ``"relu"``, ...).
    fn: z -> f(z).
    derivative: z -> f'(z), evaluated at the pre-activation z.
    module: factory for the equivalent ``torch.nn`` module.
    max_slope: sup_z |f'(z)|, the largest factor one layer's derivative can contribute.
    learnable: whether the module has parameters that training changes (PReLU's slope). ``fn``,
        ``derivative`` and ``max_slope`` then describe the function at initialisation only; the
        trained function is the module's.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    module: Callable[[], nn.Module]
    max_slope: float
    learnable: bool = False

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)


def _sigmoid_prime(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _tanh_prime(z: Tensor) -> Tensor:
    return 1 - torch.tanh(z) ** 2


def _relu_prime(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _leaky_relu_prime(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))


def prelu(z: Tensor, slope: float | Tensor = PRELU_INIT) -> Tensor:
    """PReLU (He et al., 2015): f(z) = z for z > 0 and ``slope`` · z otherwise.

    With a fixed slope this is Leaky ReLU (Maas et al., 2013); PReLU learns the slope. ``slope`` may
    be a tensor that broadcasts against ``z`` (one slope per unit, say).
    """
    return torch.where(z > 0, z, slope * z)


def prelu_derivative(z: Tensor, slope: float | Tensor = PRELU_INIT) -> Tensor:
    """∂f/∂z of :func:`prelu`: 1 for z > 0 and ``slope`` otherwise (``slope`` at 0, as in PyTorch)."""
    return torch.where(z > 0, torch.ones_like(z), slope * torch.ones_like(z))


def _prelu_module() -> nn.Module:
    """One learnable slope shared by all units of a layer (``nn.PReLU()``), starting at 0.25."""
    return nn.PReLU(num_parameters=1, init=PRELU_INIT)


def _elu_prime(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.exp(z))


def _selu_prime(z: Tensor) -> Tensor:
    return SELU_LAMBDA * torch.where(z > 0, torch.ones_like(z), SELU_ALPHA * torch.exp(z))


def _silu_prime(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _gelu_prime(z: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _softplus_prime(z: Tensor) -> Tensor:
    # torch's softplus is linear above threshold 20, so its derivative there is exactly 1
    return torch.where(z > 20, torch.ones_like(z), torch.sigmoid(z))


_REGISTRY: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("identity", lambda z: z, torch.ones_like, nn.Identity, 1.0),
        Activation("sigmoid", torch.sigmoid, _sigmoid_prime, nn.Sigmoid, 0.25),
        Activation("tanh", torch.tanh, _tanh_prime, nn.Tanh, 1.0),
        Activation("relu", F.relu, _relu_prime, nn.ReLU, 1.0),
        Activation(
            "leaky_relu",
            lambda z: F.leaky_relu(z, LEAKY_SLOPE),
            _leaky_relu_prime,
            lambda: nn.LeakyReLU(LEAKY_SLOPE),
            1.0,
        ),
        Activation("prelu", prelu, prelu_derivative, _prelu_module, 1.0, learnable=True),
        Activation("elu", F.elu, _elu_prime, nn.ELU, 1.0),
        Activation("selu", F.selu, _selu_prime, nn.SELU, SELU_LAMBDA * SELU_ALPHA),
        Activation("silu", F.silu, _silu_prime, nn.SiLU, 1.0998),  # max of f' at z ≈ 2.40
        Activation("gelu", F.gelu, _gelu_prime, nn.GELU, 1.1289),  # max of f' at z = sqrt(2)
        Activation("softplus", F.softplus, _softplus_prime, nn.Softplus, 1.0),
    ]
}
_ALIASES = {"linear": "identity", "swish": "silu", "logistic": "sigmoid"}

#: Every name :func:`get` accepts (aliases included).
NAMES: tuple[str, ...] = tuple(_REGISTRY) + tuple(_ALIASES)


def get(name: str) -> Activation:
    """Return the :class:`Activation` called ``name`` (one of :data:`NAMES`)."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name (str), one of {', '.join(NAMES)}; got {name!r}")
    one_of("activation", name, NAMES)
    return _REGISTRY[_ALIASES.get(name, name)]


def _endpoint(values: Tensor, edge: Tensor, half: Tensor, *, low: bool, digits: int) -> str:
    """One end of :func:`estimate_range`: ``values`` on the grid, f at the grid's end and at half of it."""
    extreme = float(values.min() if low else values.max())
    at_edge = bool(edge == extreme)
    if at_edge and edge.abs() > 1.5 * half.abs():  # still growing like |z| at the end: unbounded
        return "(−∞" if low else "∞)"
    asymptote = at_edge and edge != half  # approached towards the end, never reached
    if asymptote:
        extreme = round(extreme, 9)  # the limit: what is left of the tail at ±far is below 1e-9
    text = f"{significant(extreme, digits) + 0.0:g}".replace("-", "−")
    if asymptote:
        return f"({text}" if low else f"{text})"
    return f"[{text}" if low else f"{text}]"


def estimate_range(fn: Callable[[Tensor], Tensor], *, far: float = 30.0, points: int = 600_001,
                   digits: int = 3) -> str:
    """The range of ``fn`` over the real line, estimated on a grid of [−far, far] and written as an interval.

    The grid has ``points`` points (one fewer if ``points`` is even), symmetric about 0 and including it.

    - A function taking at most three distinct values on the grid is written as the set of them:
      ``{0, 1}`` for ReLU's derivative.
    - An end the grid reaches in its interior (or on a stretch where ``fn`` is constant) is closed:
      ``[0`` for ReLU, ``0.25]`` for the sigmoid's derivative.
    - An end approached only towards ±far, where ``fn`` is still changing, is open: ``(0``, ``1)`` for
      the sigmoid. Its value is fn(±far) rounded to 9 decimals (then to ``digits`` significant
      digits), which assumes the tail is within 1e-9 of its limit at ±far. The end is ±∞ if |fn| is
      still growing like |z| there (|fn(far)| > 1.5 |fn(far/2)|).

    Numbers are rounded to ``digits`` significant digits. The estimate assumes ``fn`` is monotone
    in its tails beyond ±far/2, true of every activation in this module.
    """
    non_negative("far", far)
    if far == 0:
        raise ValueError("far must be > 0, got 0")
    positive_int("points", points, minimum=3)
    positive_int("digits", digits)
    half = torch.linspace(0, far, points // 2 + 1, dtype=torch.float64)
    z = torch.cat([-half.flip(0)[:-1], half])  # symmetric, with z = 0 exactly
    with torch.no_grad():
        values = fn(z)
        ends = fn(torch.tensor([-far, -far / 2, far / 2, far], dtype=torch.float64))
    distinct = torch.unique(values)
    if len(distinct) <= 3:
        listed = ", ".join(f"{significant(float(v), digits):g}".replace("-", "−") for v in distinct)
        return "{" + listed + "}"
    # the minimum may be approached at either end: use the end that holds the extreme
    left, left_half, right_half, right = ends
    low_end = (left, left_half) if left <= right else (right, right_half)
    high_end = (right, right_half) if right >= left else (left, left_half)
    lo = _endpoint(values, *low_end, low=True, digits=digits)
    hi = _endpoint(values, *high_end, low=False, digits=digits)
    return f"{lo}, {hi}"
