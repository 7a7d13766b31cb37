"""The package's layout rules, read from the source (every import statement, module-level or
inside a function): models/ never imports converter/ or TensorFlow; the nets import neither the
engines nor the hub (models/nets/hooks.py is how they reach them); common/ imports no other part;
the subpackages form no import cycle. Plus the public API at the package root: each name is there,
documented and type-hinted, and the install hints name a command that works from here."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = "facenet_tf2pt"
SUBPACKAGES = ("nets", "engines", "detection", "data", "hub", "cli", "common")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _imports(path: Path, module: str | None = None, top_level: bool = False) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved against `module`,
    by default the file's own name); `top_level`: module-level statements only."""
    here = (module or _module_name(path)).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)   # `from . import x` names a module
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _part(name: str) -> str | None:
    """The models subpackage a module name belongs to, if any."""
    parts = name.split(".")
    if parts[:2] == [PACKAGE, "models"] and len(parts) > 2 and parts[2] in SUBPACKAGES:
        return parts[2]
    return None


def test_models_never_import_converter_or_tensorflow():
    bad = [f"{p.relative_to(REPO)} imports {name}" for p in _sources("models") for name in _imports(p)
           if name.split(".")[0] in ("tensorflow", "converter") or name.startswith(f"{PACKAGE}.converter")]
    assert not bad, bad


def test_everything_imports_through_the_namespace():
    """No file imports a bare `models`, `converter` or `checkpoints` (they exist only as
    facenet_tf2pt.*; run from the repository root such an import would find the folder and pass
    here while failing for every user)."""
    bare = ("models", "converter", "checkpoints")
    bad = [f"{p.relative_to(REPO)} imports {name}" for folder in ("models", "converter", "tests", "benchmarks", "tools")
           for p in _sources(folder) for name in _imports(p) if name.split(".")[0] in bare]
    bad += [f"hubconf.py imports {name}" for name in _imports(REPO / "hubconf.py") if name.split(".")[0] in bare] \
        if (REPO / "hubconf.py").is_file() else []
    assert not bad, bad


def test_modules_run_by_name_are_namespaced():
    """Modules run by name (`python -m X`, `runpy.run_module("X")`) in code, Makefile and docs are
    facenet_tf2pt's: a bare `converter` runs from the repository root only, and fails elsewhere."""
    import re

    bare = re.compile(r"""(?:run_module\(\s*|["']-m["'],\s*|-m\s+)["']?(models|converter|checkpoints)\b""")
    files = [p for folder in ("models", "converter", "tests", "benchmarks", "tools") for p in _sources(folder)]
    files += [REPO / "Makefile", REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    bad = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
           for n, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not bad, bad


@pytest.mark.parametrize("part, forbidden", [
    ("nets", {"engines", "hub", "detection", "data", "cli"}),
    ("common", {"nets", "engines", "hub", "detection", "data", "cli"}),
    ("engines", {"hub", "detection", "data", "cli"}),
])
def test_layering(part, forbidden):
    bad = [f"{p.relative_to(REPO)} imports {name}" for p in _sources(f"models/{part}") for name in _imports(p)
           if _part(name) in forbidden]
    assert not bad, bad


def test_subpackages_form_no_import_cycle():
    """Module-level imports only (function-level imports are how a lower layer may call up lazily)."""
    edges = defaultdict(set)
    for p in _sources("models"):
        src = _part(_module_name(p))
        if src is not None:
            edges[src].update(d for d in map(_part, _imports(p, top_level=True)) if d is not None and d != src)

    def reach(start, seen):
        for nxt in edges[start]:
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    cycles = [f"{a} -> ... -> {a}" for a in SUBPACKAGES if a in reach(a, set())]
    assert not cycles, (cycles, dict(edges))


def test_a_planted_cycle_is_seen(tmp_path):
    """The import reader resolves relative imports: the nets' `from . import hooks` is found, and
    an engines import written in a net would be named."""
    net = REPO / "models" / "nets" / "inception_resnet_v1.py"
    assert f"{PACKAGE}.models.nets.hooks" in _imports(net)
    planted = tmp_path / "x.py"
    planted.write_text("from ..engines import fused\n")
    found = _imports(planted, module=f"{PACKAGE}.models.nets.x", top_level=True)
    assert _part(next(n for n in found if "engines" in n)) == "engines"


PUBLIC = ("InceptionResNetV1", "MTCNN", "fixed_image_standardization", "prewhiten", "get_model",
          "inception_resnet_v1", "load_weights", "list_models", "model_info")


@pytest.mark.parametrize("name", PUBLIC)
def test_public_api_is_documented_and_typed(name):
    import facenet_tf2pt

    obj = getattr(facenet_tf2pt, name)
    assert name in facenet_tf2pt.__all__ and name in dir(facenet_tf2pt)
    assert inspect.getdoc(obj), f"{name} has no docstring"
    fn = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(fn)
    untyped = [p.name for p in sig.parameters.values()
               if p.name not in ("self",) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
               and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}: parameters without type hints: {untyped}"
    assert inspect.isclass(obj) or sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


def test_importing_the_package_is_cheap_and_typed():
    """`import facenet_tf2pt` and the converter's torch-free path do not import torch; py.typed ships."""
    code = ("import sys, facenet_tf2pt, facenet_tf2pt.converter.mapping, facenet_tf2pt.models.common.paths\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "print(facenet_tf2pt.__version__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (REPO / "py.typed").is_file()


def test_fuse_without_the_engines_registered_says_what_to_do(monkeypatch):
    from facenet_tf2pt.models.nets import hooks
    from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1

    monkeypatch.setattr(hooks, "_fuse", None)
    with pytest.raises(RuntimeError, match="engines"):
        InceptionResNetV1().fuse()


def test_install_hint_names_the_command_for_this_installation(tmp_path):
    from facenet_tf2pt.models.common.install import extra_requirements, install_hint

    assert install_hint("tf").startswith("pip install -e '") and install_hint("tf").endswith("[tf]'")
    # an installed copy (no pyproject.toml beside the package): the extra's own requirements
    tf_reqs = extra_requirements("tf")
    assert tf_reqs and all(r.startswith("tensorflow") for r in tf_reqs)
    assert install_hint("tf", root=tmp_path) == "pip install " + " ".join(f"'{r}'" for r in tf_reqs)
    assert "facenet-tf2pt[" not in install_hint("report", root=tmp_path)
