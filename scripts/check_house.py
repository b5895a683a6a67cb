"""Print what falls short of the house targets (ARCHITECTURE.md) and exit 1 if anything does.

    python scripts/check_house.py [--only webapp,app.py] [--json runs/house.json]

The targets, over the project's modules (``nscvf/``, ``webapp/``, ``app.py``), read with ``ast``:

- no file over :data:`MAX_FILE_LINES` lines (data tables, i.e. top-level assignments of literal lists,
  dicts, tuples and sets such as world.py's, do not count);
- no function over :data:`MAX_FUNCTION_LINES` lines or with more than :data:`MAX_PARAMETERS` parameters,
  except a declarative table (a parser or a page layout): marked ``# declarative`` on its ``def`` line and
  made of calls at least :data:`DECLARATIVE_SHARE` of its statements;
- no import circle among the project's modules (imports inside functions included);
- the layer rules (:data:`LAYERS`, :data:`NSCVF_LAYERS`): Gradio only under ``webapp/page/``; ``nscvf``
  never imports ``webapp`` or Gradio and reads downward (world -> models -> eval -> method -> bench/cli);
  each webapp layer imports only what its rule allows;
- an import inside a function says why on its line (or the line above): only a heavy optional dependency
  (torch, gradio, plotly, umap) belongs there.

tests/test_layers.py calls :func:`import_violations` on the whole project: the import rules are enforced by
the suite, the sizes are reported here.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8
DECLARATIVE_SHARE = 0.8
GRADIO = ("gradio", "gradio_client")

# The webapp's layers: package -> what it may import from webapp (Gradio: webapp.page only). Lower layers first.
LAYERS = {
    "webapp.state": {"webapp.state"},
    "webapp.service": {"webapp.state", "webapp.service"},
    "webapp.views": {"webapp.state", "webapp.views"},
    "webapp.page": {"webapp.state", "webapp.service", "webapp.views", "webapp.page"},
}
CHAIN = "nscvf.method.chain"  # the engine's entry: only webapp.service drives it in the app
# nscvf's layers, bottom up: a module may import its own layer and those below, never one above.
NSCVF_LAYERS = [
    # the worlds (drawn characters; the photo model's concepts and images) and the plumbing under everything
    {"errors", "images", "cache", "world", "concepts", "photo_images", "photo_features", "rates", "source"},
    {"models"},  # model families behind one interface
    {"eval", "plots"},  # evaluation and plots of a model
    {"method"},  # the engine: one request, the chain
    # what runs the engine (zerogpu: one request per GPU call); training the base models; the photo fidelity bench
    {"bench", "cli", "train_base", "train_photo", "photo_fidelity", "photo_eval", "zerogpu"},
]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (a project module when it is one, else the name as written)
    line: int
    in_function: bool
    commented: bool  # a comment on its line or the line above


@dataclass
class Module:
    name: str
    path: Path
    rel: str  # the path from the project root
    tree: ast.Module
    lines: list[str]
    imports: list[Import] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- reading


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files(root: Path = ROOT) -> list[Path]:
    files = sorted((root / "nscvf").rglob("*.py")) + sorted((root / "webapp").rglob("*.py")) + [root / "app.py"]
    return [p for p in files if p.is_file()]


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _function_lines(tree: ast.Module) -> set[int]:
    """The lines inside a function body (an import there is a function-level import)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    return inside


def _commented(lines: list[str], line: int) -> bool:
    here = lines[line - 1]
    above = lines[line - 2].strip() if line >= 2 else ""
    return "#" in here.split("import", 1)[-1] or above.startswith("#")


def read(root: Path = ROOT) -> dict[str, Module]:
    """Every project module, parsed, with its imports resolved to project modules where they are one."""
    mods = {}
    for p in project_files(root):
        text = p.read_text()
        rel = str(p.relative_to(root))
        mods[module_name(p, root)] = Module(module_name(p, root), p, rel, ast.parse(text), text.splitlines())
    for m in mods.values():
        inside = _function_lines(m.tree)
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, m.name, m.path.name == "__init__.py")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in dict.fromkeys(targets):
                m.imports.append(Import(m.name, t, node.lineno, node.lineno in inside, _commented(m.lines, node.lineno)))
    return mods


# ---------------------------------------------------------------------------------------- the rules


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _layer(name: str) -> str | None:
    return next((p for p in LAYERS if _within(name, p)), None)


def _nscvf_rank(name: str) -> int | None:
    part = name.split(".")[1] if name.count(".") else None
    return next((i for i, layer in enumerate(NSCVF_LAYERS) if part in layer), None)


