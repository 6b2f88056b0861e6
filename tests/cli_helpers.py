"""Running the ``reprogram`` command in-process, as the CLI tests do."""

from reprogram.cli import main


def invoke(args, capsys):
    """The real console entry point in-process: exit code and stdout + stderr."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err
