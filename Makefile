# The two commands of the README, for a fresh machine:
#   make run    install what is missing, then run the pipeline on the embedded default config
#   make test   install what is missing, then run the test suite (what .ci/run calls)
# Both create ./.venv (pinned versions from pyproject.toml, torch held by constraints.txt) and
# install the Debian packages the project needs where absent: ffmpeg for musdb; the FluidSynth
# library, the FluidR3_GM SoundFont and espeak-ng for the rendered dataset (dannasep render).
SHELL := /bin/bash
# The interpreter .venv is built with (Python 3.11 or newer); default: found by
# workflow/scripts/find_python.sh (python3.13, 3.12, 3.11, python3, or uv). `make PYTHON=...` to choose.
PYTHON ?=
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= 2
SYSTEM_PACKAGES ?= ffmpeg libfluidsynth3 fluid-soundfont-gm espeak-ng
# Reference implementations the tests and benchmarks compare with (demucs's HDemucs and SVD
# penalty, open-unmix's separator). Installed without their dependencies: demucs and openunmix
# would pull torchaudio, which does not load beside the pinned torch; their models do not need it.
REFERENCE_PACKAGES ?= demucs==4.1.0 einops==0.8.2 openunmix==1.3.0
STAMP := $(VENV)/.installed

.PHONY: run test setup system-packages python

run: setup
	snakemake --cores $(CORES) --configfile config/config.yaml

# slurm-wlm and munge: the tests start a real single-node SLURM cluster on localhost.
test: SYSTEM_PACKAGES += slurm-wlm munge
test: setup
	pytest

setup: python system-packages $(STAMP)

# First, and in seconds: stop with one line when no Python 3.11+ (or uv) is on PATH.
python:
	@test -x $(BIN)/python || PYTHON=$(PYTHON) bash workflow/scripts/find_python.sh >/dev/null

system-packages:
	@bash workflow/scripts/install_system_packages.sh $(SYSTEM_PACKAGES)

# Re-install whenever the pins change.
$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || { py=$$(PYTHON=$(PYTHON) bash workflow/scripts/find_python.sh) || exit 1; \
	  if [ "$$py" = uv ]; then uv venv --seed --python 3.11 $(VENV); else "$$py" -m venv $(VENV); fi; }
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt --no-deps $(REFERENCE_PACKAGES)
	@touch $@
