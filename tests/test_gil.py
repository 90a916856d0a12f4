"""A free-threaded build running without the GIL is refused at import, with what to do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pysock._gil import require_gil

TIMEOUT = 30


def test_require_gil_refuses_a_build_without_it() -> None:
    with pytest.raises(ImportError, match="PYTHON_GIL=1"):
        require_gil(lambda: False)
    require_gil(lambda: True)


@pytest.mark.parametrize(("gil", "imports"), [(False, False), (True, True)])
def test_import_pysock_follows_the_gil(gil: bool, imports: bool) -> None:
    """The check runs on `import pysock` itself, before any other pysock module."""
    code = (
        f"import sys; sys._is_gil_enabled = lambda: {gil}\n"
        "try:\n"
        "    import pysock\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
        "    print(sorted(m for m in sys.modules if m.startswith('pysock.')))\n"
        "else:\n"
        "    print('imported')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert run.returncode == 0, run.stderr
    if imports:
        assert run.stdout.strip() == "imported"
    else:
        assert run.stdout.startswith("refused: pysock needs the GIL")
        assert "PYTHON_GIL=1" in run.stdout
        assert run.stdout.splitlines()[-1] == "[]"  # No other pysock module got loaded.
