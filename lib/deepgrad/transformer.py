"""A small transformer encoder written out, and the experiments on its gradients.

- :func:`attention`: scaled dot-product attention (Vaswani et al., 2017),
  ``softmax(Q Kᵀ / √d_k) V``, with the scale switchable off to show what it is for;
  :func:`softmax_jacobian` is the softmax's Jacobian ``diag(p) − p pᵀ``.
- :class:`MultiHeadAttention`, :class:`LayerNorm` and :class:`EncoderLayer`: one encoder layer,
  self-attention and a position-wise MLP, each in a residual connection with layer normalisation
  (Ba, Kiros & Hinton, 2016), either after the sum (*Post-LN*, the original arrangement) or at the
  input of each branch (*Pre-LN*, Xiong et al., 2020). With ``residual_scale`` α and ``branch_gain``
  β it is DeepNorm's layer (Wang et al., 2022), ``LN(α x + F(x))``; with ``norm="rezero"`` it is
  ReZero's (Bachlechner et al., 2020), ``x + g F(x)`` with ``g`` a scalar that starts at 0 and no
  normalisation. :meth:`EncoderLayer.copy_from` copies the weights of a
  ``torch.nn.TransformerEncoderLayer`` so that the two can be compared.
- :class:`Encoder`: token and position embeddings, a stack of freshly initialised layers (never
  copies of one), a final layer norm for Pre-LN, and a read-out per position.
- :func:`sequence_task`: the synthetic sequence tasks (copy, reverse, sort) the chapter trains on,
  generated on the spot; :func:`train_task` trains an encoder on one with the library's loop, and
  :func:`final_error` and friends are module-level run functions for :func:`deepgrad.evidence.compare`.
- :func:`mean_cosine`: the mean pairwise cosine similarity of the positions' representations, which
  goes to 1 when every position collapses to the same vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import one_of, positive, positive_int
from deepgrad.init import xavier_normal_
from deepgrad.normalization import layer_norm_forward
from deepgrad.train import Callback, History, LearningRate, loop

__all__ = [
    "NORMS", "TASKS", "Encoder", "EncoderLayer", "LayerNorm", "MultiHeadAttention", "attention",
    "SETTING", "deepnorm_constants", "final_cosine", "final_error", "mean_cosine", "sequence_task", "softmax_jacobian",
    "token_error", "train_task", "warmup_linear", "xavier_",
]

#: Where the layer normalisation sits: after the residual sum, at each branch's input, or nowhere
#: (ReZero's gated residual).
NORMS = ("post", "pre", "rezero")
#: The synthetic tasks of :func:`sequence_task`.
TASKS = ("copy", "reverse", "sort")


def attention(q: Tensor, k: Tensor, v: Tensor, *, scale: bool = True) -> tuple[Tensor, Tensor]:
    """Dot-product attention (Vaswani et al., 2017): ``(softmax(S) V, softmax(S))`` with scores
    ``S = Q Kᵀ / √d_k`` (``S = Q Kᵀ`` when ``scale`` is false).

    ``q`` is ``(..., n, d_k)``, ``k`` ``(..., m, d_k)``, ``v`` ``(..., m, d_v)``; the softmax runs over
    the ``m`` keys, so row ``i`` of the weights is the distribution of query ``i`` over the keys.
    """
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def softmax_jacobian(p: Tensor) -> Tensor:
    """The softmax's Jacobian at the output ``p`` (last dimension): ``∂p_i/∂s_j = p_i (δ_ij − p_j)``,
    i.e. ``diag(p) − p pᵀ``. It vanishes when ``p`` is one-hot (a saturated softmax)."""
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: ``h`` heads of width ``d_k = d_model / h`` attend in parallel,
    ``head_i = attention(X W_Q^i, X W_K^i, X W_V^i)``, and ``W_O`` mixes their concatenation.

    Queries, keys and values are three ``nn.Linear(d_model, d_model)`` layers (each head is a slice
    of ``d_k`` of their outputs), initialised as PyTorch initialises ``nn.MultiheadAttention``'s
    joint ``(3 d_model, d_model)`` projection: uniform, variance ``1/(2 d_model)``, biases 0; ``W_O``
    keeps ``nn.Linear``'s default with a zero bias.
    """

    def __init__(self, d_model: int, heads: int, *, scale: bool = True):
        super().__init__()
        positive_int("d_model", d_model)
        positive_int("heads", heads)
        if d_model % heads:
            raise ValueError(f"d_model must be a multiple of heads={heads}, got {d_model}")
        self.d_model, self.heads, self.scale = d_model, heads, scale
        self.query, self.key, self.value, self.out = (nn.Linear(d_model, d_model) for _ in range(4))
        bound = math.sqrt(6 / (4 * d_model))  # xavier_uniform of the joint (3d, d) matrix
        for layer in (self.query, self.key, self.value):
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.out.bias)
        # the last forward pass's attention weights, (batch, h, n, n), detached: kept for inspection, they
        # must not keep that pass's autograd graph (and every hook registered on it) alive with the model
        self.weights: Tensor | None = None

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.d_model // self.heads).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        heads, weights = attention(q, k, v, scale=self.scale)
        self.weights = weights.detach()
        return self.out(heads.transpose(1, 2).reshape(b, n, self.d_model))


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension with a learned scale γ (1) and shift β (0).

    With ``fused=False`` it is :func:`deepgrad.normalization.layer_norm_forward`, the formula written
    out (autograd differentiates its steps); with ``fused=True`` it calls
    ``torch.nn.functional.layer_norm``, which computes the same with one fused backward and makes the
    training runs about 40 % faster. The tests check that the two agree.
    """

    def __init__(self, features: int, eps: float = 1e-5, *, fused: bool = True):
        super().__init__()
        self.eps = positive("eps", eps)
        self.fused = bool(fused)
        self.weight = nn.Parameter(torch.ones(positive_int("features", features)))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return layer_norm_forward(x, self.weight, self.bias, self.eps)


class EncoderLayer(nn.Module):
    """One transformer encoder layer: self-attention, then a position-wise MLP, each a residual branch.

    With ``norm="post"`` (Vaswani et al., 2017), ``x ← LN(α x + Attn(x))``, ``x ← LN(α x + MLP(x))``;
    with ``"pre"`` (Xiong et al., 2020), ``x ← x + Attn(LN(x))``, ``x ← x + MLP(LN(x))``; with
    ``"rezero"`` (Bachlechner et al., 2020), ``x ← x + g Attn(x)``, ``x ← x + g MLP(x)``, one scalar
    ``g`` per layer starting at 0. ``MLP(x) = W₂ ReLU(W₁ x + b₁) + b₂`` with ``d_ff`` hidden units.
    ``residual_scale`` is α (1 except for DeepNorm, Post-LN only). ``branch_gain`` β, when given,
    re-draws the weights as DeepNorm specifies (Wang et al., 2022, their pseudo-code): Xavier normal
    with gain β for the value, output and MLP matrices, ``N(0, β² · 2/(fan_in + fan_out))``, and with
    gain 1 for the query and key matrices (biases stay 0); ``None`` keeps PyTorch's initialisation (see
    :func:`deepnorm_constants`). With α = 1 and ``branch_gain=None`` the layer computes
    what ``torch.nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout=0, batch_first=True,
    norm_first=(norm == "pre"))`` computes. ``fused_norm`` picks the :class:`LayerNorm`'s computation.
    """

    def __init__(self, d_model: int, heads: int, d_ff: int, *, norm: str = "post", scale: bool = True,
                 residual_scale: float = 1.0, branch_gain: float | None = None, fused_norm: bool = True):
        super().__init__()
        self.norm = one_of("norm", norm, NORMS)
        self.residual_scale = positive("residual_scale", residual_scale)
        if norm != "post" and residual_scale != 1:
            raise ValueError(f"residual_scale applies to norm='post' only (DeepNorm), got norm={norm!r}")
        self.attn = MultiHeadAttention(d_model, heads, scale=scale)
        self.linear1 = nn.Linear(d_model, positive_int("d_ff", d_ff))
        self.linear2 = nn.Linear(d_ff, d_model)
        if norm == "rezero":
            self.gate = nn.Parameter(torch.zeros(()))
        else:
            self.norm1, self.norm2 = LayerNorm(d_model, fused=fused_norm), LayerNorm(d_model, fused=fused_norm)
        if branch_gain is not None:
            positive("branch_gain", branch_gain)
            with torch.no_grad():
                for w in (self.attn.query.weight, self.attn.key.weight):
                    xavier_normal_(w, gain=1.0)
                for w in (self.attn.value.weight, self.attn.out.weight, self.linear1.weight, self.linear2.weight):
                    xavier_normal_(w, gain=branch_gain)

    def mlp(self, x: Tensor) -> Tensor:
        return self.linear2(F.relu(self.linear1(x)))

    def forward(self, x: Tensor) -> Tensor:
        if self.norm == "post":
            a = self.residual_scale
            x = self.norm1(a * x + self.attn(x))
            return self.norm2(a * x + self.mlp(x))
        if self.norm == "pre":
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gate * self.attn(x)
        return x + self.gate * self.mlp(x)

    @torch.no_grad()
    def copy_from(self, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` of the same sizes into this layer."""
        if self.norm == "rezero":
            raise ValueError("norm must be 'post' or 'pre' to copy a TransformerEncoderLayer, got 'rezero'")
        sa, d = layer.self_attn, self.attn.d_model
        for i, mine in enumerate((self.attn.query, self.attn.key, self.attn.value)):
            mine.weight.copy_(sa.in_proj_weight[i * d:(i + 1) * d])
            mine.bias.copy_(sa.in_proj_bias[i * d:(i + 1) * d])
        pairs = [(self.attn.out, sa.out_proj), (self.linear1, layer.linear1), (self.linear2, layer.linear2),
                 (self.norm1, layer.norm1), (self.norm2, layer.norm2)]
        for mine, theirs in pairs:
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        return self


