"""docs/design.md names only what exists: every code name, path and module it shows.

The page is for people changing pysock, so a name in it that the code no longer
has (a renamed method, a deleted flag) sends its reader looking for nothing.
This test reads the page's inline code spans (fenced blocks are left out) and
checks each one that names code.

What counts as a code name
==========================

A span is read as a Python expression (`code_name`):

* a name or a dotted name (``_reading``, ``Connection.close``,
  ``pysock._rawio``, ``sock.recv_into``) is a code name;
* a call counts by its callee: ``read(n)`` is ``read``,
  ``_set_hangup_watch(None)`` is ``_set_hangup_watch``,
  ``makefile('rb').readline()`` is ``makefile.readline``; its arguments are
  an example, not checked;
* an option setting ``name=value`` (``timeout=None``, ``allow_half_open=False``)
  names the option, ``name``;
* anything else is not a code name: literals (``b"\\n"``, ``"on"``, ``0``),
  tuples, operators, and what is not Python at all (shell commands, prose with
  spaces, ``HOST:PORT``, ``pysock-selector``).

A span holding ``/`` is a path in the repository (``pysock/_loop.py``,
``tests/peers/``) and must exist; ``tests/FILE.py::test_name`` (a pytest node
id) must name a test of that file.

Where a code name must exist
============================

Resolved by `Index.problem`, from pysock's sources parsed with `ast` (nothing is
imported from pysock):

* a name that starts with ``test_`` is a test function in tests/;
* a pysock module path, full (``pysock._loop``, ``pysock.cli._main``) or, for a
  private module, short (``_loop.Loop``); what follows must be a name of that
  module, then of that class;
* a pysock class (``Connection._reading``, ``Loop.watch``): what follows must
  be a member of it or of its bases (a method, a class attribute, a
  ``__slots__`` entry, or ``self.NAME = ...`` in its methods);
* a standard-library module (``io.BufferedReader``, ``sys.unraisablehook``) is
  looked up in that module; a name missing from this Python is accepted only
  if pysock itself looks it up with ``getattr``/``hasattr`` (``sys._is_gil_enabled``,
  which Python 3.13 added);
* any other name: each part must be a name pysock defines (a def, a class, a
  parameter, an attribute it assigns, a slot, a module-level name) or, for a
  public name, a builtin or a name of the standard-library modules pysock is
  built on (`STDLIB_VOCABULARY`: ``sendall``, ``SO_ERROR``, ``EPOLLRDHUP``...).
  A private name (``_resolve``) must be pysock's own.

The few names that are not Python at all (a system call, an OpenSSL function)
are listed in `FOREIGN`, each with what it is, and must still be on the page.

The module map (the table under "Module map") must list every module file of
pysock/, each once, and no other. The table under "What keeps a connection
alive" must name exactly the bound methods pysock queues on the loop (the
callback of ``call_soon_threadsafe`` or ``call_at_threadsafe`` given as
``self.method``): each holds its connection until the loop runs it.
"""

from __future__ import annotations

import ast
import bisect
import builtins
import importlib
import importlib.util
import re
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "pysock"
TESTS = ROOT / "tests"

# The names on the page that are not Python names, and what each is.
FOREIGN = {
    "epoll_ctl": "the Linux system call behind select.epoll's register/modify/unregister",
    "epoll_wait": "the Linux system call behind select.epoll.poll",
    "SSL_shutdown": "OpenSSL's function behind ssl.SSLObject.unwrap",
}

# The standard-library objects pysock is built on: their public attribute names
# may appear bare (``sendall``, ``SO_ERROR``, ``EPOLLRDHUP``, ``unwrap``).
STDLIB_VOCABULARY = (
    "socket",
    "socket.socket",
    "select",
    "select.epoll",
    "selectors",
    "selectors.BaseSelector",
    "ssl",
    "ssl.SSLObject",
    "ssl.MemoryBIO",
    "ssl.SSLContext",
    "io",
    "io.BufferedReader",
    "errno",
    "os",
    "sys",
    "time",
    "threading",
    "threading.Thread",
    "weakref",
    "concurrent.futures",
    "concurrent.futures.Future",
    "collections.deque",
    "enum.Enum",
)

_SPAN = re.compile(r"`([^`]+)`")
_OPTION = re.compile(r"([a-z_][a-z0-9_]*)=\S+")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
MODULE_MAP = "Module map"
KEPT_ALIVE = "What keeps a connection alive"


# -- the page ----------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One inline code span of the page: its text and its line (1-based)."""

    text: str
    line: int


