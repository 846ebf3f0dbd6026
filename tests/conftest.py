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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session: starting Ray costs seconds.

    psrec's own local Ray (`ensure_ray`): at least 8 logical CPUs on a 2-core machine so that
    tests can place several actors with fractional requests; no dashboard; listeners on
    loopback only; shut down at the end of the session.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        from psrec.raysession import ensure_ray

        ensure_ray()  # as psrec starts it: every listener on loopback (tests/test_ray_listeners.py)
    yield ray
    ray.shutdown()
