"""The import direction: each part of tfvision imports only the parts below it.

From the bottom: errors, fs (paths on any filesystem) and host (the CPU), config (what the user wrote), rundir
(where a run lives), data and models (side by side, neither importing the other),
explanations, export (its serving_explain signature uses them), evaluation, training (which
writes a report when it finishes), inference, and the
CLI and public API on top. Imports inside functions count too: a lazy import must not hide
an arrow that points up.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = [
    {"tfvision.errors", "tfvision.fs", "tfvision.host"},
    {"tfvision.config"},
    {"tfvision.rundir"},
    {"tfvision.data", "tfvision.models"},
    {"tfvision.explanations"},
    {"tfvision.export"},
    {"tfvision.evaluation"},
    {"tfvision.training"},
    {"tfvision.inference"},
    {"tfvision.cli", "tfvision"},
]


def _part(module: str) -> str:
    """The layer entry a module belongs to: its package under tfvision, or itself."""
    parts = module.split(".")
    candidates = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return next(c for c in candidates if any(c in layer for layer in LAYERS))


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def _imports():
    for path in sorted((REPO / "tfvision").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfvision"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("tfvision")]
            else:
                continue
            for target in targets:
                yield module, target


def test_no_module_imports_one_above_it_or_beside_it():
    wrong = []
    for module, target in _imports():
        source, dest = _part(module), _part(target)
        if source == dest:
            continue
        if _layer(dest) >= _layer(source):
            wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_models_data_and_export_never_import_training():
    for module, target in _imports():
        if _part(module) in {"tfvision.models", "tfvision.data", "tfvision.export"}:
            assert not target.startswith(("tfvision.training", "tfvision.cli")), (module, target)
