import random

import numpy as np
import pytest
import torch

import deepgrad as dg


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_same_seed_same_numbers():
    dg.seed_everything(7)
    first = _draw()
    dg.seed_everything(7)
    assert _draw() == first
    dg.seed_everything(8)
    assert _draw() != first


def test_returned_generator_is_seeded():
    a = torch.rand(4, generator=dg.seed_everything(3))
    b = torch.rand(4, generator=dg.seed_everything(3))
    assert torch.equal(a, b)


def test_threads_and_determinism_are_set():
    dg.seed_everything(0, threads=1)
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    dg.seed_everything(0, threads=2)
    assert torch.get_num_threads() == 2
    dg.seed_everything(0)  # the default: one thread
    assert torch.get_num_threads() == 1


def test_training_twice_gives_identical_weights():
    def run():
        dg.seed_everything(1)
        model = dg.models.MLP(64, 10, depth=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        d = dg.data.load_digits()
        for x, y in dg.data.batches(d.train, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return torch.cat([p.flatten() for p in model.parameters()])
    assert torch.equal(run(), run())


def test_default_device(monkeypatch):
    monkeypatch.setenv("DEEPGRAD_DEVICE", "cpu")
    assert dg.default_device() == torch.device("cpu")
    monkeypatch.delenv("DEEPGRAD_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dg.default_device().type == expected


class TestBadArguments:
    @pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
    def test_seed(self, seed):
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            dg.seed_everything(seed)

    def test_threads(self):
        with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
            dg.seed_everything(0, threads=0)

    def test_device_variable(self, monkeypatch):
        monkeypatch.setenv("DEEPGRAD_DEVICE", "tpu")
        with pytest.raises(ValueError, match="DEEPGRAD_DEVICE must be one of 'cpu', 'cuda'; got 'tpu'"):
            dg.default_device()

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_cuda_requested_without_cuda(self, monkeypatch):
        monkeypatch.setenv("DEEPGRAD_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device is available"):
            dg.default_device()


@pytest.mark.parametrize("value, digits, expected", [
    (0.123456, 3, 0.123), (123456.0, 2, 120000.0), (-9.876e-9, 2, -9.9e-9), (0.0, 3, 0.0), (2.5, 1, 2.0),
])
def test_significant(value, digits, expected):
    assert dg.significant(value, digits) == expected


def test_significant_keeps_non_finite_values():
    import math
    assert math.isnan(dg.significant(float("nan"))) and dg.significant(float("inf")) == float("inf")
    with pytest.raises(ValueError, match="digits must be an int >= 1, got 0"):
        dg.significant(1.0, 0)
