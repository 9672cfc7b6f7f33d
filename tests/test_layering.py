"""The package's layering: the light verbs stay light, and no module imports the CLI or closes
an import circle.

``streampi ctl health`` is a probe systemd and scripts call every few seconds, ``streampi
produce`` runs on a camera Pi that has no interpreter, ``subscribe`` and ``--help`` are what a
newcomer types first: none of them may import LiteRT, tflite-runtime or the compiled kernels.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from streampi.client import Subscriber
from streampi.serving import ServerOptions
from streampi.testing import ServerThread, wait_subscribed

PACKAGE = Path(__file__).resolve().parents[1] / "streampi"

# runs the CLI where the heavy packages cannot be imported, then lists what got imported anyway
LIGHT = r"""
import sys

class Refuse:
    "An import hook: these packages are not installed here."
    BLOCKED = ("streampi._ext", "ai_edge_litert", "tflite_runtime", "tensorflow")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.BLOCKED):
            raise ImportError(f"{name} is refused by the test")
        return None

sys.meta_path.insert(0, Refuse())
from streampi.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:   # --help and argparse errors exit
    code = exc.code
heavy = sorted(m for m in sys.modules if m.startswith(("streampi._ext", "ai_edge_litert", "tflite_runtime",
                                                        "streampi.serving.server", "streampi.preprocess")))
print("heavy:", heavy, flush=True)
sys.exit(code)
"""


def light(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv", [["--help"], ["ctl", "--help"], ["produce", "--help"], ["subscribe", "--help"],
                                  ["keygen", "--help"], ["--version"]])
def test_help_of_the_light_verbs_imports_no_interpreter_and_no_kernels(argv):
    out = light(*argv)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout, out.stdout


def test_ctl_health_without_a_server_says_so_without_the_heavy_stack():
    out = light("ctl", "health", "--connect", "tcp://127.0.0.1:9", "--timeout", "0.3")
    assert out.returncode == 2
    assert "no answer from tcp://127.0.0.1:9" in out.stderr
    assert "heavy: []" in out.stdout


def test_produce_and_ctl_work_where_the_interpreter_and_kernels_are_missing(tmp_path):
    with ServerThread("shapes_int8", ServerOptions(workers=1, policy="queue")) as st, Subscriber(st.results) as sub:
        wait_subscribed(sub, st.frames)
        produced = light("produce", "--connect", st.frames, "--stream", "lightcam", "--count", "4", "--fps", "0",
                         "--size", "96x64")
        results = [sub.recv(timeout=10) for _ in range(4)] if produced.returncode == 0 else []
        health = light("ctl", "health", "--connect", st.control)
    assert produced.returncode == 0, produced.stderr
    assert "heavy: []" in produced.stdout
    assert [(r["stream"], r["seq"], r["ok"]) for r in results] == [("lightcam", i, True) for i in range(4)]
    assert health.returncode == 0, health.stderr
    assert health.stdout.startswith("healthy") and "heavy: []" in health.stdout


# -- the import graph ---------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions (not those
    imported for type annotations alone)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    # imports under `if TYPE_CHECKING:` are for annotations only: they never run
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:  # `from .x import y`: y may be a module or a name in x
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, name, set(files)) for name, path in files.items()}


def test_no_module_outside_the_cli_imports_it():
    graph = _graph()
    offenders = {m: sorted(t for t in targets if t == "streampi.cli" or t.startswith("streampi.cli."))
                 for m, targets in graph.items()
                 if not (m == "streampi.cli" or m.startswith("streampi.cli.") or m == "streampi.__main__")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_package_has_no_import_circle():
    graph = _graph()
    # a package imports its own submodules (lazily, or to re-export them): that edge is not a circle
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    assert circles == []


def test_the_graph_sees_imports_inside_functions():
    """The circle check is only worth something if it sees the edges that hid the old circle."""
    graph = _graph()
    assert "streampi.tools.quantize" in graph["streampi.cli.quantize"]  # imported inside run()
    assert "streampi.measure" in graph["streampi.tools.quantize"]
