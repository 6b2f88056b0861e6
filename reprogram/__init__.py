"""reprogram: make frozen, already-trained models fairer and better calibrated
without changing their weights.

The public API is re-exported here; see the subpackages for the rest.
"""

__version__ = "0.1.0"

from reprogram.errors import (  # noqa: E402
    ArtifactError,
    CheckpointError,
    ColumnNotFoundError,
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
    PickleRefusedError,
    ReprogramError,
    UnsupportedFileError,
)
from reprogram.data import GroupEncoder, load_dataset, read_table, spurious_digits  # noqa: E402
from reprogram.metrics import FairnessReport, expected_calibration_error, fairness_report  # noqa: E402
from reprogram.models import FrozenModel, load_frozen, resolve_device  # noqa: E402

__all__ = [
    "__version__",
    "ArtifactError",
    "CheckpointError",
    "ColumnNotFoundError",
    "FairnessReport",
    "FrozenModel",
    "GroupEncoder",
    "GroupError",
    "InputError",
    "LengthMismatchError",
    "MissingValuesError",
    "PickleRefusedError",
    "ReprogramError",
    "UnsupportedFileError",
    "expected_calibration_error",
    "fairness_report",
    "load_dataset",
    "load_frozen",
    "read_table",
    "resolve_device",
    "spurious_digits",
]
