"""Batch normalisation written out by hand, forward and backward, and the variants the book discusses.

Batch normalisation (Ioffe & Szegedy, 2015, Algorithm 1) normalises each feature (column) of a
mini-batch x of shape (N, C) with the batch's own statistics, then rescales and shifts it:

    μ   = (1/N) Σ_i x_i                       per column
    σ²  = (1/N) Σ_i (x_i − μ)²                the *biased* variance
    x̂   = (x − μ) / √(σ² + ε)
    y   = γ ⊙ x̂ + β                           γ, β learned, one per feature

so after the layer a unit's pre-activation has mean β and standard deviation ≈ |γ|, not 0 and 1.
At evaluation time the batch statistics are replaced by running averages collected during training
(:func:`update_running_stats`, :func:`batch_norm_eval`), so one example's output no longer depends
on the rest of its batch.

:class:`BatchNorm` is a drop-in for ``torch.nn.BatchNorm1d`` on (N, C) inputs whose gradient is the
hand-written :func:`batch_norm_backward`; the tests check it against ``nn.BatchNorm1d`` and
``torch.autograd.gradcheck``. :func:`layer_norm_forward` normalises each example over its features
instead (layer normalisation, Ba, Kiros & Hinton, 2016), which works with a batch of one and in
recurrent networks. :class:`NoisyBatchNorm` injects a random per-unit scale and shift after batch
normalisation, for the "noisy BatchNorm" experiment of Santurkar et al. (2018), and
:class:`ScaleShiftNoise` injects the same noise without normalising (the experiment's control).
:class:`UnitQuantiles` records the percentiles of one unit's input over training (Ioffe & Szegedy,
2015, Figure 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepgrad._checks import fraction, non_negative, positive_int
from deepgrad.diagnostics import Recorder

#: PyTorch's defaults for ``nn.BatchNorm1d`` (also Ioffe & Szegedy's ε is a small constant).
DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.1


@dataclass(frozen=True)
class BatchNormCache:
    """What :func:`batch_norm_forward` keeps for :func:`batch_norm_backward` (all per column but x̂)."""

    x_hat: Tensor     # (N, C) the normalised input
    inv_std: Tensor   # (C,) 1 / √(σ² + ε)
    gamma: Tensor     # (C,)
    mean: Tensor      # (C,) the batch mean μ
    var: Tensor       # (C,) the biased batch variance σ², for the running statistics


def _check_eps(eps) -> float:
    eps = non_negative("eps", eps)
    if eps == 0:
        raise ValueError("eps must be a finite number > 0 (it keeps √(σ² + ε) away from 0), got 0")
    return eps


def _check_momentum(momentum) -> float | None:
    if momentum is None:
        return None
    return fraction("momentum", momentum, open_low=False, open_high=False)


def _check_batch(x: Tensor, num_features: int | None, *, training: bool, name: str = "x") -> None:
    if x.ndim != 2 or (num_features is not None and x.shape[1] != num_features):
        features = "num_features" if num_features is None else num_features
        raise ValueError(f"{name} must have shape (batch, {features}), got {tuple(x.shape)}")
    if training and x.shape[0] < 2:
        raise ValueError(f"batch normalisation in training mode needs more than 1 example per feature, got "
                         f"{name} of shape {tuple(x.shape)}: with N = 1 every x̂ is 0 (the output is β whatever "
                         "the input) and the unbiased running variance divides by N − 1 = 0. PyTorch refuses "
                         "too ('Expected more than 1 value per channel when training'); use eval mode or "
                         "layer normalisation for single examples")


def _check_param(name: str, p: Tensor, num_features: int) -> None:
    if p.shape != (num_features,):
        raise ValueError(f"{name} must have shape ({num_features},), one entry per feature, got {tuple(p.shape)}")


def batch_norm_forward(x: Tensor, gamma: Tensor, beta: Tensor, *,
                       eps: float = DEFAULT_EPS) -> tuple[Tensor, BatchNormCache]:
    """Training-mode batch normalisation of an (N, C) batch (Ioffe & Szegedy, 2015, Algorithm 1).

    μ = mean of each column, σ² = its biased variance (1/N), x̂ = (x − μ)/√(σ² + ε), y = γ x̂ + β.
    Returns ``y`` and the cache :func:`batch_norm_backward` needs. Needs N ≥ 2.
    """
    eps = _check_eps(eps)
    _check_batch(x, None, training=True)
    _check_param("gamma", gamma, x.shape[1])
    _check_param("beta", beta, x.shape[1])
    mean = x.mean(0)
    centred = x - mean
    var = (centred * centred).mean(0)
    inv_std = torch.rsqrt(var + eps)
    x_hat = centred * inv_std
    return gamma * x_hat + beta, BatchNormCache(x_hat, inv_std, gamma, mean, var)


def batch_norm_backward(dy: Tensor, cache: BatchNormCache) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (∂L/∂x, ∂L/∂γ, ∂L/∂β) of training-mode batch norm, given ``dy`` = ∂L/∂y.

    dγ = Σ_i dy_i ⊙ x̂_i and dβ = Σ_i dy_i. For x, μ and σ² depend on every row, so with
    ∂μ/∂x_i = 1/N and ∂σ²/∂x_i = 2(x_i − μ)/N the chain rule through x̂ = (x − μ)/√(σ² + ε) gives

        dx = γ/√(σ² + ε) ⊙ (dy − mean_i(dy) − x̂ ⊙ mean_i(dy ⊙ x̂)):

    the gradient is centred and has its component along x̂ removed, per column.
    """
    if dy.shape != cache.x_hat.shape:
        raise ValueError(f"dy must have the output's shape {tuple(cache.x_hat.shape)}, got {tuple(dy.shape)}")
    x_hat = cache.x_hat
    dgamma = (dy * x_hat).sum(0)
    dbeta = dy.sum(0)
    n = dy.shape[0]
    dx = (cache.gamma * cache.inv_std) * (dy - dbeta / n - x_hat * (dgamma / n))
    return dx, dgamma, dbeta


