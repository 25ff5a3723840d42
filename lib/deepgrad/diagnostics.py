"""Per-layer gradient and activation statistics, collected with hooks from any ``nn.Module``.

Two kinds of gradient tell different stories (Glorot & Bengio, 2010) and the book measures both:

- the *weight gradient* ∂L/∂W of a layer, what the optimiser uses to update it;
- the *back-propagated gradient* ∂L/∂(output of the layer), what flows on towards the input.

:class:`Recorder` attaches forward hooks to chosen modules; each records its output's mean and
standard deviation and registers a tensor hook that records the norm of the gradient flowing back
into that output. :func:`probe` runs one forward/backward pass under a recorder and returns one
:class:`LayerStats` per linear layer. Non-finite values are recorded as they are (``nan``/``inf``),
never raised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ModuleRecord:
    """What one :class:`Recorder` saw at one module during the last forward/backward pass."""

    name: str
    output_mean: float = math.nan
    output_std: float = math.nan
    output_grad_norm: float = math.nan  # ‖∂L/∂output‖ over the whole batch
    calls: int = 0  # forward calls seen; with weight sharing, the statistics are the last call's


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one linear layer after a forward and backward pass."""

    name: str
    weight_norm: float         # ‖W‖_F
    weight_grad_norm: float    # ‖∂L/∂W‖_F
    output_grad_norm: float    # ‖∂L/∂z‖_F, the back-propagated gradient at the layer's output z
    output_mean: float         # mean of z over batch and units
    output_std: float          # std of z over batch and units


def _as_float(t: Tensor) -> float:
    return float(t.detach().double())


class Recorder:
    """Context manager recording output statistics and output-gradient norms of selected modules.

    ``select`` is a module type, a tuple of types, or a predicate ``(name, module) -> bool``;
    by default every ``nn.Linear``. Hooks are removed on exit. Use it around a forward and a
    backward pass::

        with Recorder(model) as rec:
            F.cross_entropy(model(x), y).backward()
        rec.records  # {name: ModuleRecord}
    """

    def __init__(self, model: nn.Module,
                 select: type | tuple[type, ...] | Callable[[str, nn.Module], bool] = nn.Linear):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(select, (type, tuple)):
            types = select
            select = lambda name, module: isinstance(module, types)  # noqa: E731
        elif not callable(select):
            raise TypeError(f"select must be a module type, a tuple of types or a predicate, got {select!r}")
        self.model = model
        self.modules = [(name, m) for name, m in model.named_modules() if name and select(name, m)]
        self.records: dict[str, ModuleRecord] = {name: ModuleRecord(name) for name, _ in self.modules}
        self.call_order: list[str] = []  # names in the order the forward pass first reached them
        self._handles: list = []

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, Tensor):
                return
            rec = self.records[name]
            if rec.calls == 0:
                self.call_order.append(name)
            rec.calls += 1
            out = output.detach()
            rec.output_mean = _as_float(out.mean())
            rec.output_std = _as_float(out.std()) if out.numel() > 1 else 0.0
            if output.requires_grad:
                output.register_hook(self._grad_hook(name))
        return hook

    def _grad_hook(self, name: str):
        def hook(grad):
            self.records[name].output_grad_norm = _as_float(torch.linalg.vector_norm(grad))
        return hook

    def __enter__(self) -> Recorder:
        self._handles = [m.register_forward_hook(self._forward_hook(name)) for name, m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def weight_gradient_norms(model: nn.Module) -> dict[str, float]:
    """‖∂L/∂W‖_F of every ``nn.Linear`` after a backward pass (``nan`` where there is no gradient)."""
    return {
        name: math.nan if m.weight.grad is None else _as_float(torch.linalg.vector_norm(m.weight.grad))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    }


def probe(model: nn.Module, x: Tensor, y: Tensor,
          loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> list[LayerStats]:
    """One forward and backward pass on ``(x, y)``; one :class:`LayerStats` per ``nn.Linear``.

    Layers come in the order the forward pass reached them (input side first), whatever the order
    in which the model registered them; layers the pass never reached come last, with ``nan``.
    The model's gradients are zeroed first and left holding this batch's gradients afterwards;
    parameters are not changed (normalisation layers in training mode do update running statistics).
    """
    model.zero_grad(set_to_none=True)
    with Recorder(model, nn.Linear) as rec:
        loss_fn(model(x), y).backward()
    grads = weight_gradient_norms(model)
    linear = dict(rec.modules)
    order = rec.call_order + [name for name in rec.records if name not in rec.call_order]
    return [
        LayerStats(
            name=r.name,
            weight_norm=_as_float(torch.linalg.vector_norm(linear[r.name].weight)),
            weight_grad_norm=grads[r.name],
            output_grad_norm=r.output_grad_norm,
            output_mean=r.output_mean,
            output_std=r.output_std,
        )
        for r in (rec.records[name] for name in order)
    ]
