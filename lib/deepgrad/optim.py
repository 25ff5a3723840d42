"""Optimisers written from their update equations, each a :class:`torch.optim.Optimizer`.

Every class here implements, in a few readable lines, the rule the optimisers chapter derives, and
the tests check that 200 steps of it give the same parameters as its :mod:`torch.optim`
counterpart (float64, with and without weight decay). Arguments are checked when the optimiser is
built: a wrong type (``lr="0.1"``, ``betas=0.9``) raises ``TypeError``; a bad value (``lr=-1``,
``betas=(0.9,)``) raises ``ValueError``, with PyTorch's own message where PyTorch refuses it too,
followed by the argument's name and its allowed range.

Notation (per parameter tensor ``w``, elementwise operations, step ``t = 1, 2, ...``, gradient
``g_t`` with weight decay ``λ`` folded in as ``g_t + λ w`` unless said otherwise):

- :class:`SGD`        ``b_t = μ b_{t-1} + (1 - d) g_t`` (``b_1 = g_1``), ``w ← w - η b_t``;
  Nesterov uses ``g_t + μ b_t`` instead of ``b_t`` (Polyak 1964; Sutskever et al. 2013 take the
  gradient at the look-ahead point, this rewritten form is Bengio, Boulanger-Lewandowski & Pascanu 2013).
- :class:`MomentumEMA` the exponential-average form of the study notes,
  ``v_t = β v_{t-1} + (1 - β) g_t`` (``v_0 = 0``), ``w ← w - η v_t``.
- :class:`Adagrad`    ``s_t = s_{t-1} + g_t²``, ``w ← w - η g_t / (√s_t + ε)`` (Duchi et al. 2011).
- :class:`RMSprop`    ``s_t = α s_{t-1} + (1 - α) g_t²``, ``w ← w - η g_t / (√s_t + ε)`` (Hinton, lecture 6e).
- :class:`Adadelta`   ``s_t = ρ s_{t-1} + (1 - ρ) g_t²``,
  ``Δ_t = √(u_{t-1} + ε) / √(s_t + ε) · g_t``, ``u_t = ρ u_{t-1} + (1 - ρ) Δ_t²``,
  ``w ← w - η Δ_t`` with ``η = 1`` in the paper (Zeiler 2012).
- :class:`Adam`       ``m_t = β₁ m_{t-1} + (1 - β₁) g_t``, ``v_t = β₂ v_{t-1} + (1 - β₂) g_t²``,
  ``w ← w - η m̂_t / (√v̂_t + ε)`` with ``m̂_t = m_t / (1 - β₁^t)``, ``v̂_t = v_t / (1 - β₂^t)``
  (Kingma & Ba 2015); ``bias_correction=False`` drops the two divisions (not in PyTorch).
- :class:`AdamW`      Adam with decoupled weight decay, ``w ← w (1 - η λ)`` before the Adam step
  (Loshchilov & Hutter 2019).
- :class:`AMSGrad`    Adam dividing by the running maximum ``v̄_t = max(v̄_{t-1}, v_t)`` (Reddi et al. 2018).
- :class:`NAdam`      Adam with Nesterov momentum and PyTorch's momentum decay (Dozat 2016).
- :class:`Adamax`     ``u_t = max(β₂ u_{t-1}, |g_t| + ε)``, ``w ← w - η m_t / ((1 - β₁^t) u_t)`` (Kingma & Ba 2015).

The module also holds the 2-D test functions of the chapter (:func:`quadratic`, :func:`rosenbrock`,
:func:`saddle`) and :func:`trajectory`, which runs any optimiser on one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from deepgrad._checks import flag, number, positive_int

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


# Argument checks. Each follows one rule: a wrong type raises TypeError, a bad value ValueError, and
# the message names the argument and what is allowed. A value torch.optim refuses gets torch's own
# message first ("Invalid learning rate: -1"), followed by the argument's name and its range; the
# conditions are torch's, except that inf is refused too (an infinite step or decay makes every weight nan).


def _at_least_zero(name: str, value: Any, label: str) -> None:
    """A finite real number >= 0; ``label`` is torch.optim's wording ("learning rate", "epsilon value")."""
    v = number(name, value, "a real number >= 0")
    if not 0.0 <= v < math.inf:
        raise ValueError(f"Invalid {label}: {value} ({name} must be a finite number >= 0)")


