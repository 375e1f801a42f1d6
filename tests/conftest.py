from pathlib import Path

import pytest

REAL_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "real-samples"


@pytest.fixture
def real_samples() -> Path:
    """The licensed real sample files beside the checkout; tests skip when absent."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip("../shared/real-samples is not present")
    return REAL_SAMPLES
