"""`python -m scclip.runtime segment ...`: segment an image with an exported model, without torch."""
import sys

from .cli import main

sys.exit(main())
