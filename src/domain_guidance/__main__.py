"""``python -m domain_guidance``: same as the ``dog`` script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
