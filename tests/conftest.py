import numpy as np
import pytest
import torch

# One intra-op thread: the suite's small networks run fastest that way on 2 cores, and
# bit-identical comparisons do not depend on how work is split between threads.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
