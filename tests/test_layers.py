"""The folder tree is the architecture: no module imports from a layer above its own, and no
import cycle. Read from the source (every import, in functions and under TYPE_CHECKING too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import from its own layer and the layers below it.
LAYERS = [
    # the spec's constants, strict JSON, the exceptions
    ("dcqformat._version", "dcqformat._layout", "dcqformat._json", "dcqformat.errors"),
    ("dcqformat.decode",),  # kernels, their NumPy twins, Streams and the decode API
    ("dcqformat.codecs",),  # payload codecs and their kernels
    ("dcqformat.format",),  # sections, reader, writer, dataset directories, .dcqi members
    ("dcqformat.pipeline",),  # what every conversion stage shares
    ("dcqformat",),  # the facade: dcqformat.open, DcqReader, DcqWriter, ConvertConfig
    ("dcqformat.mae", "dcqformat.dequant"),  # the models in the file: the MAE, the learned dequantizer
    ("dcqformat.loaders",),  # torch Dataset, loader, WebDataset pipeline, device decoder
    ("dcqformat.quantize",),  # the quantizers and their stages
    ("dcqformat.select",),  # DQ / ADQ / GraphCut
    ("dcqformat.conversion",),  # the orchestration (dcqformat.convert)
    ("dcqformat.cli", "dcqformat.__main__"),  # the dcq command line
]
FACADE = "dcqformat"  # may import anything lazily (dcqformat.convert)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "dcqformat").rglob("*.py")) + sorted((ROOT / "loaders").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        parts = ["dcqformat", "loaders", *rel[1:]] if rel[0] == "loaders" else list(rel)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dcqformat"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "dcqformat":
                continue
            for alias in node.names:
                out.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return out - {name}


def layer(name: str) -> int:
    best, best_len = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix == FACADE
            if (name == prefix or (not exact and name.startswith(prefix + "."))) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best >= 0, f"{name} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_a_layer():
    for name in graph():
        layer(name)


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
            for a, deps in edges.items() if a != FACADE for b in sorted(deps) if layer(b) > layer(a)]


def cycles(edges: dict[str, set[str]]) -> list[str]:
    edges = {a: deps for a, deps in edges.items() if a != FACADE}
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_upward_import():
    problems = upward(graph())
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    problems = cycles(graph())
    assert not problems, "\n".join(problems)


def test_the_checks_see_a_planted_violation():
    edges = graph()
    assert "dcqformat.format.reader" in edges["dcqformat.loaders.dataset"]  # edges are read
    planted = {**edges, "dcqformat.format.reader": edges["dcqformat.format.reader"] | {"dcqformat.loaders.dataset"}}
    assert upward(planted) == ["dcqformat.format.reader (layer 3) imports dcqformat.loaders.dataset (layer 7)"]
    assert any("dcqformat.format.reader -> dcqformat.loaders.dataset" in c for c in cycles(planted))
