"""The errors `reprogram` raises for bad input.

Library code raises these; the CLI turns any of them into one line on stderr and exit
code ``exit_code`` (2 for usage and input errors). Every message names what is wrong and,
where it helps, what would be right (the columns that do exist, the flag that allows it).
They also subclass the built-in exception a Python caller would expect (``ValueError``,
``KeyError``...), so ``except ValueError`` keeps working around our calls.
"""

from __future__ import annotations

__all__ = [
    "ReprogramError",
    "InputError",
    "ColumnNotFoundError",
    "MissingValuesError",
    "GroupError",
    "LengthMismatchError",
    "UnsupportedFileError",
    "CheckpointError",
    "PickleRefusedError",
    "ArtifactError",
    "ExportError",
    "NotFittedError",
    "TrainingDiverged",
    "first_line",
]


class ReprogramError(Exception):
    """Base of every error that `reprogram` raises on purpose."""

    exit_code = 2

    # One line whatever the caller passed in. Subclasses mixing in KeyError find this
    # __str__ first in their MRO, so their message is not quoted like a KeyError's.
    def __str__(self) -> str:
        return " ".join(BaseException.__str__(self).split())


class InputError(ReprogramError, ValueError):
    """The data given does not fit what was asked of it."""


class ColumnNotFoundError(InputError, KeyError):
    """A named column is not in the table."""

    def __init__(self, column: str, present, *, role: str = "column", source: str | None = None):
        self.column = column
        self.present = list(present)
        shown = ", ".join(map(str, self.present[:30]))
        if len(self.present) > 30:
            shown += f", ... ({len(self.present)} in all)"
        where = f" in {source}" if source else ""
        super().__init__(f"{role} {column!r} not found{where}; columns present: {shown}")


class MissingValuesError(InputError):
    """NaN / missing values where none are allowed (labels, groups, scores)."""


class GroupError(InputError):
    """Too few groups, or a group too small to say anything about."""


class LengthMismatchError(InputError):
    """Arrays that must be aligned row for row have different lengths."""


class UnsupportedFileError(InputError):
    """A file whose type we cannot read."""


class CheckpointError(ReprogramError):
    """A model checkpoint that cannot be loaded (corrupt, truncated, wrong kind)."""


class PickleRefusedError(CheckpointError):
    """A checkpoint that can only be read by unpickling arbitrary Python objects."""


class ArtifactError(ReprogramError):
    """A reprogram artifact folder that is missing, incomplete or of another version."""


class ExportError(ReprogramError):
    """An ONNX export failed, or its output disagreed with PyTorch/numpy when checked."""


class NotFittedError(ReprogramError, AttributeError):
    """A fitted object was used before ``fit``."""


class TrainingDiverged(ReprogramError):
    """A training or trigger-fitting loss became NaN or infinite."""


def first_line(e: BaseException) -> str:
    """The first line of a third-party exception's message, for wrapping it in one of ours.

    Cut to its first sentence when long: torch appends paragraphs of advice.
    """
    for line in str(e).splitlines():
        line = line.strip()
        if not line:
            continue
        if len(line) > 200 and ". " in line:
            line = line.split(". ", 1)[0] + "."
        return line if len(line) <= 300 else line[:297] + "..."
    return type(e).__name__
