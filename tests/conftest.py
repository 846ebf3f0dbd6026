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

    8 logical CPUs on a 2-core machine so that tests can place several actors with
    fractional requests; no dashboard; shut down at the end of the session.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        from psrec.raysession import LOCAL_OBJECT_STORE_BYTES

        # address="local": a fresh Ray even when a `ray start` cluster (a psrec testbed) runs here
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
