"""Run every ```python block of README.md and docs/*.md, so the docs never rot.

Each runnable block is one test, ``test_block_runs[docs/guide.md:123]`` (the
line of its first line of code), run as the page tells the reader to run it:
saved as a file and started with ``python example.py`` in a fresh
interpreter, with the working directory holding the page's helper modules.

The conventions, in the markdown
=================================

``python`` blocks are run; every other language (``sh``, ``text``, ``js``,
``mermaid``, no language) is only shown. A ``python`` block is one of:

* **A program** (the usual case): a complete example the reader can copy
  into a file and run. It may import the helper modules below and talk to
  the local servers they start.
* **A helper module**: its first line is ``# NAME.py: what it is``, as in
  ``# tlsdemo.py: local TLS servers for the examples of docs/tls.md.`` The
  page asks the reader to save it under that name. The test writes every
  helper module of every page into the working directory before the
  programs run; it is not run by itself, and some program must import it.
* **A background server**: a helper module preceded by the line
  ``<!-- background server -->`` is a server the reader starts in another
  terminal (porting.md's ``echo_server.py``). The test starts it with
  ``python NAME.py`` once for the session and stops it at the end.
* **Not run**: a block preceded by the line ``<!-- not run: REASON -->``.
  Only for what cannot run here: a block that needs the internet
  (example.com, gopher.floodgap.com) or a real third-party server. Such
  blocks are still compiled, so their syntax cannot rot.
  `test_not_run_markers_are_rare_and_justified` checks that each has a
  reason, that they stay rare, and that a block said to need the internet
  names a host outside this machine.

A marker is an HTML comment (hidden when the page is rendered, visible in
its source) on the line right above the opening fence; any other comment
there is an error, so a misspelt marker cannot hide a block.

Two more conventions keep the pages natural and copy-pasteable:

* **Fixed ports.** porting.md and design.md talk to "an echo server on
  127.0.0.1:7007", the page's own ``echo_server.py``. A shared machine
  cannot promise port 7007, so the test picks a free port and substitutes
  it for ``7007`` in every block (`FIXED_PORTS`). Every other example
  listens on port 0 and passes the real port along.
* **Environment.** A program whose first line is ``# Run as: VAR=value
  python NAME.py`` (tls.md's ``SSL_CERT_FILE=ca.pem`` example) gets those
  variables in its environment.

How a program is judged
=======================

A small runner (`RUNNER`) runs the block with ``runpy`` under
``warnings.simplefilter("error")`` (a block may relax that itself, as
porting.md's ResourceWarning example does) and fails it on an exception, on
an exception in any thread (``threading.excepthook``), on an unraisable
exception (an unclosed pysock socket's ``ResourceWarning`` turned into an
error in its finalizer), on a traceback on stderr (a forked child's), and on
a hang (``faulthandler`` dumps every thread's stack after `BLOCK_TIMEOUT`
seconds; a forgotten non-daemon thread hangs the interpreter's exit). The
block file is padded with blank lines so that the line numbers of a
traceback are the markdown page's own.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

import pysock
from pysock import errors as pysock_errors

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Documented fixed ports, replaced by a free port: {port: who listens there}.
FIXED_PORTS = {7007: "echo_server.py of docs/porting.md"}
# Seconds one block may take; the slowest (8 MiB over TLS, with a thread) takes 1-2 s.
BLOCK_TIMEOUT = 30.0
# Programs run at once: the waits of one (timeouts, peers) overlap another's work.
PARALLEL = 2
# At most this share of the python blocks may be marked "not run".
MAX_NOT_RUN_SHARE = 0.15
# The pages index.md must link to.
LINKED_FROM_INDEX = (
    "guide.md",
    "api.md",
    "errors.md",
    "tls.md",
    "cli.md",
    "porting.md",
    "design.md",
    "performance.md",
    "beyond.md",
    "streaming.md",
)

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
_HELPER = re.compile(r"^# (?P<name>[A-Za-z_]\w*)\.py: ")
_RUN_AS = re.compile(r"^# Run as: (?P<env>(?:\w+=\S+ )+)python \S+\.py\s*$")
_NOT_RUN = re.compile(r"^not run: (?P<reason>.+)$")
_BACKGROUND = "background server"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # relative to ROOT, e.g. "docs/tls.md"
    line: int  # the markdown line of the block's first line of code (1-based)
    language: str
    source: str
    marker: Optional[str]  # the HTML comment right above the fence, without <!-- -->

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language == "python"

    @property
    def not_run_reason(self) -> Optional[str]:
        match = _NOT_RUN.match(self.marker or "")
        return match.group("reason").strip() if match else None

    @property
    def is_background(self) -> bool:
        return self.marker == _BACKGROUND

    @property
    def helper_name(self) -> Optional[str]:
        """The module name of a helper module (``tlsdemo``), else None."""
        match = _HELPER.match(self.source)
        return match.group("name") if match else None

    @property
    def env(self) -> dict[str, str]:
        match = _RUN_AS.match(self.source.partition("\n")[0])
        if match is None:
            return {}
        return dict(item.split("=", 1) for item in match.group("env").split())

    def padded_source(self, ports: dict[int, int]) -> str:
        """The code, with fixed ports replaced and the page's line numbers."""
        source = self.source
        for fixed, real in ports.items():
            source = re.sub(rf"\b{fixed}\b", str(real), source)
        return "\n" * (self.line - 1) + source


