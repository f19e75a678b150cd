import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Every test starts from the same global torch RNG state: a test that draws without a
    generator sees the same numbers whatever ran before it."""
    torch.manual_seed(0)
