"""Shared test helpers. tests/fixtures holds the real third-party VOC/SBD/COCO files the tests read
(provenance and licences: tests/fixtures/PROVENANCE.md)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HETSEG_FIXTURES", REPO / "tests" / "fixtures"))
VOC_ROOT = FIXTURES / "voc2012" / "VOCdevkit" / "VOC2012"
FMNIST_DIR = Path(os.environ.get("HETSEG_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"third-party fixtures not found at {FIXTURES}; set HETSEG_FIXTURES")
    return FIXTURES


@pytest.fixture(scope="module")
def one_thread():
    """2 shared cores: with other jobs running, 2 OpenMP threads spin-wait and run small convs ~10x
    slower than 1 thread (measured). Restored afterwards. Use per module:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_scenes(factory, name: str, seed: int, num_train: int, num_val: int) -> Path:
    """A tiny fashion-scenes root (96 px) in a fresh temporary folder, for module-scoped fixtures."""
    from hetseg.data.scenes import generate_scenes

    out = factory.mktemp(name)
    generate_scenes(out, seed=seed, num_train=num_train, num_val=num_val, size=96, fashion_mnist_dir=FMNIST_DIR,
                    workers=1)
    return out


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int = 10) -> Iterator[None]:
    """Raise TimeoutError if the block runs past ``seconds``: a check against reading a pipe, were it to
    break, would otherwise block the whole suite (SIGALRM interrupts a blocking open())."""
    def hung(*_):
        raise TimeoutError(f"blocked for {seconds} s (reading a pipe?)")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
