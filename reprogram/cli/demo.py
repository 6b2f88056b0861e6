"""``reprogram demo``: the whole chain on the built-in example, no arguments needed."""

from __future__ import annotations

from pathlib import Path

import typer

from reprogram.cli.app import app
from reprogram.cli.common import DEVICE_OPTION, console


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("reprogram-demo"), "--out", help="Folder for the demo's artifacts."),
    device: str = DEVICE_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed for the example data and the model."),
) -> None:
    """Run the built-in example end to end: a shortcut-biased model, loaded frozen, audited."""
    from reprogram.demo import run_demo

    run_demo(out, device=device, seed=seed, console=console)
