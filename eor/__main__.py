"""`python -m eor` is the same as the `eor` command."""

from eor.cli import main

if __name__ == "__main__":
    main()
