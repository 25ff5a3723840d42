"""Activation functions by name, each with its derivative written out by hand.

The derivative is what backpropagation multiplies by at every layer, so it is the heart of the
vanishing-gradient story: the sigmoid's never exceeds 1/4, tanh's never exceeds 1, ReLU's is
exactly 0 or 1. :mod:`deepgrad.autodiff` uses these derivatives; the tests check each one
against autograd.

Conventions follow PyTorch at points of non-differentiability (ReLU'(0) = 0, LeakyReLU'(0) = slope).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import one_of

#: Negative slope of ``leaky_relu`` (PyTorch's default).
LEAKY_SLOPE = 0.01
#: SELU constants of Klambauer et al. (2017), as used by ``torch.nn.SELU``.
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


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
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    module: Callable[[], nn.Module]
    max_slope: float

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
