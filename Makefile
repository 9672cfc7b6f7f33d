# The few verbs a newcomer needs. Everything runs in ./.venv, made on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.streampi-installed

.PHONY: demo test test-all test-slow bench bench-serving lint models clean check-tflite-runtime check-aarch64

$(STAMP): pyproject.toml setup.py $(wildcard streampi/_ext/*.pyx streampi/_ext/*.h)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)                ## the whole pipeline on the bundled model, ~10 s, then a summary
	$(PY) -m streampi demo

test: $(STAMP)                ## the default test run (what CI runs)
	$(PY) -m pytest -q

test-all: $(STAMP)            ## also the slow tests
	STREAMPI_SLOW=1 $(PY) -m pytest -q

test-slow: $(STAMP)           ## only the slow tests (CI runs them after `make test`)
	STREAMPI_SLOW=1 $(PY) -m pytest -q -m slow

bench: $(STAMP)               ## kernel, pipeline and serving benchmarks against their references
	$(PY) bench/kernels.py
	$(PY) bench/pipeline.py
	$(PY) bench/transport.py
	$(PY) bench/shm.py
	$(PY) bench/isolation.py --rounds 2
	$(PY) bench/decoders.py
	$(PY) bench/curve.py --rounds 2
	$(PY) bench/quantize.py

bench-serving: $(STAMP)       ## flow control, overload, light load and the peer library (#10's figures; ~20 min)
	$(PY) bench/coldstart.py
	$(PY) bench/pipeline.py --shm --v1 --seconds 8 --pairs 4
	$(PY) bench/lightload.py --rounds 2 --pairs 4 --light-pairs 6 --no-threads-mode --shm
	$(PY) bench/overload.py
	$(PY) bench/mixed.py --seconds 10
	$(PY) bench/peer.py

check-tflite-runtime:        ## the contract tests on the legacy tflite-runtime 2.14 (second venv, Python 3.11, numpy<2)
	scripts/check-tflite-runtime --numpy2

lint: $(STAMP)
	$(VENV)/bin/ruff check streampi tests bench scripts

check-aarch64:                ## kernel tests on an emulated Pi (arm64 bookworm, qemu; root; first run ~25 min)
	scripts/check-aarch64

models:                       ## retrain and convert the bundled models (TensorFlow, dev only)
	python3 -m venv .venv-models
	.venv-models/bin/pip install --quiet numpy -e '.[models]'
	.venv-models/bin/python scripts/make_models.py

clean:
	rm -rf build *.egg-info streampi/_ext/*.so streampi/_ext/*.c $(VENV)