def prose(text: str) -> str:
    """The page without its fenced blocks (blank lines instead, so lines keep their numbers)."""
    lines = text.splitlines()
    fence = ""
    for number, line in enumerate(lines):
        match = _FENCE.match(line)
        if not fence and match:
            fence = match.group(1)
        elif fence and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = ""
        elif not fence:
            continue
        lines[number] = ""
    return "\n".join(lines)


def spans(text: str) -> list[Span]:
    """The inline code spans of the page, outside fenced blocks."""
    body = prose(text)
    starts = [0]  # The offset of each line, to number the spans.
    for line in body.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    return [
        Span(" ".join(match.group(1).split()), bisect.bisect_right(starts, match.start()))
        for match in _SPAN.finditer(body)
    ]


def code_name(span: str) -> Optional[str]:
    """The dotted code name a span shows, or None (see the module docstring)."""
    text = span.strip()
    if "/" in text:
        return None  # A path: `paths`.
    option = _OPTION.fullmatch(text)
    if option:
        return option.group(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "\d" in a literal warns: it is no name anyway.
            node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    return _dotted(node)


def _dotted(node: ast.expr) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return None


def paths(span: str) -> Optional[str]:
    """The repository path a span shows (``pysock/_loop.py``, ``tests/x.py::test_y``), if any."""
    text = span.strip()
    if "/" not in text or "://" in text or " " in text or text.startswith("/"):
        return None
    return text


# -- the code ----------------------------------------------------------------------


@dataclass
class ClassInfo:
    members: set[str] = field(default_factory=set)
    bases: list[str] = field(default_factory=list)


@dataclass
class ModuleInfo:
    top_level: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)


@dataclass
class Index:
    """What pysock's sources and tests define, for `problem`."""

    modules: dict[str, ModuleInfo] = field(default_factory=dict)  # "pysock._loop" -> ...
    classes: dict[str, list[ClassInfo]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    looked_up: set[str] = field(default_factory=set)  # "sys._is_gil_enabled": getattr()'d
    tests: dict[str, set[str]] = field(default_factory=dict)  # "tests/test_x.py" -> names
    vocabulary: set[str] = field(default_factory=set)

    def problem(self, dotted: str) -> Optional[str]:
        """Why `dotted` names nothing in the code, or None if it exists."""
        parts = dotted.split(".")
        for count in range(len(parts), 0, -1):
            module = self.module_named(".".join(parts[:count]))
            if module is not None:
                return self._in_module(module, parts[count:], dotted)
        head = parts[0]
        if head.startswith("test_") and len(parts) == 1:
            if any(head in names for names in self.tests.values()):
                return None
            return f"no test named {head} in tests/"
        if head in self.classes:
            return self._in_class(head, parts[1:], dotted)
        if not head.startswith("_") and (hasattr(builtins, head) or _is_stdlib_module(head)):
            return self._in_stdlib(parts, dotted)
        for part in parts:
            if not self._known(part):
                return f"{part!r} is defined nowhere in pysock/"
        return None

    def module_named(self, name: str) -> Optional[str]:
        if name in self.modules:
            return name
        if name.startswith("_"):  # A private module by its short name: _loop.Loop.
            matches = [path for path in self.modules if path.rsplit(".", 1)[-1] == name]
            if len(matches) == 1:
                return matches[0]
        return None

    def _in_module(self, module: str, rest: list[str], dotted: str) -> Optional[str]:
        if not rest:
            return None
        name = rest[0]
        if f"{module}.{name}" in self.modules:
            return self._in_module(f"{module}.{name}", rest[1:], dotted)
        info = self.modules[module]
        if name not in info.top_level:
            return f"{module} has no {name!r}"
        if name in info.classes:
            return self._in_class(name, rest[1:], dotted)
        return self._all_known(rest[1:])

    def _in_class(self, name: str, rest: list[str], dotted: str) -> Optional[str]:
        if not rest:
            return None
        if any(self._has_member(info, rest[0], set()) for info in self.classes[name]):
            return self._all_known(rest[1:])
        return f"class {name} (and its bases) has no {rest[0]!r}"

    def _has_member(self, info: ClassInfo, member: str, seen: set[str]) -> bool:
        if member in info.members:
            return True
        for base in info.bases:
            if base in self.classes and base not in seen:
                seen.add(base)
                if any(self._has_member(other, member, seen) for other in self.classes[base]):
                    return True
            elif base not in self.classes:
                found = _stdlib_object(base.split("."))
                if found is not _MISSING and hasattr(found, member):
                    return True
        return False

    def _in_stdlib(self, parts: list[str], dotted: str) -> Optional[str]:
        if _stdlib_object(parts) is not _MISSING or dotted in self.looked_up:
            return None
        return f"{dotted} is not in the standard library (nor looked up by pysock)"

    def _all_known(self, parts: list[str]) -> Optional[str]:
        for part in parts:
            if not self._known(part):
                return f"{part!r} is defined nowhere in pysock/"
        return None

    def _known(self, part: str) -> bool:
        if part in self.names:
            return True
        return not part.startswith("_") and (part in self.vocabulary or hasattr(builtins, part))


_MISSING = object()


def _is_stdlib_module(name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)  # 3.10+
    if names is not None:
        return name in names
    if name in sys.builtin_module_names:
        return True
    try:
        spec = importlib.util.find_spec(name)  # Finds it without running it.
    except (ImportError, ValueError):
        return False
    origin = spec.origin if spec is not None else None
    if origin is None:
        return False
    if origin in ("built-in", "frozen"):
        return True
    return origin.startswith(sysconfig.get_paths()["stdlib"]) and "site-packages" not in origin


def _stdlib_object(parts: list[str]) -> object:
    """The standard-library object `parts` names (``io.BufferedReader``), or `_MISSING`."""
    if hasattr(builtins, parts[0]):
        found: object = getattr(builtins, parts[0])
        rest = parts[1:]
    else:
        found, rest = _MISSING, parts
        for count in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:count]))
            except ImportError:
                continue
            rest = parts[count:]
            break
    for part in rest:
        if found is _MISSING:
            break
        found = getattr(found, part, _MISSING)
    return found


