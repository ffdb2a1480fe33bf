"""The tree keeps its shape: no import cycles, no import from a lower layer up into a higher one,
at most 15 modules directly in dlrm_jax/, no module over 450 lines.

The import graph is read from the source (ast), not by importing, so every import counts:
module level, inside functions (the lazy ones that keep the CLI fast) and under
TYPE_CHECKING.  `from pkg import name` is an edge to `pkg.name` where that is a module,
else to `pkg`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dlrm_jax", "analysis", "sweeps")
MAX_TOP_LEVEL_MODULES = 15
MAX_LINES = 450

# Layers, lowest first: a module may import from its own layer or a lower one.  A module's
# layer is that of the longest prefix listed (so `dlrm_jax.run.files` sits in "base" while
# the rest of `dlrm_jax.run` sits higher); a name ending in "$" is that module alone.
# docs/DESIGN.md section 1.3 draws the same picture.
#
# "declarations" are the JAX-free name tables the config checks against: the backends'
# optimizers and the interaction registry.  The registry loads an interaction's module
# (dlrm_jax.model.interactions.dot, ...) by name on first lookup, the one deliberate
# upward load of the tree: a plug-in table, as big_vision finds a model by name.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("dlrm_jax", "dlrm_jax.errors", "dlrm_jax.overrides", "dlrm_jax.schedule", "dlrm_jax.metrics",
              "dlrm_jax.run", "dlrm_jax.run.files", "dlrm_jax.run.storage", "dlrm_jax.run.chrono",
              "dlrm_jax.run.preemption",
              "dlrm_jax.compile", "dlrm_jax.compile.topologies", "dlrm_jax.compile.cache",
              "dlrm_jax.compile.memory", "dlrm_jax.compile.estimate",
              "dlrm_jax.compile.hlo_collectives", "dlrm_jax.compile.sparsecore",
              "dlrm_jax.parallel", "dlrm_jax.parallel.host_memory",
              "dlrm_jax.data.base", "dlrm_jax.data.prefetch", "dlrm_jax.data.criteo.table_sizes")),
    ("analysis", ("analysis",)),                  # JAX-free: only the base layer below it
    ("data", ("dlrm_jax.data",)),
    ("declarations", ("dlrm_jax.embedding.support", "dlrm_jax.model.interactions$")),
    ("config", ("dlrm_jax.config",)),
    ("run directory", ("dlrm_jax.run.rundir", "dlrm_jax.run.lease")),
    ("model", ("dlrm_jax.model",)),
    ("devices", ("dlrm_jax.parallel.mesh", "dlrm_jax.parallel.distributed")),
    ("embedding", ("dlrm_jax.embedding",)),
    ("step", ("dlrm_jax.step",)),
    ("parallel", ("dlrm_jax.parallel.steps", "dlrm_jax.run.checkpoint")),
    ("build", ("dlrm_jax.build",)),
    ("jobs", ("dlrm_jax.train", "dlrm_jax.bench", "dlrm_jax.compile.report")),
    ("sweeps", ("sweeps",)),
    ("entry points", ("dlrm_jax.demo", "dlrm_jax.planted", "dlrm_jax.cli", "dlrm_jax.__main__")),
)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            rel = p.relative_to(ROOT).with_suffix("")
            mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    return mods


MODULES = _modules()


def _internal(name: str | None) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for mod, path in MODULES.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out.update(filter(None, (_internal(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    out.add(full if full in MODULES else _internal(base))
        out.discard(None)
        out.discard(mod)
        graph[mod] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(mod: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            exact = p.endswith("$")
            p = p.rstrip("$")
            if (mod == p or (not exact and mod.startswith(p + "."))) and len(p) + exact > best_len:
                best, best_len = i, len(p) + exact
    if best is None:
        raise AssertionError(f"{mod} is in no layer of tests/test_layout.py: add it where it belongs")
    return best


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_no_import_from_a_lower_layer_up_into_a_higher_one():
    up = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
          for a, targets in sorted(import_graph().items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not up, "imports up a layer:\n" + "\n".join(up)


def test_the_checks_see_a_cycle_and_an_upward_import():
    # The checks themselves: a two-module cycle and a base module importing the trainer.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert layer_of("dlrm_jax.run.files") < layer_of("dlrm_jax.run.rundir") < layer_of("dlrm_jax.train")
    assert layer_of("analysis.fitting") < layer_of("dlrm_jax.data.world")
    registry, interaction = layer_of("dlrm_jax.model.interactions"), layer_of("dlrm_jax.model.interactions.dot")
    assert registry < layer_of("dlrm_jax.config") < interaction
    graph = import_graph()
    assert "dlrm_jax.build" in graph["dlrm_jax.train"]                  # the reader resolves `from x import y`
    assert "dlrm_jax.data.criteo.format" in graph["dlrm_jax.data.criteo.prepare"]   # and relative imports


def test_top_level_of_dlrm_jax_has_at_most_15_modules():
    top = sorted(p.name for p in (ROOT / "dlrm_jax").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("folder", ["dlrm_jax", "analysis", "sweeps", "scripts"])
def test_no_module_over_450_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
