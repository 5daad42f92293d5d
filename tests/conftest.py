from __future__ import annotations

import numpy as np
import pytest


def unit_std_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference, on logits scaled so the reference has unit std."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.std(expected)), 1e-12))


@pytest.fixture(scope="session")
def ort_cpu():
    import onnxruntime as ort

    def session(path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return session
