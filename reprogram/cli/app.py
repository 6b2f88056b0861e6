"""The typer app, the global options and the error boundary."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

import reprogram
from reprogram.errors import ReprogramError

app = typer.Typer(
    name="reprogram",
    help="Make frozen, already-trained models fairer and better calibrated without changing their weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options that take one or more values: `--sensitive sex race` is read as
# `--sensitive sex --sensitive race` (click has no "one or more values" option).
MULTI_VALUE_OPTIONS = {"--sensitive", "--score", "--features", "--values", "--lambdas", "--keep"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reprogram {reprogram.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Make frozen, already-trained models fairer and better calibrated without changing their weights."""


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """Rewrite ``--opt a b c`` as ``--opt a --opt b --opt c`` for MULTI_VALUE_OPTIONS."""
    out: list[str] = []
    flag, n_values = None, 0
    for tok in argv:
        if tok.startswith("-") and tok != "-":
            flag = tok if tok in MULTI_VALUE_OPTIONS else None  # "--opt=a" stays as it is
            n_values = 0
            out.append(tok)
        elif flag is not None:
            if n_values:
                out.append(flag)
            out.append(tok)
            n_values += 1
        else:
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # a library warning (unknown groups, a trigger used on another model...) is news
        # for the user, not a bug report: one line, without Python's file and line
        err.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}")

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            app(args=args, prog_name="reprogram", standalone_mode=True)
    except ReprogramError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
