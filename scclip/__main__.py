"""`python -m scclip ...`: the `scclip` command."""
import sys

from .cli import main

sys.exit(main())
