"""The ``reprogram`` command: one typer app, one module per command group.

Commands are thin: they parse options, call the library and print. ``main`` is the
console-script entry point; it turns every :class:`~reprogram.errors.ReprogramError`
into one line on stderr and its exit code (2), never a traceback.
"""

from reprogram.cli.app import app, main

# Each module registers its commands on `app` when imported.
from reprogram.cli import calibrate, demo, fit, metrics, train  # noqa: E402,F401  isort: skip
from reprogram.cli import explain  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]
