"""`python -m mclner ...` (also what `torchrun -m mclner train ...` runs)."""

import sys

from mclner.cli import main

sys.exit(main())
