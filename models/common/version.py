"""The project's version for `--version` and the files the converter writes: one source, the
package's `facenet_tf2pt.__version__` (pyproject.toml reads it too, `dynamic = ["version"]`)."""
from __future__ import annotations


def project_version() -> str:
    from ... import __version__

    return __version__