def unbiased_factor(batch_size: int) -> float:
    """N/(N − 1), the factor between the biased batch variance and the one the running variance uses."""
    positive_int("batch_size", batch_size, minimum=2)
    return batch_size / (batch_size - 1)


def update_running_stats(running_mean: Tensor, running_var: Tensor, batch_mean: Tensor, batch_var: Tensor,
                         batch_size: int, momentum: float | None = DEFAULT_MOMENTUM,
                         num_batches_tracked: int = 1) -> tuple[Tensor, Tensor]:
    """New running mean and variance after one training batch, exactly as ``nn.BatchNorm1d`` updates them.

        running ← (1 − momentum) · running + momentum · batch statistic

    with the batch's *unbiased* variance σ² · N/(N − 1) for the running variance (the forward pass
    uses the biased one); ``batch_var`` is the biased σ² of :class:`BatchNormCache`. PyTorch's
    ``momentum`` is the weight of the *new* value, the opposite of the usual exponential-average
    convention (and of Adam's β or RMSprop's α, where the constant weighs the old average): its
    default 0.1 means a decay of 0.9. ``momentum=None`` gives the cumulative average over all
    ``num_batches_tracked`` batches so far (this one included): momentum = 1/num_batches_tracked.
    """
    momentum = _check_momentum(momentum)
    positive_int("batch_size", batch_size, minimum=2)
    positive_int("num_batches_tracked", num_batches_tracked)
    weight = 1.0 / num_batches_tracked if momentum is None else momentum
    unbiased = batch_var * unbiased_factor(batch_size)
    return ((1 - weight) * running_mean + weight * batch_mean,
            (1 - weight) * running_var + weight * unbiased)


def batch_norm_eval(x: Tensor, running_mean: Tensor, running_var: Tensor, gamma: Tensor, beta: Tensor, *,
                    eps: float = DEFAULT_EPS) -> Tensor:
    """Evaluation-mode batch norm: y = γ (x − running_mean)/√(running_var + ε) + β, example by example."""
    eps = _check_eps(eps)
    return gamma * (x - running_mean) * torch.rsqrt(running_var + eps) + beta


