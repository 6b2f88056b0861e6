"""Group statistics, fairness and calibration metrics, and the FairnessReport."""

from reprogram.metrics.calibration import expected_calibration_error
from reprogram.metrics.counts import GroupCounts, count_groups
from reprogram.metrics.report import FairnessReport, dataset_report, fairness_report

__all__ = [
    "FairnessReport",
    "GroupCounts",
    "count_groups",
    "dataset_report",
    "expected_calibration_error",
    "fairness_report",
]
