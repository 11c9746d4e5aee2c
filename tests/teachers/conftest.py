"""Teacher tests run single-threaded: on small CPU boxes shared with other test workers, intra-op
threads oversubscribe the cores and make even the tiny networks many times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
