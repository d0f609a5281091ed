"""The package's layers (docs/architecture.md): no module imports a higher layer or a sibling of its
own layer, and only the plotting layer imports matplotlib. Every import statement counts, those
inside functions (the lazy imports) included; the modules are parsed, never imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attn_jax"

# Lowest first. A module may import its own package and any package of a lower layer; the packages
# of one layer are siblings that import none of each other. "attn_jax" is the package root
# (attn_jax/__init__.py), which every import of a submodule runs first.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("attn_jax", "errors"),
    ("boxes",),
    ("attention",),
    ("models", "data", "eval"),
    ("tasks",),
    ("figures",),
    ("config", "pretrained"),
    ("train", "sweep"),
    ("programs",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# Drawing libraries allowed only in these packages.
PLOTTING = {"matplotlib": ("figures",)}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """attn_jax/tasks/detection.py -> "attn_jax.tasks.detection" (a package's __init__ -> it)."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, at any depth; `from a import b`
    counts as a.b, so that `from attn_jax import train` names the package it loads."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found += [(node.lineno, f"{origin}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    """The layer name of an attn_jax module ("attn_jax.train.loop" -> "train"); None outside."""
    parts = module.split(".")
    if parts[0] != "attn_jax":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "attn_jax"


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import of `source` (the code of `module`) that breaks the layering."""
    own = layer_of(module)
    assert own in RANK, f"{module} belongs to no layer; add its package to LAYERS"
    found = []
    for line, imported in imports_of(source, module, is_package):
        top = imported.split(".")[0]
        if top in PLOTTING and own not in PLOTTING[top]:
            found.append(
                f"{module}:{line} imports {imported}; drawing belongs in attn_jax/"
                f"{' or '.join(PLOTTING[top])}/"
            )
        target = layer_of(imported)
        if target is None or target == own:
            continue
        if RANK[target] > RANK[own]:
            found.append(f"{module}:{line} imports {imported}, a higher layer ({target} > {own})")
        elif RANK[target] == RANK[own]:
            found.append(f"{module}:{line} imports {imported}, a sibling of {own} ({target})")
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_belongs_to_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    tops.discard("__init__")
    missing = sorted(tops - set(RANK))
    assert not missing, f"packages without a layer: {missing}; place them in LAYERS and the docs"


def test_no_module_imports_a_higher_layer_and_only_figures_imports_matplotlib():
    found = []
    for path in _modules():
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "layering broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("attn_jax.models.vit", "import jax\nfrom attn_jax.attention import masks\n", []),
        ("attn_jax.train.loop", "from attn_jax.figures.curves import plot_curves\n", []),
        ("attn_jax.tasks.x", "def f():\n    from attn_jax.train import plots\n", ["higher"]),
        ("attn_jax.models.x", "from ..tasks import build_task\n", ["higher"]),
        ("attn_jax.models.x", "from . import vit\nfrom .vit import ViT\n", []),
        ("attn_jax.data.x", "import attn_jax.models.vit as vit\n", ["sibling"]),
        ("attn_jax.errors", "from attn_jax import config\n", ["higher"]),
        ("attn_jax.train.x", "from attn_jax.sweep import grid\n", ["sibling"]),
        ("attn_jax.eval.x", "def f():\n    import matplotlib.pyplot as plt\n", ["figures"]),
        ("attn_jax.tasks.x", "from matplotlib.patches import Patch\n", ["figures"]),
        ("attn_jax.figures.x", "import matplotlib\nfrom attn_jax.tasks import TASKS\n", []),
    ],
)
def test_the_checker_finds_bad_imports(module, source, expected):
    found = violations(source, module)
    assert len(found) == len(expected), found
    for line, word in zip(found, expected, strict=True):
        assert word in line and module in line


def test_relative_imports_of_a_package_init_resolve_inside_it():
    assert imports_of("from .loop import train\n", "attn_jax.train", is_package=True) == [
        (1, "attn_jax.train.loop.train")
    ]
    assert violations("from ..figures import x\n", "attn_jax.train.loop") == []
