"""The gradient-flow explorer: measured and predicted δ profiles over a grid, as an interactive figure.

:func:`gradient_flow` measures, for every activation, weight scale σ_w and depth L of a small grid,
the back-propagated gradient of each hidden layer of random networks (:func:`deepgrad.propagation.random_mlp_stats`),
and the mean-field prediction of the same profile (:func:`deepgrad.propagation.forward_variances` and
:func:`deepgrad.propagation.predicted_deltas`, Poole et al., 2016; Schoenholz et al., 2017).

Both are given in the vocabulary of :mod:`deepgrad.diagnostics`: the RMS of δ^l = ∂L/∂z^l
(:func:`~deepgrad.diagnostics.delta_rms`) relative to the last hidden layer's, the reference layer
of :class:`~deepgrad.diagnostics.GradientReport` (its column ``rel``). With every layer of the same
width n, RMS(δ^l) = (E‖δ^l‖² / n)^½, so

    rel^l = (E‖δ^l‖² / E‖δ^L‖²)^½,   predicted: (χ(q^l) ··· χ(q^{L-1}))^½.

The result renders in Jupyter and in the book as a figure with a select (activation) and two sliders
(σ_w, depth) drawn by the book's ``_static/explorer.js`` from the numbers stored in the output itself
(a ``<script type="application/json">``): every position of the controls shows measured numbers,
computed when the chapter ran. Its text form names the grid and the default position.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deepgrad import plotting, propagation
from deepgrad._checks import positive_int
from deepgrad.book import scientific
from deepgrad.diagnostics import VANISHING_BELOW

__all__ = ["GradientFlow", "gradient_flow"]


def _log10(values: torch.Tensor) -> list[float | None]:
    """log10 of each value to two decimals; ``None`` where it is not finite (overflow, or 0)."""
    out = []
    for v in values.tolist():
        out.append(round(math.log10(v), 2) if math.isfinite(v) and v > 0 else None)
    return out


@dataclass(frozen=True)
class GradientFlow:
    """Per-layer relative δ, measured and predicted, over a grid; shown as the interactive explorer.

    ``measured[a, s, d]`` and ``predicted[a, s, d]`` are float64 tensors of length ``depths[d]``:
    rel^l for layers l = 1..L (1 = nearest the input, the last entry is 1 by definition), for
    activation ``activations[a]`` and weight scale ``scales[s]``. ``default`` is the (a, s, d) the
    figure opens at.
    """

    activations: tuple[str, ...]
    scales: tuple[float, ...]
    depths: tuple[int, ...]
    width: int
    networks: int
    measured: dict[tuple[int, int, int], torch.Tensor]
    predicted: dict[tuple[int, int, int], torch.Tensor]
    default: tuple[int, int, int]

    def at(self, activation: str, scale: float, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(measured, predicted) rel profiles at one grid point; ``ValueError`` off the grid."""
        try:
            key = (self.activations.index(activation), self.scales.index(scale), self.depths.index(depth))
        except ValueError:
            raise ValueError(f"({activation!r}, {scale!r}, {depth!r}) is not on the grid: activations "
                             f"{self.activations}, scales {self.scales}, depths {self.depths}") from None
        return self.measured[key], self.predicted[key]

    def first_layer(self, key: tuple[int, int, int]) -> tuple[str, str]:
        """Layer 1's rel at a grid point, measured and predicted, as the text writes them (:func:`scientific`)."""
        return scientific(self.measured[key][0].item()), scientific(self.predicted[key][0].item())

    def sentence(self, key: tuple[int, int, int]) -> str:
        """The readout under the figure (``_static/explorer.js`` writes the same words)."""
        a, s, d = key
        measured, predicted = self.first_layer(key)
        return (f"{self.activations[a]}, σ_w = {self.scales[s]:g}, {self.depths[d]} layers: δ at layer 1 is "
                f"{measured} × layer {self.depths[d]}'s (measured); the recursion predicts {predicted}.")

    def to_json(self) -> str:
        """The stored data: the grid, the default, and per point log10 rel (``m`` measured, ``p`` predicted;
        ``null`` where not finite) and layer 1's two values as the text writes them (``f``)."""
        points = {f"{a},{s},{d}": {"m": _log10(self.measured[a, s, d]), "p": _log10(self.predicted[a, s, d]),
                                    "f": self.first_layer((a, s, d))}
                  for (a, s, d) in sorted(self.measured)}
        return json.dumps({"activations": list(self.activations), "scales": list(self.scales),
                           "depths": list(self.depths), "default": list(self.default), "width": self.width,
                           "colors": {name: plotting.color(name) for name in self.activations},
                           "threshold": VANISHING_BELOW,
                           "networks": self.networks, "points": points},
                          ensure_ascii=False, separators=(",", ":"))

    def __repr__(self) -> str:
        return (f"gradient-flow explorer: {len(self.activations)} activations × {len(self.scales)} weight "
                f"scales × {len(self.depths)} depths, {self.networks} networks of width {self.width} each\n"
                f"opens at: {self.sentence(self.default)}")

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        """The explorer: controls, an SVG drawn by ``_static/explorer.js``, the data, a text fallback."""
        data = self.to_json().replace("</", "<\\/")  # nothing in the data can close the script element
        fallback = html.escape(self.sentence(self.default))
        return (f'<div class="dg-explorer"><script type="application/json" class="dg-explorer-data">{data}'
                f'</script><p class="dg-explorer-fallback">{fallback} (The interactive figure needs '
                f'JavaScript.)</p></div>')


