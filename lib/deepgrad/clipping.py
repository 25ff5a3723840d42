"""Exploding gradients and what is done about them: clipping, and the runs that compare the remedies.

- Clipping written from its definition and checked against ``torch.nn.utils``:
  :func:`clipped_by_value` / :func:`clip_grad_value_` (every component into [−c, c]) and
  :func:`clipped_by_norm` / :func:`clip_grad_norm_` (the whole gradient rescaled so that its global
  norm is at most c, Pascanu, Mikolov & Bengio 2013), with :func:`total_norm` and :func:`cosine`.
- Pascanu et al.'s one-unit recurrent network x_t = w·σ(x_{t−1}) + b, whose loss
  (σ(x_T) − target)² over (w, b) has a cliff: :func:`one_unit_loss` and its gradient by hand,
  :func:`one_unit_gradient`, a sum of products of the per-step factors w·σ'(x_{t−1}).
- :func:`train_recall`, which trains a :class:`~deepgrad.recurrent.TanhRNN` on the delayed-recall
  task (:func:`~deepgrad.data.delayed_recall`, scored by :func:`recall_loss`) with any mix of the
  remedies, on :func:`deepgrad.train.loop`, and reports divergence instead of failing.

``TanhRNN``, ``delayed_recall`` and ``warmup_cosine`` live in :mod:`deepgrad.recurrent`,
:mod:`deepgrad.data` and :mod:`deepgrad.schedules`; they are re-exported here under their old names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from deepgrad._checks import non_negative, number, one_of, positive, positive_int
from deepgrad.data import delayed_recall
from deepgrad.recurrent import TanhRNN
from deepgrad.schedules import warmup_cosine  # noqa: F401  (re-exported under its old name)
from deepgrad.train import ClipGradNorm, ClipGradValue, GradNormLog, History, LearningRate, StepMetric, loop

Parameters = Tensor | Iterable[Tensor]

#: The added constant of ``torch.nn.utils.clip_grad_norm_``: the scale is c / (‖g‖ + 1e-6).
NORM_EPS = 1e-6


def _grads(parameters: Parameters) -> list[Tensor]:
    """The ``.grad`` of every parameter that has one (a single tensor counts as one parameter)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def total_norm(grads: Iterable[Tensor], norm_type: float = 2.0) -> Tensor:
    """The global norm of a list of tensors, as if they were one long vector.

    ‖g‖_p = (Σ_i ‖g_i‖_p^p)^{1/p}, computed as the norm of the per-tensor norms, as PyTorch does;
    ``norm_type=math.inf`` gives the largest absolute entry. An empty list has norm 0.
    """
    number("norm_type", norm_type, "a number > 0 or math.inf")
    norm_type = positive("norm_type", norm_type, allow_inf=True)
    grads = list(grads)
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), norm_type) for g in grads])
    return torch.linalg.vector_norm(norms, norm_type)


def clipped_by_value(grads: Iterable[Tensor], clip_value: float) -> list[Tensor]:
    """Every component clipped into [−c, c]: g_i ↦ min(max(g_i, −c), c). NaN stays NaN.

    Components inside the interval are unchanged, the others are cut to ±c independently, so
    the direction of the gradient changes whenever some but not all components are cut.
    """
    c = non_negative("clip_value", clip_value, allow_inf=True)  # math.inf: no clipping, as in PyTorch
    return [g.clamp(-c, c) for g in grads]


