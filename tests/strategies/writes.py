"""Arguments for write(): every kind of bytes-like object, and what is not one."""

from __future__ import annotations

import array
import ctypes
from dataclasses import dataclass
from typing import Any, Optional

from hypothesis import strategies as st

# -- write arguments --------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteArg:
    """An argument for write(), built fresh each run; `data` is what must reach the peer."""

    kind: str
    raw: bytes

    def build(self) -> Any:
        raw = self.raw
        if self.kind == "bytes":
            return raw
        if self.kind == "bytearray":
            return bytearray(raw)
        if self.kind == "memoryview":
            return memoryview(raw)
        if self.kind == "slice":
            return memoryview(raw)[1:-1]
        if self.kind == "matrix" and len(raw) >= 2:  # two dimensions, C-contiguous
            return memoryview(bytearray(raw)).cast("B", (len(raw) // 2, 2))
        if self.kind == "matrix":
            return memoryview(bytearray(raw))
        if self.kind == "array":
            return array.array("h", raw[: len(raw) // 2 * 2])
        if self.kind == "ctypes":
            return (ctypes.c_char * len(raw)).from_buffer_copy(raw)
        if self.kind == "bytes_subclass":
            return _Bytes(raw)
        if self.kind == "str":
            return raw.decode("latin-1")
        if self.kind == "int":
            return len(raw)
        if self.kind == "list":
            return list(raw)
        if self.kind == "iterator":
            return iter(raw)
        if self.kind == "float":
            return float(len(raw))
        if self.kind == "object":
            return object()
        return None

    @property
    def data(self) -> Optional[bytes]:
        """The bytes the peer must receive, or None for a TypeError."""
        built = self.build()
        try:
            with memoryview(built) as view:
                return view.tobytes()
        except TypeError:
            return None


class _Bytes(bytes):
    pass


def write_args() -> st.SearchStrategy[WriteArg]:
    # A strided (non-contiguous) memoryview is left out: pinned by
    # test_a_strided_memoryview_is_a_type_error_...
    kinds = ["bytes", "bytearray", "memoryview", "slice", "matrix", "array", "ctypes"]
    kinds += ["bytes_subclass", "str", "int", "list", "iterator", "float", "object", "none"]
    raw = st.one_of(
        st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]),
        st.integers(0, 70_000).map(lambda n: bytes(range(256)) * (n // 256)),
    )
    return st.builds(WriteArg, st.sampled_from(kinds), raw)
