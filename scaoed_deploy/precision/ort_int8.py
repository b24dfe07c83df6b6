"""ONNX Runtime's own INT8 quantization (QDQ, U8 activations, S8 per-channel weights), in bounded memory.

ONNX Runtime's calibrators keep every intermediate tensor of every calibration image until the end:
at K = 5 an image at 160 x 160 is about 2 GB, and an entropy calibration on 30 images grew past 19 GB.
The histogram (entropy) calibrator takes no option to bound that, and MinMax's
``CalibMaxIntermediateOutputs`` drops each full chunk without taking its ranges (ONNX Runtime 1.24:
it clears the outputs before computing them). So both are fed ``CALIB_CHUNK`` images a call: each call
merges into what the calibrator has (the histograms; the running min and max).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .calibration import CalibSample, common_shape


def quantize_onnxruntime(
    src: Path,
    dst: Path,
    calib: list[CalibSample],
    method: str,
    exclude: list[str],
    input_name: str,
    reduce_range: bool = False,
) -> None:
    """``src`` quantized into ``dst`` by ``onnxruntime.quantization.quantize_static``, calibrated on ``calib``
    (``method``: max or entropy) in bounded memory; ``exclude``: nodes kept in float."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method == "entropy":  # ORT's histogram calibrators stack activations: one shape only
        calib = common_shape(calib)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{input_name: c.x} for c in calib])

        def get_next(self):
            return next(self.it, None)

    with _bounded_histogram_calibration():
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax if method == "max" else CalibrationMethod.Entropy,
            extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False},
        )


#: Calibration images whose every intermediate tensor is held at once: ONNX Runtime's calibrators keep every
#: tensor of every image until the end (K = 5 at 160 px is about 2 GB an image); in chunks of one, the peak is
#: one image's tensors plus the histograms or ranges.
CALIB_CHUNK = 1
#: How many images each pass of the last histogram calibration in this process held (for the tests).
HELD_AT_ONCE: list[int] = []


@contextlib.contextmanager
def _bounded_histogram_calibration():
    """Each ONNX Runtime calibrator reads the whole calibration set into memory before it takes ranges or
    histograms from it; fed ``CALIB_CHUNK`` images a call instead, it merges each call into what it has.
    Restored afterwards."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader, HistogramCalibrater, MinMaxCalibrater

    originals = {cls: cls.collect_data for cls in (HistogramCalibrater, MinMaxCalibrater)}
    HELD_AT_ONCE.clear()

    class Chunk(CalibrationDataReader):
        def __init__(self, items):
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    def chunked(original):
        def collect_in_chunks(self, data_reader):
            while True:
                items = []
                while len(items) < CALIB_CHUNK and (item := data_reader.get_next()):
                    items.append(item)
                if not items:
                    break
                HELD_AT_ONCE.append(len(items))
                original(self, Chunk(items))  # holds these images' tensors, merges what they show, frees them

        return collect_in_chunks

    for cls, original in originals.items():
        cls.collect_data = chunked(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.collect_data = original
