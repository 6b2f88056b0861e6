"""Options and helpers shared by the commands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from reprogram.models.device import DEVICE_CHOICES

# Rich falls back to 80 columns when output is not a terminal (a pipe, a log file, CI),
# which truncates the side-by-side tables; files get a wider page.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

DEVICE_OPTION = typer.Option(
    "auto", "--device", help=f"Where models run: {' | '.join(DEVICE_CHOICES)} (auto = CUDA if present)."
)
SENSITIVE_OPTION = typer.Option(
    ..., "--sensitive", help="Sensitive column(s): --sensitive sex race (several make intersectional groups)."
)