def clipped_by_norm(grads: Iterable[Tensor], max_norm: float, norm_type: float = 2.0, *,
                    error_if_nonfinite: bool = False) -> tuple[list[Tensor], Tensor]:
    """The gradient rescaled so that its global norm is at most ``max_norm``; also returns the norm.

    g ↦ g · min(1, c / (‖g‖ + 10⁻⁶)) (Pascanu, Mikolov & Bengio 2013, algorithm 1, with PyTorch's
    10⁻⁶ guard against ‖g‖ = 0). One factor multiplies every component, so the direction never
    changes. A non-finite norm raises ``RuntimeError`` if ``error_if_nonfinite``; otherwise the
    factor is computed anyway, as in PyTorch: a NaN norm makes every component NaN, an infinite one
    makes the finite components 0 and the infinite ones NaN.
    """
    c = non_negative("max_norm", max_norm, allow_inf=True)  # math.inf: no clipping, as in PyTorch
    grads = list(grads)
    norm = total_norm(grads, norm_type)
    if error_if_nonfinite and not torch.isfinite(norm):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({norm.item()}), "
                           "so it cannot be clipped; pass error_if_nonfinite=False to clip anyway")
    scale = torch.clamp(c / (norm + NORM_EPS), max=1.0)
    return [g * scale.to(g.device, g.dtype) for g in grads], norm


def clip_grad_value_(parameters: Parameters, clip_value: float) -> None:
    """In place, like ``torch.nn.utils.clip_grad_value_``: see :func:`clipped_by_value`."""
    grads = _grads(parameters)
    for g, new in zip(grads, clipped_by_value(grads, clip_value), strict=True):
        g.copy_(new)


def clip_grad_norm_(parameters: Parameters, max_norm: float, norm_type: float = 2.0, *,
                    error_if_nonfinite: bool = False) -> Tensor:
    """In place, like ``torch.nn.utils.clip_grad_norm_``: see :func:`clipped_by_norm`.

    Returns the global norm *before* clipping, as PyTorch does.
    """
    grads = _grads(parameters)
    new, norm = clipped_by_norm(grads, max_norm, norm_type, error_if_nonfinite=error_if_nonfinite)
    for g, n in zip(grads, new, strict=True):
        g.copy_(n)
    return norm


def cosine(a: Iterable[Tensor], b: Iterable[Tensor]) -> float:
    """Cosine of the angle between two gradients given as lists of tensors (flattened and joined)."""
    u = torch.cat([t.detach().reshape(-1) for t in a])
    v = torch.cat([t.detach().reshape(-1) for t in b])
    if u.shape != v.shape:
        raise ValueError(f"a and b must have the same number of components, got {u.numel()} and {v.numel()}")
    return float(u @ v / (u.norm() * v.norm()))


# --- Pascanu et al.'s one-unit recurrent network ---------------------------------------------------

def _one_unit_states(w: Tensor, b: Tensor, steps: int, x0: float) -> list[Tensor]:
    positive_int("steps", steps)
    w, b = torch.broadcast_tensors(torch.as_tensor(w), torch.as_tensor(b))
    x = torch.full_like(w, x0)
    states = [x]
    for _ in range(steps):
        x = w * torch.sigmoid(x) + b
        states.append(x)
    return states


def one_unit_loss(w: Tensor, b: Tensor, *, steps: int = 50, x0: float = 0.5, target: float = 0.7) -> Tensor:
    """(σ(x_T) − target)² for x_t = w·σ(x_{t−1}) + b, t = 1..T, elementwise over ``w`` and ``b``.

    The network of Pascanu, Mikolov & Bengio (2013, section 3) whose error surface over (w, b) has a
    cliff. Differentiable by autograd; :func:`one_unit_gradient` gives the gradient by hand.
    """
    x_last = _one_unit_states(w, b, steps, x0)[-1]
    return (torch.sigmoid(x_last) - target) ** 2