def layer_norm_forward(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Layer normalisation (Ba, Kiros & Hinton, 2016): each example normalised over its last dimension.

    μ_i and σ²_i (biased) are taken over the C features of example i, not over the batch, then
    y = γ (x − μ_i)/√(σ²_i + ε) + β. No example depends on another: it works for a batch of one and
    step by step in a recurrent network, and train and eval modes coincide. Matches
    ``torch.nn.functional.layer_norm(x, (C,), gamma, beta, eps)``.
    """
    eps = _check_eps(eps)
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension (the features), got a scalar")
    _check_param("gamma", gamma, x.shape[-1])
    _check_param("beta", beta, x.shape[-1])
    mean = x.mean(-1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdim=True)
    return gamma * centred * torch.rsqrt(var + eps) + beta


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm as an autograd node whose backward is :func:`batch_norm_backward`.

    Under double backward (``create_graph=True``) the backward formula is rebuilt from the saved
    inputs x and γ with differentiable operations, so autograd can differentiate it again: the
    result matches ``nn.BatchNorm1d`` to second order (``torch.autograd.gradgradcheck`` passes).
    """

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: float):
        y, cache = batch_norm_forward(x, gamma, beta, eps=eps)
        ctx.save_for_backward(x, gamma, cache.x_hat, cache.inv_std, cache.mean, cache.var)
        ctx.eps = eps
        ctx.mark_non_differentiable(cache.mean, cache.var)  # returned for the running statistics only
        return y, cache.mean, cache.var

    @staticmethod
    def backward(ctx, dy: Tensor, _dmean, _dvar):
        x, gamma, x_hat, inv_std, mean, var = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: x̂ and 1/√(σ² + ε) as functions of x
            mean = x.mean(0)
            centred = x - mean
            var = (centred * centred).mean(0)
            inv_std = torch.rsqrt(var + ctx.eps)
            x_hat = centred * inv_std
        dx, dgamma, dbeta = batch_norm_backward(dy, BatchNormCache(x_hat, inv_std, gamma, mean, var))
        return dx, dgamma, dbeta, None


def batch_norm_train(x: Tensor, gamma: Tensor, beta: Tensor,
                     eps: float = DEFAULT_EPS) -> tuple[Tensor, Tensor, Tensor]:
    """(y, μ, σ²) of training-mode batch norm; autograd differentiates y with :func:`batch_norm_backward`.

    μ and σ² come back detached, for :func:`update_running_stats`.
    """
    y, mean, var = BatchNormFunction.apply(x, gamma, beta, eps)
    return y, mean.detach(), var.detach()