def _measure_grid(activations, scales, depths, width, networks, batch, generator, measured, predicted) -> None:
    for a, name in enumerate(activations):
        for s, scale in enumerate(scales):
            for d, depth in enumerate(depths):
                runs = [propagation.random_mlp_stats(name, depth, width, scale, batch=batch, generator=generator)
                        for _ in range(networks)]
                delta_sq = torch.stack([r.delta_sq for r in runs]).mean(0)
                q = propagation.forward_variances(name, scale**2, 0.0, depth)
                theory = propagation.predicted_deltas(name, scale**2, q)
                measured[a, s, d] = (delta_sq / delta_sq[-1]).sqrt()
                predicted[a, s, d] = (theory / theory[-1]).sqrt()


def gradient_flow(activations: Sequence[str], scales: Sequence[float], depths: Sequence[int], *,
                  width: int = 128, networks: int = 4, batch: int = 64, seed: int = 0,
                  default: tuple[str, float, int] | None = None) -> GradientFlow:
    """Measure and predict rel^l at every (activation, σ_w, depth) of the grid.

    Each point draws ``networks`` random MLPs of ``depth`` hidden layers of ``width`` units (weights
    N(0, σ_w²/fan_in), no biases, float64) on ``batch`` standard Gaussian inputs, with one generator
    seeded ``seed`` for the whole grid, and averages E‖δ^l‖² over the networks before taking ratios.
    The prediction starts from the inputs' variance, 1. ``default`` (activation, σ_w, depth) is the
    position the figure opens at (the first of each by default).
    """
    if isinstance(activations, str) or not activations or not scales or not depths:
        raise ValueError("activations, scales and depths must be non-empty sequences")
    for depth in depths:
        positive_int("depths[...]", depth)
    positive_int("width", width)
    positive_int("networks", networks)
    activations, scales, depths = tuple(activations), tuple(float(s) for s in scales), tuple(depths)
    start = (0, 0, 0)
    if default is not None:
        name, scale, depth = default
        if name not in activations or float(scale) not in scales or depth not in depths:
            raise ValueError(f"default must be a point of the grid (activation, scale, depth), got {default!r}")
        start = (activations.index(name), scales.index(float(scale)), depths.index(depth))
    generator = torch.Generator().manual_seed(seed)
    measured, predicted = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices of 64 × 128: one thread is fastest, and a busy machine stays usable
    try:
        _measure_grid(activations, scales, depths, width, networks, batch, generator, measured, predicted)
    finally:
        torch.set_num_threads(threads)

    return GradientFlow(activations, scales, depths, width, networks, measured, predicted, start)
