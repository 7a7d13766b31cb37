"""Run a module or script as if TensorFlow were not installed: `import tensorflow` raises ImportError.

    python tools/without_tf.py -m converter convert SRC -o OUT.pt
    python tools/without_tf.py script.py ARGS...

Used by the tests and the benchmark to prove (and time) the paths that must work without TF.
"""
import importlib.abc
import runpy
import sys


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (blocked by tools/without_tf.py)")
        return None


def main():
    sys.meta_path.insert(0, _BlockTensorFlow())
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