def circles(mods: dict[str, Module]) -> list[list[str]]:
    """The import circles among the project's modules (strongly connected components, Tarjan)."""
    graph = {m: sorted({i.target for i in mod.imports if i.target in mods and i.target != m}) for m, mod in mods.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 4 * len(graph)))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def import_violations(mods: dict[str, Module]) -> list[str]:
    """Every import that breaks a layer rule, and every import circle, one line each."""
    out = []
    for m in mods.values():
        for i in m.imports:
            where = f"{m.rel}:{i.line}: {m.name} imports {i.target}"
            gradio = _top(i.target) in GRADIO
            if gradio and not _within(m.name, "webapp.page"):
                out.append(f"{where}: Gradio is imported only under webapp/page/")
            if _top(m.name) == "nscvf":
                if _top(i.target) == "webapp":
                    out.append(f"{where}: the library never imports the app")
                lo, hi = _nscvf_rank(m.name), _nscvf_rank(i.target)
                if m.name != "nscvf" and lo is None:
                    out.append(f"{where}: {m.name} is in no layer of NSCVF_LAYERS (scripts/check_house.py): place it")
                elif _top(i.target) == "nscvf" and i.target != "nscvf" and lo is not None and (hi is None or hi > lo):
                    out.append(f"{where}: nscvf reads downward ({' -> '.join('/'.join(sorted(x)) for x in NSCVF_LAYERS)})")
            layer = _layer(m.name)
            if layer is not None and _top(i.target) == "webapp":
                allowed = LAYERS[layer]
                if not any(_within(i.target, a) for a in allowed) and i.target != "webapp":
                    out.append(f"{where}: {layer} may import only {', '.join(sorted(allowed))}")
            if _top(m.name) == "webapp" and _within(i.target, CHAIN) and not _within(m.name, "webapp.service"):
                out.append(f"{where}: only webapp.service drives the engine's chain")
            if m.name == "app" and _top(i.target) == "webapp" and not _within(i.target, "webapp.page"):
                out.append(f"{where}: app.py composes the page only (webapp.page)")
    out += [f"import circle: {' -> '.join(c)}" for c in circles(mods)]
    return out


# ------------------------------------------------------------------------------------------- sizes


def _data_lines(tree: ast.Module) -> set[int]:
    """Lines of top-level data tables: assignments of literal lists, dicts, tuples, sets."""
    literal = (ast.List, ast.Dict, ast.Tuple, ast.Set, ast.Constant)
    out = set()
    for node in tree.body:
        value = getattr(node, "value", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(value, (ast.List, ast.Dict, ast.Tuple, ast.Set)):
            if all(
                isinstance(n, literal) or isinstance(n, (ast.expr_context, ast.UnaryOp, ast.unaryop)) for n in ast.walk(value)
            ):
                out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def _declarative(node, lines: list[str]) -> bool:
    if "# declarative" not in lines[node.lineno - 1]:
        return False
    stmts = [s for s in ast.walk(node) if isinstance(s, ast.stmt) and s is not node]
    calls = [s for s in stmts if isinstance(getattr(s, "value", None), ast.Call) or isinstance(s, ast.With)]
    return len(calls) >= DECLARATIVE_SHARE * max(1, len(stmts))


def size_shortfalls(mods: dict[str, Module]) -> list[str]:
    out = []
    for m in mods.values():
        rel = m.rel
        counted = len(m.lines) - len(_data_lines(m.tree))
        if counted > MAX_FILE_LINES:
            out.append(f"{rel}: {counted} lines (data tables excepted), over {MAX_FILE_LINES}")
        for node in ast.walk(m.tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or _declarative(node, m.lines):
                continue
            a = node.args
            params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
            params += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{rel}:{node.lineno}: {node.name}() is {length} lines, over {MAX_FUNCTION_LINES}")
            if len(params) > MAX_PARAMETERS:
                out.append(f"{rel}:{node.lineno}: {node.name}() takes {len(params)} parameters, over {MAX_PARAMETERS}")
        for i in m.imports:
            if i.in_function and not i.commented:
                out.append(f"{rel}:{i.line}: {i.target} imported inside a function without a why-comment")
    return out


def shortfalls(mods: dict[str, Module], only: list[str] | None = None) -> list[str]:
    """Everything that falls short, or only what concerns files under ``only`` (paths from the root)."""
    found = import_violations(mods) + size_shortfalls(mods)
    if not only:
        return found
    names = [module_name(ROOT / o) if o.endswith(".py") else o.replace("/", ".") for o in only]

    def concerns(line: str) -> bool:
        if line.startswith("import circle: "):
            return any(_within(m, n) for m in line.removeprefix("import circle: ").split(" -> ") for n in names)
        return any(line.startswith(o) for o in only)

    return [f for f in found if concerns(f)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated paths to report on (e.g. webapp,app.py); default all")
    ap.add_argument("--json", help="also write the shortfalls to this JSON file")
    args = ap.parse_args(argv)
    only = [o.strip().rstrip("/") for o in args.only.split(",") if o.strip()]
    mods = read()
    found = shortfalls(mods, only)
    for line in found:
        print(line)
    n_lines = sum(len(m.lines) for m in mods.values())
    print(f"{len(found)} shortfall(s) in {len(mods)} modules ({n_lines} lines){' under ' + ', '.join(only) if only else ''}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"only": only, "modules": len(mods), "shortfalls": found}, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