def parse_page(path: Path) -> list[Block]:
    """Every fenced block of a markdown page, with the marker above each."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    page = str(path.relative_to(ROOT))
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening.group("indent")), opening.group("fence")
        above = _COMMENT.match(lines[index - 1]) if index > 0 else None
        body: list[str] = []
        index += 1
        while index < len(lines) and not _closes(lines[index], fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        assert index < len(lines), f"{page}: the block opened at line {index} is never closed"
        start = index - len(body) + 1
        source = "\n".join(body) + "\n"
        marker = above.group("text") if above else None
        blocks.append(Block(page, start, opening.group("info").lower(), source, marker))
        index += 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0])


ALL_BLOCKS = [block for page in PAGES for block in parse_page(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.is_python]
PROGRAMS = [
    block
    for block in PYTHON_BLOCKS
    if block.not_run_reason is None and block.helper_name is None and not block.is_background
]
HELPERS = [block for block in PYTHON_BLOCKS if block.helper_name and block.not_run_reason is None]

# The runner: one fresh interpreter per block (argv: block file, timeout in seconds).
RUNNER = r"""
import faulthandler, gc, os, runpy, sys, threading, traceback, warnings

faulthandler.dump_traceback_later(float(sys.argv[2]), exit=True)
problems = []


def unraisable(info):
    text = "".join(traceback.format_exception(info.exc_type, info.exc_value, info.exc_traceback))
    problems.append(f"unraisable exception in {info.object!r}:\n{text}")


def thread_failed(args):
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    problems.append(f"exception in thread {args.thread.name}:\n{text}")


sys.unraisablehook = unraisable
threading.excepthook = thread_failed
warnings.simplefilter("error")
# Python 3.12+ warns about fork() in a process with threads; the fork examples mean it.
warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
parent = os.getpid()
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
except BaseException:
    if os.getpid() != parent:
        traceback.print_exc()
        os._exit(70)
    raise
if os.getpid() != parent:
    print("Traceback (most recent call last): a forked child did not exit", file=sys.stderr)
    os._exit(70)
gc.collect()
loop = sys.modules.get("pysock._loop")
if loop is not None and getattr(loop, "_loop", None) is not None:
    for _ in range(2):  # let the selector thread run what the finalizers queued
        done = threading.Event()
        loop.get_loop().call_soon_threadsafe(done.set)
        done.wait(5)
    gc.collect()
if problems:
    sys.stderr.write("\n".join(problems))
    sys.exit(3)