def one_unit_gradient(w: Tensor, b: Tensor, *, steps: int = 50, x0: float = 0.5,
                      target: float = 0.7) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, ∂L/∂w, ∂L/∂b)`` of :func:`one_unit_loss`, by backpropagation through time by hand.

    With ∂x_t/∂x_{t−1} = w·σ'(x_{t−1}), the error at step t is
    ∂L/∂x_t = ∂L/∂x_T · ∏_{t<i≤T} w·σ'(x_{i−1}), and
    ∂L/∂w = Σ_t ∂L/∂x_t · σ(x_{t−1}),  ∂L/∂b = Σ_t ∂L/∂x_t:
    a sum of products of T − t factors, the recurrent product of Pascanu et al. (2013, eq. 5).
    """
    with torch.no_grad():
        states = _one_unit_states(w, b, steps, x0)
        w = torch.broadcast_to(torch.as_tensor(w), states[0].shape)
        s_last = torch.sigmoid(states[-1])
        loss = (s_last - target) ** 2
        err = 2 * (s_last - target) * s_last * (1 - s_last)   # ∂L/∂x_T
        grad_w = torch.zeros_like(err)
        grad_b = torch.zeros_like(err)
        for t in range(steps, 0, -1):
            s_prev = torch.sigmoid(states[t - 1])
            grad_w = grad_w + err * s_prev
            grad_b = grad_b + err
            err = err * w * s_prev * (1 - s_prev)           # ∂L/∂x_{t−1}
    return loss, grad_w, grad_b


# --- the delayed-recall task and its trainer ------------------------------------------------------

def recall_loss(prediction: Tensor, target: Tensor, lag: int) -> Tensor:
    """Mean squared error over the steps t ≥ ``lag``, where there is something to recall."""
    return ((prediction[:, lag:] - target[:, lag:]) ** 2).mean()


class RecallHistory(History):
    """What :func:`train_recall` measured at every step (before that step's update): a
    :class:`~deepgrad.train.History` with the names the clipping chapter uses."""

    @property
    def loss(self) -> list[float]:
        return self.train_loss

    @property
    def grad_norm(self) -> list[float]:
        """Global gradient norm before clipping (``nan`` for the diverged step)."""
        return self.logs.get("grad_norm", [])

    @property
    def recurrent_norm(self) -> list[float]:
        """Spectral norm of W_rec."""
        return self.logs.get("recurrent_norm", [])


CLIPS = (None, "norm", "value")


def train_recall(model: TanhRNN, *, steps: int, lr: float, lag: int = 5, length: int = 50, batch: int = 32,
                 clip: str | None = None, threshold: float | None = None, weight_decay: float = 0.0,
                 schedule: Callable[[int], float] | None = None, truncate: int | None = None,
                 generator: torch.Generator | None = None) -> RecallHistory:
    """Train ``model`` on fresh :func:`delayed_recall` batches with SGD and any mix of the remedies.

    ``clip`` is ``None``, ``"norm"`` (:func:`clip_grad_norm_`) or ``"value"`` (:func:`clip_grad_value_`)
    with ``threshold``; ``weight_decay`` λ is SGD's, the gradient of the penalty (λ/2)‖θ‖², added
    after clipping; ``schedule(step)`` multiplies ``lr``; ``truncate`` is passed to the model.
    A non-finite loss ends the run (``diverged_at``); nothing is raised or printed.
    """
    positive_int("steps", steps)
    positive("lr", lr)
    one_of("clip", clip, CLIPS)
    if clip is not None:
        if threshold is None:
            raise ValueError(f"threshold must be given with clip={clip!r}")
        positive("threshold", threshold, allow_inf=True)
    non_negative("weight_decay", weight_decay)
    device = model.readout.weight.device
    dtype = model.readout.weight.dtype
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)

    def fresh_batches():
        while True:
            yield delayed_recall(batch, length, lag, generator=generator, dtype=dtype, device=device)

    def step_loss(m: TanhRNN, b: tuple[Tensor, Tensor]) -> Tensor:
        return recall_loss(m(b[0], truncate), b[1], lag)

    callbacks = [] if schedule is None else [LearningRate(lambda k: lr * schedule(k))]
    callbacks += [
        StepMetric("recurrent_norm", lambda m: float(torch.linalg.matrix_norm(m.recurrent_weight.detach(), ord=2))),
        GradNormLog("grad_norm", lambda m: float(total_norm(_grads(m.parameters())))),
    ]
    if clip == "norm":
        callbacks.append(ClipGradNorm(threshold, clip_grad_norm_))
    elif clip == "value":
        callbacks.append(ClipGradValue(threshold, clip_grad_value_))
    return loop(model, fresh_batches(), optimizer, steps=steps, step_loss=step_loss, callbacks=callbacks,
                history=RecallHistory())