def _in_unit_interval(name: str, value: Any, label: str, *, closed: bool = False) -> None:
    """A real number in [0, 1) (``closed``: [0, 1])."""
    allowed = "[0, 1]" if closed else "[0, 1)"
    v = number(name, value, f"a real number in {allowed}")
    if not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
        raise ValueError(f"Invalid {label}: {value} ({name} must be in {allowed})")


def _betas(betas: Any) -> tuple[float, float]:
    """Adam's (β₁, β₂): a tuple or list of two real numbers, each in [0, 1)."""
    allowed = "two real numbers in [0, 1), e.g. (0.9, 0.999)"
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"betas must be {allowed}, got {type(betas).__name__} {betas!r}")
    if len(betas) != 2:
        raise ValueError(f"betas must be {allowed}; got {len(betas)}: {betas!r}")
    for i, beta in enumerate(betas):
        number(f"betas[{i}]", beta, f"a real number in [0, 1) (betas must be {allowed})")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} (betas must be {allowed})")
    return betas[0], betas[1]



def _decayed_gradient(p: Tensor, weight_decay: float) -> Tensor:
    """``g + λ w``: L2 weight decay folded into the gradient (a new tensor when λ ≠ 0)."""
    return p.grad if weight_decay == 0 else p.grad.add(p, alpha=weight_decay)


