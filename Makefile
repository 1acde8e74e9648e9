# The two commands of the README, for a fresh machine:
#   make run    install what is missing, then run the pipeline on the embedded default config
#   make test   install what is missing, then run the test suite (what .ci/run calls)
# Both create ./.venv (pinned versions from pyproject.toml, torch held by constraints.txt) and
# install the Debian packages the project needs where absent: ffmpeg for musdb; the FluidSynth
# library, the FluidR3_GM SoundFont and espeak-ng for the rendered dataset (dannasep render).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= 2
SYSTEM_PACKAGES ?= ffmpeg libfluidsynth3 fluid-soundfont-gm espeak-ng
STAMP := $(VENV)/.installed

.PHONY: run test setup system-packages

run: setup
	snakemake --cores $(CORES) --configfile config/config.yaml

# slurm-wlm and munge: the tests start a real single-node SLURM cluster on localhost.
test: SYSTEM_PACKAGES += slurm-wlm munge
test: setup
	pytest

setup: system-packages $(STAMP)

system-packages:
	@bash workflow/scripts/install_system_packages.sh $(SYSTEM_PACKAGES)

# Re-install whenever the pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	@touch $@
