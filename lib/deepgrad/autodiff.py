"""Backpropagation for a multilayer perceptron, written out by hand.

Notation (the book's, chapter "Backpropagation"). A network has L linear layers; for a mini-batch
stored as rows,

    z^l = a^{l-1} (W^l)^T + b^l          pre-activation of layer l = 1..L,   a^0 = x
    a^l = f(z^l)                         hidden activation, l = 1..L-1
    a^l = a^{l-1} + f(z^l)               instead, for a hidden layer with a skip connection
    ŷ   = z^L                            the output layer is linear (logits)

and the backward pass runs the chain rule from the loss down:

    δ^L = ∂L/∂z^L                        from the loss (e.g. (softmax(z^L) - onehot(y)) / N)
    ∂L/∂a^{l-1} = δ^l W^l  (+ ∂L/∂a^l through a skip connection around layer l)
    δ^l = ∂L/∂a^l ⊙ f'(z^l)
    ∂L/∂W^l = (δ^l)^T a^{l-1},   ∂L/∂b^l = Σ_rows δ^l

Each step back multiplies by one more W^l and one more f'(z^l): the gradient reaching layer 1 is a
product of L-1 such factors, which is why it can vanish or explode (Rumelhart, Hinton & Williams, 1986).
The tests check every gradient here against ``torch.autograd``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deepgrad import activations
from deepgrad._checks import non_negative, one_of
from deepgrad.activations import Activation


@dataclass(frozen=True)
class Network:
    """The parameters of an MLP as plain tensors, W^l of shape (n_l, n_{l-1}) as in ``nn.Linear``."""

    weights: list[Tensor]
    biases: list[Tensor | None]
    activation: Activation
    residual: list[bool]  # one flag per hidden layer (L - 1 of them)

    def __post_init__(self):
        if len(self.weights) < 1:
            raise ValueError("weights must hold at least one layer")
        if len(self.biases) != len(self.weights):
            raise ValueError(f"biases must have one entry per layer ({len(self.weights)}), got {len(self.biases)}")
        if len(self.residual) != len(self.weights) - 1:
            raise ValueError(f"residual must have one flag per hidden layer ({len(self.weights) - 1}), "
                             f"got {len(self.residual)}")
        for l, (w, prev) in enumerate(zip(self.weights[1:], self.weights[:-1], strict=True), start=2):
            if w.shape[1] != prev.shape[0]:
                raise ValueError(f"weights[{l - 1}] has {w.shape[1]} inputs "
                                 f"but layer {l - 1} has {prev.shape[0]} outputs")

    @property
    def n_layers(self) -> int:
        """L, the number of linear layers."""
        return len(self.weights)

    @classmethod
    def create(cls, weights: list[Tensor], biases: list[Tensor | None] | None = None,
               activation: str = "sigmoid", residual: list[bool] | None = None) -> Network:
        """Build from tensors; ``biases`` default to none, ``residual`` to no skip connections."""
        biases = [None] * len(weights) if biases is None else list(biases)
        residual = [False] * (len(weights) - 1) if residual is None else list(residual)
        return cls(list(weights), biases, activations.get(activation), residual)

    @classmethod
    def from_mlp(cls, model) -> Network:
        """Copy (detached) the parameters of a :class:`deepgrad.models.MLP` without normalisation."""
        if getattr(model, "norm", None) is not None:
            raise ValueError(f"from_mlp supports MLPs with norm=None, got norm={model.norm!r}")
        activation = activations.get(model.activation_name)
        if activation.learnable:
            raise ValueError(f"from_mlp supports fixed activations only; {activation.name!r} has learned "
                             "parameters that the hand-written backward pass does not model")
        layers = model.linear_layers()
        return cls(
            weights=[layer.weight.detach() for layer in layers],
            biases=[None if layer.bias is None else layer.bias.detach() for layer in layers],
            activation=activation,
            residual=[bool(h.residual) for h in model.hidden],
        )


@dataclass(frozen=True)
class ForwardPass:
    """What the forward pass keeps for the backward pass: a^0 = x, every z^l and a^l."""

    inputs: Tensor
    pre_activations: list[Tensor]  # z^1 .. z^L
    activations: list[Tensor]      # a^1 .. a^{L-1}

    @property
    def output(self) -> Tensor:
        """ŷ = z^L."""
        return self.pre_activations[-1]


@dataclass(frozen=True)
class Gradients:
    """Everything the backward pass computes, indexed from the input side (index 0 is layer 1)."""

    weights: list[Tensor]           # ∂L/∂W^l
    biases: list[Tensor | None]     # ∂L/∂b^l (None where the layer has no bias)
    deltas: list[Tensor]            # δ^l = ∂L/∂z^l, the back-propagated gradients
    activation_grads: list[Tensor]  # ∂L/∂a^l for l = 0..L-1 (index 0 is ∂L/∂x)

    def weight_norms(self) -> list[float]:
        """Frobenius norm ‖∂L/∂W^l‖ of every layer, input side first."""
        return [float(torch.linalg.matrix_norm(g)) for g in self.weights]


def forward(net: Network, x: Tensor) -> ForwardPass:
    """Run the network on a batch ``x`` (rows are examples), keeping every z^l and a^l."""
    if x.ndim != 2 or x.shape[1] != net.weights[0].shape[1]:
        raise ValueError(f"x must have shape (batch, {net.weights[0].shape[1]}), got {tuple(x.shape)}")
    a, zs, acts = x, [], []
    for l, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        z = a @ w.T if b is None else torch.addmm(b, a, w.T)
        zs.append(z)
        if l < net.n_layers - 1:  # hidden layer
            a = a + net.activation(z) if net.residual[l] else net.activation(z)
            acts.append(a)
    return ForwardPass(x, zs, acts)


def backward(net: Network, fp: ForwardPass, grad_output: Tensor) -> Gradients:
    """Backpropagate ``grad_output`` = ∂L/∂ŷ through the network (see the module docstring)."""
    L = net.n_layers
    if grad_output.shape != fp.output.shape:
        raise ValueError(f"grad_output must have the output's shape {tuple(fp.output.shape)}, "
                         f"got {tuple(grad_output.shape)}")
    inputs_to = [fp.inputs] + fp.activations  # a^{l-1} for l = 1..L
    dW, db, deltas = [None] * L, [None] * L, [None] * L
    act_grads = [None] * L
    delta = grad_output  # δ^L: the output layer is linear
    for l in reversed(range(L)):  # l is 0-based: layer number l + 1
        deltas[l] = delta
        dW[l] = delta.T @ inputs_to[l]
        db[l] = None if net.biases[l] is None else delta.sum(0)
        grad_a = delta @ net.weights[l]  # ∂L/∂a^{l}, the input of this layer
        if l < L - 1 and net.residual[l]:
            grad_a = grad_a + act_grads[l + 1]  # the skip connection passes ∂L/∂a^{l+1} straight through
        act_grads[l] = grad_a
        if l > 0:
            delta = grad_a * net.activation.derivative(fp.pre_activations[l - 1])
    return Gradients(dW, db, deltas, act_grads)


def cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean softmax cross-entropy and its gradient (softmax(z) − onehot(y)) / N with respect to the logits."""
    n = logits.shape[0]
    loss = F.cross_entropy(logits, targets)
    grad = torch.softmax(logits, dim=1)
    grad[torch.arange(n), targets] -= 1
    return loss, grad / n


