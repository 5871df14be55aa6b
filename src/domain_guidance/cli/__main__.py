"""``python -m domain_guidance.cli`` (what torchrun launches): same as the ``dog`` script."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
