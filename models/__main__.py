"""`python -m models [--counts]`: the same as `python -m models.registry`."""
import sys

from models.registry import main

sys.exit(main())