class BatchNorm(nn.Module):
    """Batch normalisation for (N, C) inputs, a drop-in for ``torch.nn.BatchNorm1d(num_features)``.

    Training mode (``model.train()``): normalise with the batch's statistics through the
    hand-written forward and backward passes, and update the running statistics
    (:func:`update_running_stats`). Evaluation mode: normalise with the running statistics
    (:func:`batch_norm_eval`). Parameters and buffers have ``nn.BatchNorm1d``'s names (``weight`` = γ,
    ``bias`` = β, ``running_mean``, ``running_var``, ``num_batches_tracked``), so state dicts load
    both ways. ``affine=False`` fixes γ = 1 and β = 0. Only 2-D inputs (PyTorch's also takes (N, C, L)),
    and running statistics are always tracked.
    """

    def __init__(self, num_features: int, eps: float = DEFAULT_EPS, momentum: float | None = DEFAULT_MOMENTUM,
                 affine: bool = True):
        super().__init__()
        self.num_features = positive_int("num_features", num_features)
        self.eps = _check_eps(eps)
        self.momentum = _check_momentum(momentum)
        if not isinstance(affine, bool):
            raise TypeError(f"affine must be True or False, got {type(affine).__name__} {affine!r}")
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def _gamma_beta(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.affine:
            return self.weight, self.bias
        return (torch.ones(self.num_features, dtype=x.dtype, device=x.device),
                torch.zeros(self.num_features, dtype=x.dtype, device=x.device))

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.num_features, training=self.training)
        gamma, beta = self._gamma_beta(x)
        if not self.training:
            return batch_norm_eval(x, self.running_mean, self.running_var, gamma, beta, eps=self.eps)
        y, mean, var = batch_norm_train(x, gamma, beta, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            new_mean, new_var = update_running_stats(self.running_mean, self.running_var, mean, var, x.shape[0],
                                                     self.momentum, int(self.num_batches_tracked))
            self.running_mean.copy_(new_mean)
            self.running_var.copy_(new_var)
        return y

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches seen (as ``nn.BatchNorm1d``)."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()


def _uniform_noise(num_features: int, half_width: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``num_features`` draws from U(−half_width, half_width), from ``generator``, on x's device and dtype."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(num_features, generator=generator, dtype=x.dtype, device=device)
    return ((2 * u - 1) * half_width).to(x.device)


def _check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


class ScaleShiftNoise(nn.Module):
    """The noise of :class:`NoisyBatchNorm` without the batch normalisation: output_j = s_j x_j + m_j.

    At each training forward pass, for each unit j, s_j ~ U(1 − scale_noise, 1 + scale_noise) and
    m_j ~ U(−shift_noise, shift_noise), the same for every example of the batch; the identity in
    evaluation mode. The control of Santurkar et al. (2018)'s noisy-BatchNorm experiment: the same
    injected "covariate shift" in a network that has no normalisation to absorb it. The latest draws
    are kept in ``last_scale`` and ``last_shift``.
    """

    def __init__(self, num_features: int, *, scale_noise: float = 0.5, shift_noise: float = 0.5,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.num_features = positive_int("num_features", num_features)
        self.scale_noise = fraction("scale_noise", scale_noise, open_low=False, open_high=True)
        self.shift_noise = non_negative("shift_noise", shift_noise)
        self.generator = _check_generator(generator)
        self.last_scale: Tensor | None = None
        self.last_shift: Tensor | None = None

    def extra_repr(self) -> str:
        return f"{self.num_features}, scale_noise={self.scale_noise}, shift_noise={self.shift_noise}"

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.num_features, training=False)
        if not self.training:
            return x
        self.last_scale = 1 + _uniform_noise(self.num_features, self.scale_noise, x, self.generator)
        self.last_shift = _uniform_noise(self.num_features, self.shift_noise, x, self.generator)
        return x * self.last_scale + self.last_shift


class NoisyBatchNorm(BatchNorm):
    """Batch norm followed by a random per-unit scale and shift, redrawn at every training step.

    Santurkar et al. (2018) injected noise after every BatchNorm layer so that each unit's
    distribution has a non-zero mean and a non-unit variance that change from step to step (a
    deliberate "internal covariate shift"), and found the network still trained about as well as
    with plain BatchNorm. Here, at each training forward pass and for each unit j independently,

        s_j ~ U(1 − scale_noise, 1 + scale_noise),   m_j ~ U(−shift_noise, shift_noise),
        output_j = s_j · BN(x)_j + m_j,

    the same s_j and m_j for every example in the batch, drawn from ``generator`` (the global
    generator if ``None``). So within a step unit j has mean s_j β_j + m_j and standard deviation
    ≈ s_j |γ_j|, and both jump at the next step. This is our choice: the paper perturbs each
    activation of each example with i.i.d. noise whose mean and variance themselves change every
    step, and its exact distributions are not reproduced here. At evaluation time no noise is
    added: the layer is exactly :class:`BatchNorm`. The latest draws are kept in ``last_scale`` and
    ``last_shift`` (``None`` before the first training step). It is composed: :class:`BatchNorm`
    followed by its :class:`ScaleShiftNoise` submodule ``noise``.
    """

    def __init__(self, num_features: int, eps: float = DEFAULT_EPS, momentum: float | None = DEFAULT_MOMENTUM,
                 affine: bool = True, *, scale_noise: float = 0.5, shift_noise: float = 0.5,
                 generator: torch.Generator | None = None):
        super().__init__(num_features, eps, momentum, affine)
        self.noise = ScaleShiftNoise(num_features, scale_noise=scale_noise, shift_noise=shift_noise,
                                     generator=generator)

    scale_noise = property(lambda self: self.noise.scale_noise)
    shift_noise = property(lambda self: self.noise.shift_noise)
    generator = property(lambda self: self.noise.generator)
    last_scale = property(lambda self: self.noise.last_scale, doc="The latest s_j (``None`` before training).")
    last_shift = property(lambda self: self.noise.last_shift, doc="The latest m_j (``None`` before training).")

    def forward(self, x: Tensor) -> Tensor:
        """:class:`BatchNorm`, then :class:`ScaleShiftNoise` (which is the identity in evaluation mode)."""
        return self.noise(super().forward(x))


class UnitQuantiles:
    """Record quantiles of one unit's *input* to a module at every training step.

    Ioffe & Szegedy (2015, Figure 1) followed the 15th, 50th and 85th percentiles of the input of
    one sigmoid over training. Used as a context manager around a training loop::

        with UnitQuantiles(model.hidden[-1].activation, unit=0) as q:
            fit(model, ...)
        q.steps, q.values          # forward passes recorded, tensor (len(steps), len(quantiles))

    The hook is registered through :class:`deepgrad.diagnostics.Recorder`. A forward pass is recorded
    when the module is in training mode and gradients are enabled (so
    evaluation passes are skipped), every ``every``-th such pass, counting from 1. The quantiles
    are taken over the examples of that pass's batch (``torch.quantile``, linear interpolation).
    """

    def __init__(self, module: nn.Module, unit: int, quantiles: tuple[float, ...] = (0.15, 0.5, 0.85),
                 every: int = 1):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
            raise ValueError(f"unit must be an int >= 0 (a column of the module's input), got {unit!r}")
        self.quantiles = tuple(fraction("quantiles", q, open_low=False, open_high=False) for q in quantiles)
        if not self.quantiles:
            raise ValueError("quantiles must hold at least one number in [0, 1], got none")
        self.module = module
        self.unit = unit
        self.every = positive_int("every", every)
        self.steps: list[int] = []
        self._rows: list[Tensor] = []
        self._passes = 0
        self._recorder: Recorder | None = None

    def _hook(self, module, inputs, output) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        self._passes += 1
        if self._passes % self.every:
            return
        x = inputs[0].detach()
        if x.ndim != 2 or self.unit >= x.shape[1]:
            raise ValueError(f"unit must index a column of the module's (batch, features) input, got unit "
                             f"{self.unit} for an input of shape {tuple(x.shape)}")
        column = x[:, self.unit].double()
        self._rows.append(torch.quantile(column, torch.tensor(self.quantiles, dtype=column.dtype,
                                                              device=column.device)).cpu())
        self.steps.append(self._passes)

    @property
    def values(self) -> Tensor:
        """The recorded quantiles, one row per recorded pass, one column per quantile (float64)."""
        if not self._rows:
            return torch.empty(0, len(self.quantiles), dtype=torch.float64)
        return torch.stack(self._rows)

    def __enter__(self) -> UnitQuantiles:
        self._recorder = Recorder(self.module, statistics=False).__enter__()
        self._recorder.on_forward(self.module, self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._recorder is not None:
            self._recorder.__exit__(*exc)
            self._recorder = None


__all__ = [
    "BatchNorm",
    "BatchNormCache",
    "BatchNormFunction",
    "NoisyBatchNorm",
    "ScaleShiftNoise",
    "UnitQuantiles",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_forward",
    "batch_norm_train",
    "layer_norm_forward",
    "unbiased_factor",
    "update_running_stats",
]
