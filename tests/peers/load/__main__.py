"""``python -m tests.peers.load MODE LIFETIME [ARGS]``: run a peer process."""

import sys

from .peer import main

main(sys.argv[1:])