class _Optimizer(torch.optim.Optimizer):
    """Shared ``step``: evaluate the closure, then update every parameter that has a gradient."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                self._update(p, state, group)
        return loss

    def _update(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum, in PyTorch's form.

    ``b_t = μ b_{t-1} + (1 - d) g_t`` with ``b_1 = g_1``, then ``w ← w - η b_t``, or with
    ``nesterov=True``, ``w ← w - η (g_t + μ b_t)`` (Sutskever et al. 2013's look-ahead
    gradient, rewritten by Bengio, Boulanger-Lewandowski & Pascanu 2013 so that the gradient is taken
    at the current weights). With ``momentum=0`` this is ``w ← w - η g_t``:
    batch, stochastic or mini-batch gradient descent depending only on the batch fed to it.
    """

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("momentum", momentum, "momentum value")
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        number("dampening", dampening, "a real number")
        flag("nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov)
        super().__init__(params, defaults)

    def _update(self, p, state, group):
        g = _decayed_gradient(p, group["weight_decay"])
        mu = group["momentum"]
        if mu != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.clone()  # b_1 = g_1: no dampening on the first step
            else:
                state["momentum_buffer"].mul_(mu).add_(g, alpha=1 - group["dampening"])
            b = state["momentum_buffer"]
            g = g.add(b, alpha=mu) if group["nesterov"] else b
        p.add_(g, alpha=-group["lr"])


class MomentumEMA(_Optimizer):
    """Momentum as an exponential moving average of gradients (the study notes' form).

    ``v_t = β v_{t-1} + (1 - β) g_t`` with ``v_0 = 0``, ``w ← w - η v_t``. It takes exactly the
    steps of PyTorch's ``SGD(lr=η (1 - β), momentum=β)``, since ``v_t = (1 - β) b_t`` by induction.
    """

    def __init__(self, params: Params, lr: float = 1e-3, beta: float = 0.9, weight_decay: float = 0.0) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _in_unit_interval("beta", beta, "beta value")
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    def _update(self, p, state, group):
        g = _decayed_gradient(p, group["weight_decay"])
        v = state.setdefault("velocity", torch.zeros_like(p))
        v.mul_(group["beta"]).add_(g, alpha=1 - group["beta"])
        p.add_(v, alpha=-group["lr"])


class Adagrad(_Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011): a per-coordinate step that shrinks with the gradients seen.

    ``s_t = s_{t-1} + g_t²`` (``s_0`` = ``initial_accumulator_value``),
    ``w ← w - η_t g_t / (√s_t + ε)`` with ``η_t = η / (1 + (t - 1) · lr_decay)``.
    PyTorch's ε is added after the square root (and defaults to 1e-10).
    """

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("lr_decay", lr_decay, "lr_decay value")
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        _at_least_zero("initial_accumulator_value", initial_accumulator_value,
                       "initial_accumulator_value value")
        _at_least_zero("eps", eps, "epsilon value")
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults)

    def _update(self, p, state, group):
        g = _decayed_gradient(p, group["weight_decay"])
        s = state.setdefault("sum", torch.full_like(p, group["initial_accumulator_value"]))
        s.addcmul_(g, g)
        lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        p.addcdiv_(g, s.sqrt().add_(group["eps"]), value=-lr)


class RMSprop(_Optimizer):
    """RMSProp (Hinton, Coursera lecture 6e): divide by a running root mean square of the gradient.

    ``s_t = α s_{t-1} + (1 - α) g_t²``, ``r_t = √s_t + ε`` (centred: ``√(s_t - ḡ_t²) + ε`` with
    ``ḡ_t`` the running mean gradient), then ``w ← w - η g_t / r_t``, or with momentum
    ``b_t = μ b_{t-1} + g_t / r_t``, ``w ← w - η b_t``. The lecture uses α = 0.9; PyTorch's default is 0.99.
    """

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("eps", eps, "epsilon value")
        _at_least_zero("momentum", momentum, "momentum value")
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        _at_least_zero("alpha", alpha, "alpha value")
        flag("centered", centered)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered)
        super().__init__(params, defaults)

    def _update(self, p, state, group):
        g = _decayed_gradient(p, group["weight_decay"])
        alpha = group["alpha"]
        s = state.setdefault("square_avg", torch.zeros_like(p))
        s.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if group["centered"]:
            mean = state.setdefault("grad_avg", torch.zeros_like(p))
            mean.mul_(alpha).add_(g, alpha=1 - alpha)
            rms = s.addcmul(mean, mean, value=-1).sqrt_().add_(group["eps"])
        else:
            rms = s.sqrt().add_(group["eps"])
        if group["momentum"] > 0:
            b = state.setdefault("momentum_buffer", torch.zeros_like(p))
            b.mul_(group["momentum"]).addcdiv_(g, rms)
            p.add_(b, alpha=-group["lr"])
        else:
            p.addcdiv_(g, rms, value=-group["lr"])


class Adadelta(_Optimizer):
    """Adadelta (Zeiler 2012): no global learning rate; the step's size comes from past steps.

    ``s_t = ρ s_{t-1} + (1 - ρ) g_t²``, ``Δ_t = √(u_{t-1} + ε) / √(s_t + ε) · g_t``,
    ``u_t = ρ u_{t-1} + (1 - ρ) Δ_t²``, ``w ← w - η Δ_t``. The paper has no η (η = 1, PyTorch's
    default) and uses ρ = 0.95; PyTorch's default ρ is 0.9.
    """

    def __init__(self, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _in_unit_interval("rho", rho, "rho value", closed=True)
        _at_least_zero("eps", eps, "epsilon value")
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _update(self, p, state, group):
        g = _decayed_gradient(p, group["weight_decay"])
        rho, eps = group["rho"], group["eps"]
        s = state.setdefault("square_avg", torch.zeros_like(p))
        u = state.setdefault("acc_delta", torch.zeros_like(p))
        s.mul_(rho).addcmul_(g, g, value=1 - rho)
        delta = u.add(eps).sqrt_().div_(s.add(eps).sqrt_()).mul_(g)
        u.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        p.add_(delta, alpha=-group["lr"])


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015): momentum on the gradient, RMSProp on its square, both bias-corrected.

    ``m_t = β₁ m_{t-1} + (1 - β₁) g_t``, ``v_t = β₂ v_{t-1} + (1 - β₂) g_t²`` (``m_0 = v_0 = 0``),
    ``w ← w - η m̂_t / (√v̂_t + ε)`` with ``m̂_t = m_t / (1 - β₁^t)`` and ``v̂_t = v_t / (1 - β₂^t)``.
    ``bias_correction=False`` (not a PyTorch option) uses ``m_t`` and ``v_t`` as they are: the
    first step is then ``(1 - β₁) / √(1 - β₂)`` times larger. Weight decay is L2 (folded into g).
    """

    _decoupled = False

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, bias_correction: bool = True) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("eps", eps, "epsilon value")
        _betas(betas)
        flag("bias_correction", bias_correction)
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction)
        super().__init__(params, defaults)

    def _update(self, p, state, group):
        lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        if self._decoupled:
            p.mul_(1 - lr * wd)
            g = p.grad
        else:
            g = _decayed_gradient(p, wd)
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        t = state["step"]
        if group["bias_correction"]:
            c1, c2 = 1 - beta1**t, 1 - beta2**t
        else:
            c1 = c2 = 1.0
        p.addcdiv_(m, v.sqrt().div_(math.sqrt(c2)).add_(group["eps"]), value=-lr / c1)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay.

    ``w ← w (1 - η λ)``, then the Adam step computed from the plain gradient. PyTorch's default
    λ is 1e-2.
    """

    _decoupled = True

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, bias_correction: bool = True) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, bias_correction=bias_correction)


#: The optimisers of this module by name, with their PyTorch counterparts (a class, or for AMSGrad
#: a function building ``torch.optim.Adam(amsgrad=True)``).
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], Callable[..., torch.optim.Optimizer]]] = {
    "SGD": (SGD, torch.optim.SGD),
    "Adagrad": (Adagrad, torch.optim.Adagrad),
    "RMSprop": (RMSprop, torch.optim.RMSprop),
    "Adadelta": (Adadelta, torch.optim.Adadelta),
    "Adam": (Adam, torch.optim.Adam),
    "AdamW": (AdamW, torch.optim.AdamW),
}


# --- 2-D test functions -------------------------------------------------------------------------

def quadratic(x: Tensor, y: Tensor, *, condition: float = 25.0) -> Tensor:
    """An ill-conditioned bowl, ``(x² + condition · y²) / 2``; minimum 0 at the origin.

    Its Hessian is ``diag(1, condition)``: gradient descent is stable only for ``η < 2 / condition``,
    and then creeps along ``x`` at a rate ``1 - η``.
    """
    return 0.5 * (x**2 + condition * y**2)


def rosenbrock(x: Tensor, y: Tensor, *, a: float = 1.0, b: float = 100.0) -> Tensor:
    """Rosenbrock's banana valley, ``(a - x)² + b (y - x²)²``; minimum 0 at ``(a, a²)``."""
    return (a - x) ** 2 + b * (y - x**2) ** 2


