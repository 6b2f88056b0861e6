"""Post-training calibration: maps, group calibration, multicalibration, diagnostics, ONNX.

* maps (``fit(scores, y)``, ``transform``, ``to_module``, ``save``/``load``):
  :class:`PlattMap`, :class:`IsotonicMap`, :class:`TemperatureMap`, :class:`BetaMap`,
  :class:`HistogramMap`;
* :class:`GroupCalibrator`: one map per (intersectional) group, with fallbacks;
* :func:`multicalibrate`: HKRR multicalibration over overlapping groups;
* diagnostics: :func:`calibration_table`, :func:`compare_calibration`,
  :func:`reliability_diagram`;
* :func:`export_calibrator_onnx` and :func:`export_onnx` (model + trigger + calibrator in
  one graph), both verified by onnxruntime when written.
"""

from reprogram.calibrate.artifacts import load_calibrator, save_calibrator
from reprogram.calibrate.diagnostics import (
    calibration_rich_table,
    calibration_summary,
    calibration_table,
    compare_calibration,
    reliability_diagram,
)
from reprogram.calibrate.group import GroupCalibrator
from reprogram.calibrate.maps import MAPS, BetaMap, CalibrationMap, HistogramMap, IsotonicMap, PlattMap, TemperatureMap, make_map
from reprogram.calibrate.multicalibration import Multicalibrator, multicalibrate, multicalibration_error
from reprogram.calibrate.onnx import export_calibrator_onnx, export_onnx

__all__ = [
    "MAPS",
    "BetaMap",
    "CalibrationMap",
    "GroupCalibrator",
    "HistogramMap",
    "IsotonicMap",
    "Multicalibrator",
    "PlattMap",
    "TemperatureMap",
    "calibration_rich_table",
    "calibration_summary",
    "calibration_table",
    "compare_calibration",
    "export_calibrator_onnx",
    "export_onnx",
    "load_calibrator",
    "make_map",
    "multicalibrate",
    "multicalibration_error",
    "reliability_diagram",
    "save_calibrator",
]
