"""The house rules of the layout: no import cycles (not even inside functions), and the robot half stays light."""
import ast
import subprocess
import sys

from repo import ROOT

SOURCES = {"robot_runtime": "robot_runtime", "nodes": "robot_runtime.nodes",
           "improvement_loop": "robot_runtime.improvement_loop"}
WORKSTATION = "robot_runtime.improvement_loop"
NODES = "robot_runtime.nodes"


def project_modules() -> dict[str, tuple[ast.Module, bool]]:
    """Dotted name (as installed) -> (parsed source, is a package), for every module of the three source folders."""
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join([package, *parts])] = (ast.parse(path.read_text(), str(path)), is_package)
    return modules


def imported_names(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """Every module this one imports anywhere in its body (top level, functions, branches), as dotted names."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, (tree, is_package) in modules.items():
        graph[name] = {m for m in imported_names(name, tree, is_package) if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    tree_a = ast.parse("def f():\n    from robot_runtime.b import x\n")
    tree_b = ast.parse("from robot_runtime import a\n")
    graph = {"robot_runtime.a": imported_names("robot_runtime.a", tree_a, False),
             "robot_runtime.b": imported_names("robot_runtime.b", tree_b, False)}
    graph = {k: {m for m in v if m in graph and m != k} for k, v in graph.items()}
    assert cycles(graph) == [["robot_runtime.a", "robot_runtime.b"]]


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    assert len(graph) > 60 and "robot_runtime.runtime.engines.factory" in graph
    assert cycles(graph) == []


def test_rooms_import_only_downstream_of_themselves():
    """The robot half never reaches into the workstation; the robot library never into the nodes (ROS)."""
    problems = []
    for name, deps in import_graph().items():
        if name.startswith(WORKSTATION):
            continue
        problems += [f"{name} imports {d}" for d in deps if d.startswith(WORKSTATION)]
        if not name.startswith(NODES):
            problems += [f"{name} imports {d}" for d in deps if d.startswith(NODES)]
    for name, (tree, is_package) in project_modules().items():
        if not name.startswith(WORKSTATION):
            problems += [f"{name} imports {m}" for m in imported_names(name, tree, is_package)
                         if m == "torch" or m.startswith("torch.")]
    assert problems == []


def test_robot_half_never_imports_torch(tmp_path):
    """Import every module of the robot library and the nodes, found by walking the installed packages."""
    code = """
import importlib, pkgutil, sys
import robot_runtime, robot_runtime.nodes
names = []
for package in (robot_runtime, robot_runtime.nodes):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.startswith("robot_runtime.improvement_loop"):
            importlib.import_module(info.name)
            names.append(info.name)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not bad, bad
print("\\n".join(names))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True, text=True)
    imported = set(out.stdout.split())
    # the walk reached every room, not only the top folder
    for module in ("robot_runtime.runtime.engines.factory", "robot_runtime.capture.recording",
                   "robot_runtime.datatools.bag_import", "robot_runtime.sim.rollout", "robot_runtime.nodes.recorder",
                   "robot_runtime.teleop.devices", "robot_runtime.bringup.launcher"):
        assert module in imported
