import pytest
import torch
from hypothesis import settings

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Property tests draw their examples deterministically (reproducible CI) and have no per-example
# deadline (a loaded 2-core machine is slow); set HYPOTHESIS_PROFILE=explore to search afresh.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test tensors are small: one intra-op thread avoids OpenMP oversubscription (measured 8–100×
    slower with 2 threads on a loaded 2-core machine). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device test runs on CPU, and on CUDA when one is available."""
    return torch.device(request.param)
