"""The one rich progress bar of `reprogram`'s long loops (training, trigger fitting, attributions)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


def progress_bar(show: bool) -> Progress:
    """A transient bar: description, bar, done/total, elapsed time and a ``status`` field
    (pass ``status=`` to ``add_task``); nothing is drawn unless ``show``."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    return Progress(*columns, transient=True, disable=not show)
