import pytest
import torch

import deepgrad as dg


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, in float64-friendly deterministic mode."""
    dg.seed_everything(0)
    yield
    torch.use_deterministic_algorithms(False)
