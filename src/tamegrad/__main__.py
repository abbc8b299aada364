"""``python -m tamegrad``: the command-line interface (see :mod:`tamegrad.cli`)."""

import sys

from tamegrad.cli import main

if __name__ == "__main__":
    sys.exit(main())
