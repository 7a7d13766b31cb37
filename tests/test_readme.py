"""README.md's code cannot go stale: every ```python block runs, each in a fresh process, offline,
where the README's reader stands (a checkout, cwd at its root, with `out/demo.pt` from the built-in
example and a photo.jpg); every `python -m MODULE` it shows and every `facenet_tf2pt.NAME` it cites
resolves. A block that cannot run in CI may carry `# readme-test: skip (REASON)`: it is reported
as skipped with that reason (none does today)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys

import pytest

from facenet_tf2pt import model_info
from tests.fresh_env import checkout_copy, run
from tests.helpers import REPO

README = REPO / "README.md"
FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```", re.M | re.S)
PYTHON_FENCES = {"python", "py", "python3"}
SKIP = re.compile(r"#\s*readme-test:\s*skip\s*\((.+)\)")

# The block runs with every network connection refused: README examples must not download.
OFFLINE_RUNNER = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    raise OSError("README blocks run offline: a connection was attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def _python_blocks() -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every Python block."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1).lower() in PYTHON_FENCES]


BLOCKS = _python_blocks()


def test_the_readme_examples_are_found():
    """The extraction sees the examples of the public API (a changed fence would hide them)."""
    code = "\n".join(block for _, block in BLOCKS)
    for used in ("from facenet_tf2pt import", "InceptionResNetV1", "MTCNN(", "torch.hub.load("):
        assert used in code, f"no README python block uses {used!r}"


@pytest.fixture(scope="module")
def reader_checkout(converted512, tmp_path_factory, astronaut):
    """A copy of the checkout as the README's reader has it after the built-in example
    (`facenet-convert fixture out/demo && facenet-convert convert out/demo -o out/demo.pt`): the
    session's converted 512-d fixture is that file, byte for byte (its sha256 is the CI fixture's
    in the registry, the one the README's demo output prints), plus a photo.jpg with one face."""
    from PIL import Image

    assert converted512.sha256 == model_info("ci-fixture").weights[0].sha256
    root = checkout_copy(tmp_path_factory.mktemp("reader") / "facenet-tf2pt")
    (root / "out").mkdir()
    try:
        os.link(converted512.output, root / "out" / "demo.pt")
    except OSError:                                  # another filesystem
        import shutil

        shutil.copy(converted512.output, root / "out" / "demo.pt")
    Image.fromarray(astronaut).save(root / "photo.jpg")
    return root


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, reader_checkout, tmp_path):
    skip = SKIP.search(code)
    if skip:
        pytest.skip(f"README.md block at line {line}: {skip.group(1)}")
    # The script lives outside the checkout: sys.path[0] is its folder, so the checkout's own
    # models/ or converter/ folders cannot stand in for the installed package.
    script, runner = tmp_path / f"readme_line{line}.py", tmp_path / "offline.py"
    script.write_text(code)
    runner.write_text(OFFLINE_RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "FACENET_HOME"}
    env.update(TORCH_HOME=str(tmp_path / "torch"), PYTHONDONTWRITEBYTECODE="1")
    run([sys.executable, runner, script], cwd=reader_checkout, env=env)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:          # a parent package that does not import (e.g. a top-level converter/)
        return False


def test_readme_python_m_modules_exist():
    modules = sorted(set(re.findall(r"python -m ([\w.]+)", README.read_text(encoding="utf-8"))))
    assert modules
    missing = [m for m in modules if not _module_exists(m)]
    assert not missing, f"README.md runs `python -m` on modules that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


def test_readme_facenet_tf2pt_names_exist():
    names = sorted(set(re.findall(r"`(facenet_tf2pt(?:\.\w+)+)", README.read_text(encoding="utf-8"))))
    assert names
    assert [n for n in names if not _resolves(n)] == []
