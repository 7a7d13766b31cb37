"""Run a module or script as if TensorFlow were not installed: `import tensorflow` raises ImportError.

    python tools/without_tf.py -m facenet_tf2pt.converter convert SRC -o OUT.pt
    python tools/without_tf.py --also torch -m facenet_tf2pt.converter convert SRC -o OUT.pt   # torch blocked too
    python tools/without_tf.py script.py ARGS...

Used by the tests and the benchmark to prove (and time) the paths that must work without TF
(and, with `--also torch`, without importing torch either).
"""
import importlib.abc
import runpy
import sys


class _Block(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in self.names:
            raise ImportError(f"No module named {name!r} (blocked by tools/without_tf.py)")
        return None


def main():
    args = sys.argv[1:]
    blocked = ["tensorflow"]
    while args[:1] == ["--also"]:
        blocked.append(args[1])
        args = args[2:]
    sys.meta_path.insert(0, _Block(blocked))
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
