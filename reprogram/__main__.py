"""``python -m reprogram`` (and ``torchrun -m reprogram``): the same as the ``reprogram`` command."""

from reprogram.cli import main

if __name__ == "__main__":
    main()
