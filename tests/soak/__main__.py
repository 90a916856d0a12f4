"""``python -m tests.soak`` (``make soak``): see the package's docstring."""

import sys

from .run import main

sys.exit(main())
