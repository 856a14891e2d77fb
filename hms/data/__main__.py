"""Entry point of `python -m hms.data`."""

import sys

from .check import main

sys.exit(main())
