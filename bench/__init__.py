"""pysock's benchmark harness: ``make bench`` or ``python -m bench``.

Each case runs pysock and its baselines (a raw blocking stdlib socket, asyncio
streams, trio where it is installed) interleaved in the same run, against a
peer in a separate process, and reports medians, min-max and the pysock/raw
ratio. A full run rewrites ``docs/performance.md`` and ``docs/performance.png``.
"""

from __future__ import annotations
