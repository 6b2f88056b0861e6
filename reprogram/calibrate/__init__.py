"""Group calibration, multicalibration and ONNX export (built by the calibration issue)."""
