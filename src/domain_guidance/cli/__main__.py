"""``python -m domain_guidance.cli`` (what torchrun launches): same as the ``dog`` script."""
import sys

from . import main

sys.exit(main())
