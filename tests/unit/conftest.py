"""Shared fixtures for the pure-torch unit tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add sync overhead (OpenMP spin-waits badly on a busy
    2-core machine). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