def xavier_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-draw every weight matrix of ``model``'s encoder layers from Xavier's normal distribution
    (:func:`deepgrad.init.xavier_normal_`), biases left alone: the initialisation Xiong et al.'s
    (2020) analysis assumes. Returns ``model``."""
    for module in model.modules():
        if isinstance(module, EncoderLayer):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    xavier_normal_(layer.weight, generator=generator)
    return model


def deepnorm_constants(layers: int) -> tuple[float, float]:
    """DeepNorm's (α, β) for an encoder of ``layers`` layers (Wang et al., 2022, encoder-only):
    ``α = (2L)^{1/4}`` up-weights the residual stream, ``β = (8L)^{-1/4}`` scales down the initial
    value, output and MLP weights."""
    n = positive_int("layers", layers)
    return (2 * n) ** 0.25, (8 * n) ** -0.25


class Encoder(nn.Module):
    """A transformer encoder for sequence-to-sequence tasks of equal length: token embedding plus a
    learned position embedding, ``layers`` freshly initialised :class:`EncoderLayer` s, a final
    :class:`LayerNorm` when ``norm="pre"`` (the stack's output is otherwise an un-normalised sum),
    and a linear read-out to ``vocab`` logits at every position.

    ``deepnorm=True`` (Post-LN only) sets α from :func:`deepnorm_constants` and draws the layers'
    weights with DeepNorm's initialisation (gain β, see :class:`EncoderLayer`). The embeddings are
    drawn from N(0, 1), so the residual stream starts at unit scale.
    """

    def __init__(self, vocab: int, length: int, *, d_model: int = 32, heads: int = 2, d_ff: int = 64,
                 layers: int = 4, norm: str = "post", scale: bool = True, deepnorm: bool = False):
        super().__init__()
        one_of("norm", norm, NORMS)
        if deepnorm and norm != "post":
            raise ValueError(f"deepnorm needs norm='post', got norm={norm!r}")
        alpha, beta = deepnorm_constants(layers) if deepnorm else (1.0, None)
        self.norm = norm
        self.embed = nn.Embedding(positive_int("vocab", vocab), d_model)
        self.position = nn.Parameter(torch.randn(positive_int("length", length), d_model))
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, d_ff, norm=norm, scale=scale, residual_scale=alpha, branch_gain=beta)
            for _ in range(positive_int("layers", layers)))
        self.final_norm = LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.readout = nn.Linear(d_model, vocab)

    def features(self, tokens: Tensor) -> Tensor:
        """The representations the read-out sees, ``(batch, length, d_model)``."""
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.readout(self.features(tokens))


def sequence_task(task: str, batch: int, length: int, vocab: int, *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """A batch of a synthetic sequence task: random token sequences ``x`` (``batch × length``, tokens
    uniform in ``0 … vocab − 1``) and targets ``y`` of the same shape: ``x`` itself (``"copy"``), ``x``
    back to front (``"reverse"``) or ``x`` sorted (``"sort"``). Reverse and sort need attention: the
    answer at a position depends on tokens at other positions."""
    one_of("task", task, TASKS)
    x = torch.randint(positive_int("vocab", vocab, minimum=2), (positive_int("batch", batch),
                      positive_int("length", length)), generator=generator).to(device)
    y = {"copy": lambda: x, "reverse": lambda: x.flip(1), "sort": lambda: x.sort(dim=1).values}[task]()
    return x, y


def warmup_linear(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up then constant: ``η (k + 1)/w`` for the first ``w = warmup`` steps ``k = 0, 1, …``,
    then ``η`` (``warmup=0``: constant)."""
    positive("lr", lr)
    positive_int("warmup", warmup, minimum=0)
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


def _sequence_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def token_error(model: Encoder, x: Tensor, y: Tensor) -> float:
    """Share of the positions whose most likely token is wrong (0 solved; 1 − 1/vocab at chance)."""
    with torch.no_grad():
        return float((model(x).argmax(-1) != y).double().mean())


def mean_cosine(h: Tensor) -> float:
    """Mean pairwise cosine similarity of the positions' vectors ``h`` (``batch × n × d``), over the
    ``n (n − 1)`` ordered pairs of distinct positions of each sequence, averaged over the batch: 1 when
    every position holds the same vector (the representations have collapsed)."""
    u = F.normalize(h.detach().double(), dim=-1)
    n = u.shape[1]
    gram = u @ u.transpose(1, 2)
    return float((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)).mean() / (n * (n - 1)))