def build_index() -> Index:
    index = Index()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        index.names.update(parts)
        index.modules[module] = _read_module(ast.parse(path.read_text()), index)
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        index.tests[path.relative_to(ROOT).as_posix()] = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
    for dotted in STDLIB_VOCABULARY:
        found = _stdlib_object(dotted.split("."))
        if found is not _MISSING:
            index.vocabulary.update(name for name in dir(found) if not name.startswith("_"))
    return index


def _read_module(tree: ast.Module, index: Index) -> ModuleInfo:
    info = ModuleInfo()
    imported = _imported(tree)
    for statement in tree.body:
        bound = set(_bound_names(statement))
        info.top_level.update(bound)
        index.names.update(bound - imported)
        if isinstance(statement, ast.ClassDef):
            info.classes.add(statement.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            read = _read_class(node)
            index.classes.setdefault(node.name, []).append(read)
            index.names.add(node.name)
            index.names.update(read.members)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            index.names.add(node.name)
        elif isinstance(node, ast.arg):
            index.names.add(node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            index.names.add(node.attr)  # self.x = ..., connection._via = ...
        elif isinstance(node, ast.Call) and _dotted(node.func) in ("getattr", "hasattr"):
            obj = _dotted(node.args[0]) if node.args else None
            name = node.args[1] if len(node.args) > 1 else None
            if obj and isinstance(name, ast.Constant) and isinstance(name.value, str):
                index.looked_up.add(f"{obj}.{name.value}")
    return info


def _bound_names(node: ast.stmt) -> Iterator[str]:
    """Names a module-level statement binds (imports too: ``pysock._connection.Deadline``)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            yield (alias.asname or alias.name).split(".")[0]
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        for target in _targets(node):
            yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(node, (ast.If, ast.Try)):
        for child in [*node.body, *node.orelse, *getattr(node, "finalbody", [])]:
            yield from _bound_names(child)
        for handler in getattr(node, "handlers", []):
            for child in handler.body:
                yield from _bound_names(child)


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _targets(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return [
            element
            for target in node.targets
            for element in (target.elts if isinstance(target, ast.Tuple) else [target])
        ]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def _read_class(node: ast.ClassDef) -> ClassInfo:
    info = ClassInfo(bases=[base for base in map(_dotted, node.bases) if base])
    for statement in _class_body(node.body):
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info.members.add(statement.name)
            info.members.update(_self_attributes(statement))
        for target in _targets(statement):
            if isinstance(target, ast.Name):
                info.members.add(target.id)
                if target.id == "__slots__":
                    info.members.update(_strings(statement))
    return info


def _class_body(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A class body's statements, also inside ``if TYPE_CHECKING:`` and the like."""
    for statement in body:
        if isinstance(statement, ast.If):
            yield from _class_body(statement.body)
            yield from _class_body(statement.orelse)
        else:
            yield statement


def _self_attributes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[str]:
    if not function.args.args:
        return
    me = function.args.args[0].arg
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == me
        ):
            yield node.attr


def _strings(node: ast.stmt) -> Iterator[str]:
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child.value


@pytest.fixture(scope="module")
def index() -> Index:
    return build_index()


@pytest.fixture(scope="module")
def page() -> list[Span]:
    return spans(PAGE.read_text())


# -- the tests ---------------------------------------------------------------------


def test_every_code_name_exists(index: Index, page: list[Span]) -> None:
    problems = [
        f"design.md:{span.line}: `{span.text}`: {problem}"
        for span in page
        for name in [code_name(span.text)]
        if name is not None and name not in FOREIGN
        for problem in [index.problem(name)]
        if problem is not None
    ]
    assert not problems, "names the code does not have:\n" + "\n".join(problems)


def test_every_path_exists(index: Index, page: list[Span]) -> None:
    problems = []
    for span in page:
        path = paths(span.text)
        if path is None:
            continue
        file, _, test = path.partition("::")
        if not (ROOT / file).exists():
            problems.append(f"design.md:{span.line}: `{span.text}`: no such path")
        elif test and test not in index.tests.get(file, set()):
            problems.append(f"design.md:{span.line}: `{span.text}`: no test {test} in {file}")
    assert not problems, "\n".join(problems)


def table_column(text: str, heading: str, column: int) -> list[str]:
    """The code spans in one column (0 is the first) of the tables under `heading`."""
    found = []
    section = ""
    for line in prose(text).splitlines():
        match = _HEADING.match(line)
        if match:
            section = match.group(2)
        elif section == heading and line.startswith("|"):
            cells = line.split("|")[1:]
            found += _SPAN.findall(cells[column]) if column < len(cells) else []
    return found


def queued_bound_methods() -> set[str]:
    """The methods pysock queues on the loop as ``self.method``, outside the loop itself."""
    methods = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_loop.py":
            continue  # The loop's own commands hold the loop, not a connection.
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            position = {"call_soon_threadsafe": 0, "call_at_threadsafe": 1}.get(node.func.attr)
            if position is None or len(node.args) <= position:
                continue
            callback = node.args[position]
            if isinstance(callback, ast.Attribute) and _dotted(callback.value) == "self":
                methods.add(callback.attr)
    return methods


def test_the_module_map_lists_every_module() -> None:
    listed = table_column(PAGE.read_text(), MODULE_MAP, 1)
    modules = sorted(path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py"))
    assert sorted(set(listed)) == sorted(listed), "a module is listed twice"
    assert sorted(listed) == modules, (
        f"missing from the map: {sorted(set(modules) - set(listed))}; "
        f"not modules: {sorted(set(listed) - set(modules))}"
    )


def test_the_commands_that_keep_a_connection_alive_are_all_named() -> None:
    named = table_column(PAGE.read_text(), KEPT_ALIVE, 0)
    queued = queued_bound_methods()
    assert queued, "no bound method is queued on the loop: the search is broken"
    assert sorted(named) == sorted(queued)


def test_foreign_names_are_still_used(page: list[Span]) -> None:
    used = {code_name(span.text) for span in page}
    assert set(FOREIGN) <= used, f"no longer on the page: {sorted(set(FOREIGN) - used)}"


@pytest.mark.parametrize(
    ("span", "name"),
    [
        ("_reading", "_reading"),
        ("Connection.close", "Connection.close"),
        ("pysock._rawio", "pysock._rawio"),
        ("read(n)", "read"),
        ("_set_hangup_watch(HANGUP_WITH_EOF, defer=True)", "_set_hangup_watch"),
        ("makefile('rb').readline()", "makefile.readline"),
        ("timeout=None", "timeout"),
        ('secure_transport="on"', "secure_transport"),
        ('b"\\n"', None),
        ('"on"', None),
        ("(callback, args)", None),
        ("python -m pysock", None),
        ("PYTHON_GIL=1 python -c 'import pysock'", None),
        ("HOST:PORT", None),
        ("pysock-selector", None),
        ("pysock/_loop.py", None),
    ],
)
def test_what_counts_as_a_code_name(span: str, name: Optional[str]) -> None:
    assert code_name(span) == name


@pytest.mark.parametrize(
    "name",
    [
        "_reading",
        "Connection._reading",
        "Connection.start",  # from the Opening mixin
        "TlsConnection._reading",  # from Connection
        "SocketReader.readable",
        "_loop.Loop",
        "pysock._loop.Loop.call_soon_threadsafe",
        "pysock._connection.Deadline",  # imported there
        "pysock.cli._main",
        "Event.UPGRADE",
        "sock.sendall",
        "io.BufferedReader",
        "SO_ERROR",
        "test_close_from_a_done_callback",
        "sys._is_gil_enabled",  # Python 3.13+; pysock looks it up with getattr
    ],
)
def test_names_the_code_has_pass(index: Index, name: str) -> None:
    assert index.problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "_recheck_in_loop",
        "_resolve",
        "Loop._epoll",
        "Connection._no_such_flag",
        "pysock._no_such_module",
        "_loop.NoSuchClass",
        "io.NoSuchReader",
        "test_no_such_test",
    ],
)
def test_names_the_code_lacks_fail(index: Index, name: str) -> None:
    assert index.problem(name) is not None
