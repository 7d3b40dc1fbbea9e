"""Run one fuzz target under atheris: ``python fuzz/run.py TARGET [libFuzzer args]``.

See fuzz/README.md; ``make fuzz`` and ``scripts/fuzz-smoke.sh`` call this.
"""

import sys

from _harness import main

if __name__ == "__main__":
    main(sys.argv)
