"""Shared fixtures. One thread per test process: CTR steps are many small ops, and on a
shared 2-core machine torch's intra-op threads spin-wait against each other."""
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data samples not found at {SHARED_DATA}")
    return SHARED_DATA
