"""The Snakemake workflow: dry run, lint, and a config typo stopping it before any job."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _snakemake(*args, cwd=ROOT):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_dry_run_plans_the_pipeline():
    out = _snakemake("-n", "--cores", "2", "--forceall")
    assert out.returncode == 0, out.stderr + out.stdout
    for rule in ("synth_dataset", "validate_dataset", "train_xumx", "train_demucs"):
        assert rule in out.stdout


def test_lint_passes():
    out = _snakemake("--lint", "--cores", "1")
    assert out.returncode == 0, out.stdout + out.stderr


def test_config_typo_stops_before_any_job(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((ROOT / "config" / "config.yaml").read_text() + "\nmodles: {}\n")
    out = _snakemake("-n", "--cores", "1", "--configfile", str(bad))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "unknown key 'modles'" in text and "did you mean 'models'" in text
    assert "Job stats" not in text
