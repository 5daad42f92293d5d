"""An int8 form of a model for the profiling tests, by onnxruntime's own quantize_static (QDQ, per channel).

The calibration inputs are random: these tests compare times layer by layer, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def quantize(fp32: Path, int8: Path, shape: tuple[int, ...], input_name: str = "input", samples: int = 2) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Random(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.feeds = iter([{input_name: rng.standard_normal(shape).astype(np.float32)} for _ in range(samples)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(fp32),
        str(int8),
        Random(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return int8