def saddle(x: Tensor, y: Tensor) -> Tensor:
    """A saddle, ``x² - y² + y⁴ / 2`` (bounded below); a saddle point at the origin and two
    minima, -1/2 at ``(0, ±1)``. Started near ``y = 0``, the way down is slow to find."""
    return x**2 - y**2 + 0.5 * y**4


def trajectory(fn: Callable[[Tensor, Tensor], Tensor], start: tuple[float, float],
               make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer], steps: int) -> Tensor:
    """The points ``(x, y)`` visited by an optimiser minimising ``fn`` from ``start``, in float64.

    Returns a ``(steps + 1, 2)`` tensor, the start included. A run that leaves the finite numbers
    is cut short: its remaining rows are ``nan``, never an exception.
    """
    positive_int("steps", steps)
    point = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([point])
    path = torch.full((steps + 1, 2), math.nan, dtype=torch.float64)
    path[0] = point.detach()
    for k in range(1, steps + 1):
        optimizer.zero_grad()
        value = fn(point[0], point[1])
        if not torch.isfinite(value):
            break
        value.backward()
        optimizer.step()
        if not torch.isfinite(point).all():
            break
        path[k] = point.detach()
    return path


# --- Adam's variants (appended) -----------------------------------------------------------------

class AMSGrad(Adam):
    """AMSGrad (Reddi, Kale & Kumar 2018): Adam whose denominator never shrinks.

    As :class:`Adam`, but divides by the running maximum ``v̄_t = max(v̄_{t-1}, v_t)`` of the second
    average, ``w ← w - η m̂_t / (√(v̄_t / (1 - β₂^t)) + ε)``: the denominator never shrinks (in the
    paper, without bias correction, the effective rate ``η / √v̄_t`` can only decrease), which
    repairs Adam's non-convergence on Reddi et al.'s example. This is
    PyTorch's ``Adam(amsgrad=True)``, which keeps the maximum of the *uncorrected* ``v_t`` and
    bias-corrects it with the current step's ``1 - β₂^t``.
    """

    def _update(self, p, state, group):
        lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        g = _decayed_gradient(p, wd)
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        v_max = state.setdefault("max_exp_avg_sq", torch.zeros_like(p))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        torch.maximum(v_max, v, out=v_max)
        t = state["step"]
        c1, c2 = (1 - beta1**t, 1 - beta2**t) if group["bias_correction"] else (1.0, 1.0)
        p.addcdiv_(m, v_max.sqrt().div_(math.sqrt(c2)).add_(group["eps"]), value=-lr / c1)


