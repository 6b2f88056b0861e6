"""Group statistics, fairness and calibration metrics, and the FairnessReport."""

from reprogram.metrics.calibration import expected_calibration_error
from reprogram.metrics.counts import GroupCounts, count_groups
from reprogram.metrics.report import FairnessReport, dataset_report, fairness_report
from reprogram.metrics.streaming import (
    ReportAccumulator,
    dataset_report_from_batches,
    fairness_report_from_chunks,
    streaming_report,
)

__all__ = [
    "FairnessReport",
    "GroupCounts",
    "ReportAccumulator",
    "count_groups",
    "dataset_report",
    "dataset_report_from_batches",
    "expected_calibration_error",
    "fairness_report",
    "fairness_report_from_chunks",
    "streaming_report",
]
