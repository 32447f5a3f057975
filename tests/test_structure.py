"""The package's layering, read from the code itself: imports run one way, down.

Every ``import prsl...`` / ``from prsl... import`` in ``src/prsl`` (module level or inside a
function) is an edge from the importing unit to the imported one. A unit is a folder of
``src/prsl`` or a top-level module. The rule: a unit imports only units on lower floors, so
there is no cycle, the libraries know nothing of each other, and no stage reaches into another.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "prsl"
FLOORS = {
    "core": 0,
    **dict.fromkeys(["losses", "models", "data", "attacks", "metrics"], 1),
    **dict.fromkeys(["config", "results", "provenance"], 2),
    **dict.fromkeys(["train", "evaluate", "report"], 3),
    **dict.fromkeys(["sweep", "quickstart"], 4),
    "reference": 5,
    "cli": 6,
    "__main__": 7,
}
KERNEL = "prsl.losses.triton_prsl"
KERNEL_MAY_IMPORT = {"prsl.losses._common", "prsl.losses._recentralization"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imports() -> dict[str, set[str]]:
    """Module -> the prsl modules it imports; ``from pkg import sub`` counts as ``pkg.sub``."""
    modules = {module_name(path) for path in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        edges[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prsl"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name.startswith("prsl")}
    return edges


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "prsl"


def test_every_unit_has_a_floor():
    units = {unit(m) for m in imports()} | {unit(module_name(p)) for p in SRC.rglob("*.py")}
    assert units - {"prsl"} <= set(FLOORS), sorted(units - set(FLOORS))


@pytest.mark.parametrize("module", sorted(imports()))
def test_imports_run_down(module):
    """Within a unit anything goes (but see the cycle test); across units only downwards."""
    here = unit(module)
    for target in imports()[module]:
        there = unit(target)
        if there == here or target == "prsl":  # the root holds the version and nothing else
            continue
        assert FLOORS[there] < FLOORS[here], (
            f"{module} (floor {FLOORS[here]}) imports {target} (floor {FLOORS[there]}): "
            "imports must run to a lower floor"
        )


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A path that returns to its start, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return [*path, module, target]
            if state.get(target) is None and (found := visit(target, [*path, module])):
                return found
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module, [])):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_there_is_no_import_cycle():
    cycle = find_cycle(imports())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_fused_kernel_imports_only_shared_helpers_never_its_wrapper():
    own = {m for m in imports()[KERNEL] if m.startswith("prsl.losses")}
    assert own <= KERNEL_MAY_IMPORT, own
    assert "prsl.losses.prsl" not in imports()[KERNEL]