class NAdam(_Optimizer):
    """NAdam (Dozat 2016): Adam with Nesterov momentum, in PyTorch's form with momentum decay.

    With ``μ_t = β₁ (1 - ½ · 0.96^(t ψ))`` (``ψ`` = ``momentum_decay``, 4e-3) and the products
    ``Π_t = μ_1 ⋯ μ_t``, the averages ``m_t, v_t`` of :class:`Adam` and ``v̂_t = v_t / (1 - β₂^t)``,
    the step looks one momentum step ahead:
    ``w ← w - η (1 - μ_t) / (1 - Π_t) · g_t / (√v̂_t + ε) - η μ_{t+1} / (1 - Π_{t+1}) · m_t / (√v̂_t + ε)``.
    Weight decay is L2 (folded into g). As in PyTorch, ``Π_t`` is kept in the default dtype
    (float32 unless changed), so it is rounded to float32 even for float64 parameters.
    """

    def __init__(self, params: Params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("eps", eps, "epsilon value")
        _betas(betas)
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        _at_least_zero("momentum_decay", momentum_decay, "momentum_decay value")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay)
        super().__init__(params, defaults)

    def _update(self, p, state, group):
        lr, (beta1, beta2), psi = group["lr"], group["betas"], group["momentum_decay"]
        g = _decayed_gradient(p, group["weight_decay"])
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        t = state["step"]
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        # PyTorch keeps the product as a scalar tensor of the default dtype (float32 unless changed)
        product_t = state.setdefault("mu_product", torch.ones((), dtype=torch.get_default_dtype()))
        product_t.mul_(mu)
        product = product_t.item()
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.div(1 - beta2**t).sqrt_().add_(group["eps"])
        p.addcdiv_(g, denom, value=-lr * (1 - mu) / (1 - product))
        p.addcdiv_(m, denom, value=-lr * mu_next / (1 - product * mu_next))


class Adamax(_Optimizer):
    """AdaMax (Kingma & Ba 2015, section 7.1): Adam with the infinity norm in place of the RMS.

    ``m_t = β₁ m_{t-1} + (1 - β₁) g_t``, ``u_t = max(β₂ u_{t-1}, |g_t| + ε)`` (``u_0 = 0``),
    ``w ← w - η / (1 - β₁^t) · m_t / u_t``. ``u_t`` needs no bias correction. PyTorch adds ``ε`` to
    ``|g_t|`` inside the maximum, as here. Weight decay is L2 (folded into g).
    """

    def __init__(self, params: Params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        _at_least_zero("lr", lr, "learning rate")
        _at_least_zero("eps", eps, "epsilon value")
        _betas(betas)
        _at_least_zero("weight_decay", weight_decay, "weight_decay value")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, state, group):
        lr, (beta1, beta2) = group["lr"], group["betas"]
        g = _decayed_gradient(p, group["weight_decay"])
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        u = state.setdefault("exp_inf", torch.zeros_like(p))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        torch.maximum(u.mul_(beta2), g.abs().add_(group["eps"]), out=u)
        p.addcdiv_(m, u, value=-lr / (1 - beta1 ** state["step"]))


def _torch_amsgrad(params: Params, **kwargs: Any) -> torch.optim.Adam:
    """PyTorch's AMSGrad: ``torch.optim.Adam(params, amsgrad=True, **kwargs)``."""
    return torch.optim.Adam(params, amsgrad=True, **kwargs)


OPTIMIZERS["AMSGrad"] = (AMSGrad, _torch_amsgrad)
OPTIMIZERS["NAdam"] = (NAdam, torch.optim.NAdam)
OPTIMIZERS["Adamax"] = (Adamax, torch.optim.Adamax)
