import os

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh random generator per test; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("HANDSSCA_TEST_SEED", 0)) or int.from_bytes(os.urandom(4), "little")
    print(f"{request.node.name}: HANDSSCA_TEST_SEED={seed}")
    return np.random.default_rng(seed)