"""


# -- the session's directory, background servers, and the programs' runs ------------


@pytest.fixture(scope="session")
def ports() -> dict[int, int]:
    """A free port for each documented fixed port."""
    chosen: dict[int, int] = {}
    for fixed in FIXED_PORTS:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            chosen[fixed] = probe.getsockname()[1]
    return chosen


@pytest.fixture(scope="session")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ports: dict[int, int]
) -> Iterator[Runs]:
    """The background servers, running, and the runs of the selected programs."""
    directory = tmp_path_factory.mktemp("docs")
    selected: list[Block] = []  # the blocks this session runs, in order (``-k`` may filter)
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        block = callspec.params.get("block") if callspec is not None else None
        if isinstance(block, Block):
            selected.append(block)
    servers: list[subprocess.Popen[bytes]] = []
    started = Runs(directory, ports, selected)
    try:
        for block in HELPERS:
            if block.is_background:
                servers.append(_start_background(directory, block, ports))
        yield started
    finally:
        started.close()
        for server in servers:
            server.terminate()
            server.wait(BLOCK_TIMEOUT)


def _start_background(
    directory: Path, block: Block, ports: dict[int, int]
) -> subprocess.Popen[bytes]:
    fixed = [port for port in FIXED_PORTS if re.search(rf"\b{port}\b", block.source)]
    assert len(fixed) == 1, f"{block.id}: a background server listens on one fixed port"
    path = directory / f"{block.helper_name}.py"
    path.write_text(block.padded_source(ports))
    server = subprocess.Popen(
        [sys.executable, path.name],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", ports[fixed[0]]), timeout=1):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                raise
            time.sleep(0.05)


class Runs:
    """Runs each program in its own directory, `PARALLEL` at a time, in test order.

    The test of a block starts the next ones too and then waits for its own, so
    the waits of one example (its timeouts, its peers) overlap another's work.
    Output goes to files, never pipes: the test process keeps no descriptor of
    a run (the `no_leaks` fixture counts them).
    """

    def __init__(self, directory: Path, ports: dict[int, int], order: list[Block]) -> None:
        self.directory = directory
        self.ports = ports
        self.order = order
        self.started: dict[Block, tuple[subprocess.Popen[bytes], Path, float]] = {}

    def start(self, block: Block) -> None:
        if block in self.started:
            return
        name = block.page.replace("/", "-").replace(".", "-") + f"-L{block.line}"
        workdir = self.directory / name  # a reader's directory: the helpers, the example
        workdir.mkdir()
        for helper in HELPERS:
            (workdir / f"{helper.helper_name}.py").write_text(helper.padded_source(self.ports))
        path = workdir / "example.py"
        path.write_text(block.padded_source(self.ports))
        with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(path), str(BLOCK_TIMEOUT)],
                cwd=workdir,
                env={**_clean_environ(), **block.env},
                stdout=out,
                stderr=err,
            )
        self.started[block] = (process, workdir, time.monotonic() + BLOCK_TIMEOUT + 10)

    def result(self, block: Block) -> tuple[Optional[int], str, str]:
        """Run `block` (and start the next ones); its exit status (None: hung) and output."""
        index = self.order.index(block) if block in self.order else len(self.order)
        self.start(block)
        for ahead in self.order[index + 1 : index + PARALLEL]:
            self.start(ahead)
        process, workdir, deadline = self.started.pop(block)
        try:
            status: Optional[int] = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            status = None
        stdout = (workdir / "stdout").read_text(errors="replace")
        return status, stdout, (workdir / "stderr").read_text(errors="replace")

    def close(self) -> None:
        for process, _, _ in self.started.values():
            process.kill()
            process.wait()


@pytest.mark.parametrize("block", PROGRAMS, ids=[block.id for block in PROGRAMS])
def test_block_runs(block: Block, runs: Runs) -> None:
    status, stdout, stderr = runs.result(block)
    if status is None:
        pytest.fail(f"{block.id} hung\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    if status != 0 or "Traceback (most recent call last)" in stderr:
        pytest.fail(
            f"{block.id} failed (exit status {status})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        )


def _clean_environ() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)  # this working tree's pysock
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- the markers and the pages' structure -----------------------------------------------


def test_every_python_block_compiles() -> None:
    for block in PYTHON_BLOCKS:
        ast.parse(block.padded_source({}), filename=block.page)


def test_markers_are_known_and_stand_above_python_blocks() -> None:
    for block in ALL_BLOCKS:
        if block.marker is None:
            continue
        known = block.not_run_reason is not None or block.is_background
        assert known, f"{block.id}: unknown marker <!-- {block.marker} --> above a block"
        assert block.is_python, f"{block.id}: a marker above a {block.language!r} block"
        if block.is_background:
            assert block.helper_name, f"{block.id}: a background server starts '# NAME.py: '"


def test_not_run_markers_are_rare_and_justified() -> None:
    skipped = [block for block in PYTHON_BLOCKS if block.not_run_reason is not None]
    for block in skipped:
        reason = block.not_run_reason or ""
        assert len(reason.split()) >= 3, f"{block.id}: say why it is not run ({reason!r})"
        if "internet" in reason:
            hosts = [
                host
                for host in re.findall(r"\b(?:[a-z0-9-]+\.)+[a-z]{2,}\b", block.source)
                if not host.endswith(".py")
            ]
            assert hosts, f"{block.id}: said to need the internet but names no remote host"
    share = len(skipped) / len(PYTHON_BLOCKS)
    listing = "\n".join(f"{block.id}: {block.not_run_reason}" for block in skipped)
    assert share <= MAX_NOT_RUN_SHARE, f"too many blocks are not run:\n{listing}"


def test_every_helper_module_is_used() -> None:
    names = [block.helper_name for block in HELPERS]
    assert len(names) == len(set(names)), f"two helper modules share a name: {names}"
    for block in HELPERS:
        if block.is_background:
            continue
        pattern = re.compile(rf"^\s*(?:from|import) {block.helper_name}\b", re.MULTILINE)
        users = [program.id for program in PROGRAMS if pattern.search(program.source)]
        assert users, f"{block.id}: no example imports {block.helper_name}"


def test_index_links_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in LINKED_FROM_INDEX:
        assert f"]({page}" in index, f"docs/index.md does not link to {page}"


def test_relative_links_resolve() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            assert linked.exists(), f"{page.name}: broken link {target!r}"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{page.name}: no anchor for {target!r}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page, and its explicit <a id=...> anchors."""
    text = page.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    in_code = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_api_page_names_every_public_name() -> None:
    """docs/api.md documents every export, member, option key and error class."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    names = [name for name in pysock.__all__ if not name.startswith("_")]
    for name in names:
        assert re.search(rf"^#+ .*`{name}\b", api, re.MULTILINE), f"api.md: no heading for {name}"
    for cls in (pysock.Socket, pysock.SocketReader, pysock.SocketWriter):
        members = [name for name in vars(cls) if not name.startswith("_")]
        members += [name for name in getattr(cls, "__slots__", ()) if not name.startswith("_")]
        for member in members:
            assert f"`{member}" in api or f".{member}" in api, f"api.md: {cls.__name__}.{member}"
    for key in pysock.SocketOptions.__annotations__:
        assert f"`{key}`" in api, f"api.md: the option {key!r}"
    errors = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for name in pysock_errors.__all__:
        assert f"`{name}`" in errors, f"errors.md: {name}"