def mse(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean squared error over all elements, (1/M) Σ (ŷ − y)², and its gradient 2(ŷ − y)/M."""
    if outputs.shape != targets.shape:
        raise ValueError(f"targets must have the outputs' shape {tuple(outputs.shape)}, got {tuple(targets.shape)}")
    diff = outputs - targets
    return (diff**2).mean(), 2 * diff / diff.numel()


#: Losses :func:`backprop` accepts, each returning (loss, ∂loss/∂ŷ).
LOSSES: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
}


def backprop(net: Network, x: Tensor, y: Tensor, loss: str = "cross_entropy") -> tuple[Tensor, Gradients]:
    """Forward pass, loss, backward pass: returns the loss and every gradient."""
    one_of("loss", loss, LOSSES)
    fp = forward(net, x)
    value, grad_output = LOSSES[loss](fp.output, y)
    return value, backward(net, fp, grad_output)


def sgd_update(net: Network, grads: Gradients, lr: float) -> Network:
    """One gradient-descent step, w_new = w_old − η ∂L/∂w_old, for every weight and bias.

    The gradient is evaluated at the *old* weights: the step moves from where the gradient was measured.
    """
    non_negative("lr", lr)
    weights = [w - lr * g for w, g in zip(net.weights, grads.weights, strict=True)]
    biases = [None if b is None else b - lr * g for b, g in zip(net.biases, grads.biases, strict=True)]
    return Network(weights, biases, net.activation, net.residual)


def layer_jacobians(net: Network, fp: ForwardPass, example: int = 0) -> list[Tensor]:
    """The Jacobians whose product is ∂ŷ/∂x for one example, input side first.

    For hidden layer l the factor is ∂a^l/∂a^{l-1} = diag(f'(z^l)) W^l (plus the identity with a
    skip connection); the last factor is W^L. Then ∂ŷ/∂x = J^L J^{L-1} ··· J^1.
    """
    n = fp.inputs.shape[0]
    if not -n <= example < n:
        raise ValueError(f"example must index the batch of {n}, got {example}")
    jacobians = []
    for l, w in enumerate(net.weights[:-1]):
        j = net.activation.derivative(fp.pre_activations[l][example])[:, None] * w
        if net.residual[l]:
            j = j + torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        jacobians.append(j)
    return jacobians + [net.weights[-1]]
