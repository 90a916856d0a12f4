"""Faults, load, signals, hostile input and security (docs/reliability.md; run by make test)."""
