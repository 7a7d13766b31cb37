"""A user's machine in a temp folder: a copy of the checkout's files as a fresh clone has them, a
wheel built from that copy, and a fresh venv that sees the test venv's dependencies (torch, numpy,
...) but not its facenet_tf2pt. Used by test_install (the wheel installed), test_hubconf (a bare
checkout, nothing installed) and test_readme (the README's snippets run in a checkout copy)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import REPO

# What a fresh clone does not have (git-ignored build outputs, downloads, the venv), for a tree
# that is not a git checkout (an unpacked sdist, a CI cache).
NOT_IN_A_CLONE = (".git", ".venv", "build", "dist", "out", "__pycache__", "*.egg-info", ".pytest_cache",
                  ".hypothesis")


def _git_files(root: Path) -> list[str] | None:
    """Files a clone of `root` would hold (tracked ones, plus new files git does not ignore, so that
    a change under review is included), or None when `root` is not the top of a git checkout."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=60)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({name for name in listed.stdout.split("\0") if name and (root / name).is_file()})


def checkout_copy(dest: Path, root: Path = REPO) -> Path:
    """Copy what a fresh clone of `root` holds into `dest` (created); returns `dest`."""
    names = _git_files(root)
    if names is None:
        shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE), symlinks=True)
        shutil.rmtree(dest / "checkpoints" / "tf", ignore_errors=True)
        return dest
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    return dest


def run(cmd, *, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `cmd` (text output captured); AssertionError with both streams when it fails."""
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` (non-editable, no build isolation: setuptools comes from this venv, nothing is
    downloaded) of the project in `source` into `out`; returns the wheel. Builds inside `source`
    (build/, *.egg-info), so `source` must be a copy, never the checkout."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", out, source])
    wheels = sorted(out.glob("facenet_tf2pt-*.whl"))
    assert len(wheels) == 1, f"pip wheel made {[w.name for w in out.iterdir()]}"
    return wheels[0]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_site_packages(venv: Path) -> Path:
    """The venv's purelib folder, asked of its own interpreter."""
    r = run([venv_python(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    return Path(r.stdout.strip())


def _dependencies_view(dest: Path) -> Path:
    """A folder of links to everything in this venv's site-packages except facenet_tf2pt itself
    (package, dist-info, editable finder), however it is installed there (editable or not)."""
    dest.mkdir(parents=True)
    for lib in dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")):
        for entry in lib.iterdir():
            own = entry.name.lower().startswith(("facenet_tf2pt", "__editable__"))
            if not own and entry.suffix != ".pth" and not (dest / entry.name).exists():
                (dest / entry.name).symlink_to(entry)
    return dest


def fresh_venv(venv: Path) -> Path:
    """A new venv (no pip) whose site-packages has a .pth file naming a view of this venv's
    site-packages without facenet_tf2pt: the dependencies (torch, numpy, scikit-image, ...) import,
    facenet_tf2pt does not until it is installed there. (A .pth line only adds a path: .pth files
    inside it are not processed, so no editable finder could activate either.) Returns its python."""
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv_python(venv)
    view = _dependencies_view(venv.parent / f"{venv.name}-dependencies")
    (venv_site_packages(venv) / "test-dependencies.pth").write_text(f"{view}\n")
    return python


def pip_install(python: Path, wheel: Path) -> None:
    """Install `wheel` (no dependencies, no index) into the venv of `python`, with this venv's pip."""
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", wheel])


def user_env(**extra: str) -> dict:
    """The environment of a user's shell: no PYTHONPATH (which may map facenet_tf2pt to a checkout),
    no $FACENET_HOME; `extra` set (e.g. TORCH_HOME in a temp folder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "FACENET_HOME")}
    return dict(env, **extra)
