"""deepgrad.explorer: the gradient-flow explorer's data against the library's recursion and a direct
measurement, and its stored form."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from deepgrad import diagnostics, explorer, propagation
from deepgrad.book import scientific


@pytest.fixture(scope="module")
def flow():
    return explorer.gradient_flow(["tanh", "relu"], [0.8, 1.41], [3, 6], width=64, networks=2, batch=32,
                                  default=("relu", 1.41, 6))


def test_prediction_is_the_recursions_ratio(flow):
    _, predicted = flow.at("tanh", 0.8, 6)
    q = propagation.forward_variances("tanh", 0.64, 0.0, 6)
    chi = propagation.backward_factor("tanh", 0.64, q)
    # rel^l = (chi(q^l) ... chi(q^{L-1}))^1/2, written out as a product
    expected = torch.tensor([math.prod(chi[l:5].tolist()) ** 0.5 for l in range(6)], dtype=torch.float64)
    torch.testing.assert_close(predicted, expected)
    assert predicted[-1] == 1


def test_measured_is_the_delta_rms_ratio_of_the_same_networks(flow):
    """An independent measurement: the same seeded draws, δ from autograd, delta_rms per layer."""
    generator = torch.Generator().manual_seed(0)
    sums = {}
    for activation in ("tanh", "relu"):  # the grid's order of draws: activation, scale, depth, network
        for scale in (0.8, 1.41):
            for depth in (3, 6):
                rms_sq = []
                for _ in range(2):
                    x = torch.randn(32, 64, generator=generator, dtype=torch.float64)
                    ws = [torch.empty(64, 64, dtype=torch.float64).normal_(0, scale / 8, generator=generator)
                          for _ in range(depth)]
                    for _ in range(depth):  # the biases' draws (zero biases: sigma_b = 0)
                        torch.randn(64, generator=generator, dtype=torch.float64)
                    u = torch.randn(32, 64, generator=generator, dtype=torch.float64) * scale / 8
                    zs, a = [], x
                    for w in ws:
                        z = (a @ w.T).requires_grad_(True)
                        zs.append(z)
                        a = torch.tanh(z) if activation == "tanh" else torch.relu(z)
                    deltas = torch.autograd.grad((a * u).sum(), zs)
                    rms_sq.append(torch.stack([diagnostics.delta_rms(d) ** 2 for d in deltas]))
                sums[activation, scale, depth] = torch.stack(rms_sq).mean(0)
    for (activation, scale, depth), ms in sums.items():
        measured, _ = flow.at(activation, scale, depth)
        torch.testing.assert_close(measured, (ms / ms[-1]).sqrt())


def test_measured_follows_the_prediction_where_the_recursion_is_accurate():
    flow = explorer.gradient_flow(["tanh"], [0.8], [10], width=256, networks=4)
    measured, predicted = flow.at("tanh", 0.8, 10)
    assert measured[0] < 0.2  # it does vanish
    assert ((measured.log() - predicted.log()).abs() < 0.15).all()


def test_stored_json_holds_every_point_and_the_readout(flow):
    data = json.loads(flow.to_json())
    assert data["default"] == [1, 1, 1] and data["threshold"] == diagnostics.VANISHING_BELOW
    assert len(data["points"]) == 2 * 2 * 2
    point = data["points"]["1,1,1"]
    measured, predicted = flow.at("relu", 1.41, 6)
    assert point["m"] == [round(math.log10(v), 2) for v in measured.tolist()]
    assert point["f"] == [scientific(measured[0].item()), scientific(predicted[0].item())]
    assert "relu, σ_w = 1.41, 6 layers" in repr(flow)


def test_html_embeds_the_data_safely(flow):
    markup = flow._repr_html_()
    found = re.search(r'<script type="application/json" class="dg-explorer-data">(.*?)</script>', markup, re.S)
    assert found and json.loads(found.group(1)) == json.loads(flow.to_json())
    assert 'class="dg-explorer-fallback"' in markup


def test_overflow_is_stored_as_null():
    flow = explorer.gradient_flow(["relu"], [1e30], [12], width=16, networks=1, batch=4)
    data = json.loads(flow.to_json())
    assert None in data["points"]["0,0,0"]["m"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="default"):
        explorer.gradient_flow(["tanh"], [1.0], [3], default=("relu", 1.0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        explorer.gradient_flow("tanh", [1.0], [3])
    with pytest.raises(ValueError, match="not on the grid"):
        explorer.gradient_flow(["tanh"], [1.0], [3], width=8, batch=4, networks=1).at("tanh", 2.0, 3)
