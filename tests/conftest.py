"""Shared test helpers. ../shared/fixtures holds real third-party VOC/SBD/COCO files (read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HETSEG_FIXTURES", REPO.parent / "shared" / "fixtures"))
VOC_ROOT = FIXTURES / "voc2012" / "VOCdevkit" / "VOC2012"
FMNIST_DIR = Path(os.environ.get("HETSEG_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"third-party fixtures not found at {FIXTURES}; set HETSEG_FIXTURES")
    return FIXTURES
