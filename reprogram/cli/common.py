"""Options and helpers shared by the commands."""

from __future__ import annotations

import typer
from rich.console import Console

from reprogram.models.device import DEVICE_CHOICES

console = Console(highlight=False)

DEVICE_OPTION = typer.Option(
    "auto", "--device", help=f"Where models run: {' | '.join(DEVICE_CHOICES)} (auto = CUDA if present)."
)
SENSITIVE_OPTION = typer.Option(
    ..., "--sensitive", help="Sensitive column(s): --sensitive sex race (several make intersectional groups)."
)
