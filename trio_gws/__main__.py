"""``python -m trio_gws``: see ``trio_gws._cli``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
