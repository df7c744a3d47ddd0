# Two commands set everything up on a fresh machine (see README):
#   make demo   -- the main job
#   make test   -- lint + unit tests (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench gpu-check clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pin first: an unpinned resolve would pull a multi-GB CUDA build of torch.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,real]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slp demo --out outputs/demo

# mypy checks the packages listed under [tool.mypy] in pyproject.toml (all four).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when nothing is collected (e.g. everything deselected): not a failure.
test: lint
	$(PY) -m pytest -q -m "not slow"; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# CPU budget: < 15 min on 2 cores. export_speed.py skips itself without the export extra.
bench: $(STAMP)
	$(PY) bench/bench_synth.py
	OMP_NUM_THREADS=1 $(PY) bench/render_speed.py
	OMP_NUM_THREADS=1 $(PY) bench/pipeline.py
	OMP_NUM_THREADS=1 $(PY) bench/export_speed.py
	OMP_NUM_THREADS=1 $(PY) bench/serve_latency.py

# On a CUDA host: training with AMP + resume, animate() compiled and in CUDA graphs, the serve
# graph of gpu.yaml; a few minutes, one table (scripts/gpu_smoke.sh). Without CUDA: exits 0.
gpu-check: $(STAMP)
	scripts/gpu_smoke.sh

clean:
	rm -rf $(VENV) outputs
