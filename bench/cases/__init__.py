"""The benchmark cases: one module per family, each exporting ``case_*(cfg) -> list[Row]``."""

from __future__ import annotations
