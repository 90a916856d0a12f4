"""Issue 5: faults, load, signals, hostile input and security checks (run by make test)."""
