"""Install hints that work from where the user stands. The extras (`tf`, `report`, `export`, ...)
belong to this project's pyproject.toml, and the distribution is not on the package index, so
`pip install 'facenet-tf2pt[tf]'` is never the right advice: in a source checkout the command is
`pip install -e '<checkout>[tf]'`; an installed copy gets the extra's own requirements, read from
the installed metadata (e.g. `pip install 'tensorflow-cpu==2.21.0'`). Torch-free."""
from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "facenet-tf2pt"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]    # facenet_tf2pt/: the repository root in a checkout


def _checkout_root(root: Path) -> Path | None:
    return root if (root / "pyproject.toml").is_file() and (root / "converter").is_dir() else None


def extra_requirements(extra: str) -> list[str]:
    """The requirements the installed distribution declares for `extra` (markers stripped)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    wanted = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    return [r.split(";", 1)[0].strip() for r in requires if ";" in r and wanted.search(r.split(";", 1)[1])]


def install_hint(extra: str, root: Path = PACKAGE_ROOT) -> str:
    """`pip install ...` that provides the `extra` of this project, for this installation."""
    checkout = _checkout_root(root)
    if checkout is not None:
        try:
            where = os.path.relpath(checkout)
        except ValueError:        # another drive (Windows)
            where = str(checkout)
        if where.startswith(".."):
            where = str(checkout)
        return f"pip install -e '{where}[{extra}]'"
    reqs = extra_requirements(extra)
    if reqs:
        return "pip install " + " ".join(f"'{r}'" for r in reqs)
    return f"install the '{extra}' extra's requirements listed in facenet-tf2pt's pyproject.toml"
