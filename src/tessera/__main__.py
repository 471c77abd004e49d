"""`python -m tessera ...` is the same as the `tessera` console script."""
import sys

from .cli import main

sys.exit(main())
