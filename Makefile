# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv
# with python3 -m venv on first use and installs xgrad with every framework and dev tool.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-numerics lint bench bench-smoke fuzz clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/seed_examples.py
	$(BIN)/xgrad examples

lint: $(STAMP)
	$(BIN)/ruff check xgrad tests scripts
	$(BIN)/ruff format --check xgrad tests scripts

# Two test processes: the suite is dominated by framework work (one core each), and CI
# machines of this kind have two cores. Then the executed docs once more under a second
# numeric configuration, so that a figure that depends on the CPU fails here and not on a
# user's machine.
test: $(STAMP) lint
	$(BIN)/python -m pytest -n 2
	$(MAKE) --no-print-directory test-numerics

# The second numeric configuration: the kernels an AVX2-only CPU (such as AMD EPYC) runs,
# in every framework, and one BLAS thread (another summation order). OpenBLAS' core type
# names are x86 ones, so on other machines only the thread count and oneDNN change.
NUMERICS := OPENBLAS_NUM_THREADS=1 TF_ENABLE_ONEDNN_OPTS=0
ifeq ($(shell uname -m),x86_64)
NUMERICS += OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 XLA_FLAGS=--xla_cpu_max_isa=AVX2
endif

test-numerics: $(STAMP)
	env $(NUMERICS) $(BIN)/python -m pytest -n 2 -q -p no:cacheprovider tests/test_docs.py

# OpenBLAS is pinned to an older kernel on this kind of machine for correctness in tests and
# CI (OPENBLAS_CORETYPE); the benchmark unsets it for its own command only, so that NumPy runs
# the kernel it would pick itself. The JSON records which kernel ran.
bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python scripts/bench.py --json bench.json
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python scripts/bench_transformer.py \
		--json bench-transformer.json

# The randomized corpus of hand-written ports with planted bugs (scripts/corpus.py), larger
# than the one the tests run: scores for false alarms, wrong causes, naming, localisation.
fuzz: $(STAMP)
	$(BIN)/python scripts/corpus.py --cases 240 --json corpus.json
	XGRAD_PROPERTY_EXAMPLES=200 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_properties.py
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 -m exhaustive tests

bench-smoke: $(STAMP)
	$(BIN)/python scripts/bench.py --smoke
	$(BIN)/python scripts/bench_transformer.py --smoke

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
