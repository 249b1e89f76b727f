"""Data is never code: the package source uses no deserializer or evaluator that can run
code chosen by its input (issue 11, defect 3; DESIGN.md, "Things a user must never see")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agentstream

PACKAGE = Path(agentstream.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))

# Modules that turn bytes into objects by running code the bytes choose.
UNSAFE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "cloudpickle",
    "dill",
    "jsonpickle",
    "marshal",
    "shelve",
}
UNSAFE_CALLS = {"eval", "exec"}
# yaml.load / load_all run constructors chosen by the document unless given a safe loader.
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _findings(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Name) and node.id in UNSAFE_MODULES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_CALLS | {"__import__"}:
                found.append((node.lineno, f"{func.id}(...)"))
            elif isinstance(func, ast.Attribute):
                if func.attr in UNSAFE_CALLS and isinstance(func.value, ast.Name):
                    found.append((node.lineno, f"{func.value.id}.{func.attr}(...)"))
                if func.attr in {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}:
                    found.append((node.lineno, f"yaml.{func.attr}(...)"))
                if func.attr in {"load", "load_all"} and _is_yaml(func.value):
                    loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                    if loader is None and len(node.args) > 1:
                        loader = node.args[1]
                    name = getattr(loader, "attr", getattr(loader, "id", None))
                    if name not in SAFE_YAML_LOADERS:
                        found.append((node.lineno, f"yaml.{func.attr}(...) without a safe Loader"))
    return found


def _is_yaml(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in {"yaml", "ruamel"}


def test_the_scan_sees_the_package() -> None:
    assert len(SOURCES) > 20
    assert any(p.name == "context.py" for p in SOURCES)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "from marshal import loads",
        "import dill as d",
        "x = eval(text)",
        "builtins.exec(code)",
        "yaml.load(data)",
        "yaml.load(data, Loader=yaml.Loader)",
        "yaml.unsafe_load(data)",
        "_pickle.loads(data)",
    ],
)
def test_the_scan_finds_each_unsafe_form(source: str) -> None:
    assert _findings(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    ["yaml.safe_load(data)", "yaml.load(data, Loader=yaml.SafeLoader)", "loop.run(x)"],
)
def test_the_scan_lets_safe_forms_pass(source: str) -> None:
    assert not _findings(ast.parse(source))


def test_no_pickle_eval_exec_marshal_or_unsafe_yaml_in_the_package() -> None:
    """Scenario: a record read back from Kafka or disk reaches a deserializer that runs
    code (pickle, marshal, yaml's full loader) or an evaluator (eval, exec).
    We expect: none of them appears anywhere in the package's source."""
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in SOURCES
        for line, what in _findings(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert problems == [], "code from data:\n" + "\n".join(problems)