#: The chapter's training setting (module level, so that :func:`deepgrad.evidence.compare` can send
#: the run functions to worker processes).
SETTING = dict(task="reverse", vocab=10, length=10, d_model=32, heads=2, d_ff=64, layers=4,
               batch=32, steps=120, lr=3e-2, warmup=50)


def train_task(seed: int, *, norm: str = "post", warmup: int = 0, deepnorm: bool = False,
               lr: float | None = None, steps: int | None = None, layers: int | None = None,
               callbacks: Sequence[Callback] = (),
               device: torch.device | str = "cpu") -> tuple[Encoder, History, tuple[Tensor, Tensor]]:
    """Train an :class:`Encoder` on :data:`SETTING`'s task with Adam (β₂ = 0.98, as Vaswani et al.)
    through :func:`deepgrad.train.loop`, a fresh batch every step, the learning rate set by
    :func:`warmup_linear` through :class:`deepgrad.train.LearningRate` (then ``callbacks``). Returns the
    model, its history and a held-out batch of 512 sequences (drawn from a generator seeded with ``seed + 10_000``)."""
    s = dict(SETTING)
    lr = s["lr"] if lr is None else lr
    steps = s["steps"] if steps is None else steps
    layers = s["layers"] if layers is None else layers
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Encoder(s["vocab"], s["length"], d_model=s["d_model"], heads=s["heads"], d_ff=s["d_ff"],
                    layers=layers, norm=norm, deepnorm=deepnorm).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), foreach=True)

    def stream():
        while True:
            yield sequence_task(s["task"], s["batch"], s["length"], s["vocab"], generator=generator, device=device)

    history = loop(model, stream(), optimizer, steps=steps, step_loss=_sequence_loss,
                   callbacks=[LearningRate(lambda k: warmup_linear(k, lr, warmup)), *callbacks])
    held_out = sequence_task(s["task"], 512, s["length"], s["vocab"],
                             generator=torch.Generator().manual_seed(seed + 10_000), device=device)
    return model, history, held_out


def final_error(seed: int, **kwargs) -> float:
    """Token error on the held-out batch after :func:`train_task` (``inf`` if the run diverged)."""
    model, history, (x, y) = train_task(seed, **kwargs)
    return math.inf if history.diverged else token_error(model, x, y)


def final_cosine(seed: int, **kwargs) -> float:
    """:func:`mean_cosine` of the final representations on the held-out batch after :func:`train_task`."""
    model, history, (x, _) = train_task(seed, **kwargs)
    if history.diverged:
        return math.nan
    with torch.no_grad():
        return mean_cosine(model.features(x))

