"""``python -m tamegrad.cli``: the same as ``python -m tamegrad`` / ``tamegrad``."""

import sys

from tamegrad.cli import main

if __name__ == "__main__":
    sys.exit(main())
