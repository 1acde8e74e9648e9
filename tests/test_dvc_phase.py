"""dannasep.dvc_phase: a DVC stage's Snakemake call is skipped only when a run covering its phase
left every watched file as it is now (dvc.yaml runs every Snakemake call through it).

A stand-in `snakemake` on PATH logs its arguments and, for a run, writes an output as the real
one would; the tests count the calls that reach it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_SNAKEMAKE = """#!/bin/sh
echo "$*" >> calls.log
case " $* " in *" --touch "*) ;; *) mkdir -p results && echo run >> results/out.txt ;; esac
exit ${FAKE_RC:-0}
"""


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "snakemake"
    fake.write_text(FAKE_SNAKEMAKE)
    fake.chmod(0o755)
    work = tmp_path / "repo"
    for d in ("src/pkg", "workflow", "config", "resources/data"):
        (work / d).mkdir(parents=True)
    (work / "Snakefile").write_text("rule all:\n")
    (work / "src/pkg/code.py").write_text("x = 1\n")
    (work / "config/config.yaml").write_text("a: 1\n")
    (work / "config/other.yaml").write_text("a: 2\n")
    (work / "resources/data/track.wav").write_bytes(b"RIFF")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return work


def _call(repo: Path, mode: str, phase: str, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FAKE_RC": str(rc)}
    return subprocess.run([sys.executable, "-m", "dannasep.dvc_phase", mode, phase, "--",
                           "snakemake", *args, "--configfile", "config/config.yaml"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def _calls(repo: Path) -> list[str]:
    log = repo / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _edit(path: Path, text: str) -> None:
    time.sleep(0.01)  # a new modification time even on coarse clocks
    path.write_text(text)


def test_a_run_then_nothing_changed_skips_every_later_call(repo):
    assert _call(repo, "--done", "all", "all").returncode == 0
    assert len(_calls(repo)) == 1
    # The stages after the first: their touch and their run find the state that run left.
    for mode, phase, args in (("--after", "data", ("all", "--touch")), ("--done", "all", ("all",)),
                              ("--after", "all", ("all", "--touch")), ("--done", "data", ("x",))):
        done = _call(repo, mode, phase, *args)
        assert done.returncode == 0 and "skipped" in done.stderr
    assert len(_calls(repo)) == 1
    assert (repo / "results/out.txt").read_text() == "run\n"


@pytest.mark.parametrize("edit", ["code", "result", "dataset", "config", "deleted", "new file",
                                  "other config"])
def test_any_change_runs_snakemake_again(repo, edit):
    assert _call(repo, "--done", "all", "all").returncode == 0
    args = ["all"]
    if edit == "code":
        _edit(repo / "src/pkg/code.py", "x = 2\n")
    elif edit == "result":
        _edit(repo / "results/out.txt", "edited\n")
    elif edit == "dataset":
        _edit(repo / "resources/data/track.wav", "RIFF2")
    elif edit == "config":
        _edit(repo / "config/config.yaml", "a: 3\n")
    elif edit == "deleted":
        (repo / "results/out.txt").unlink()
    elif edit == "new file":
        (repo / "workflow/new.smk").write_text("")
    else:  # the same files, another --configfile: another pipeline
        args += ["--configfile", "config/other.yaml"]
    assert _call(repo, "--done", "all", *args).returncode == 0
    assert len(_calls(repo)) == 2


def test_a_data_run_covers_the_data_touch_only(repo):
    assert _call(repo, "--done", "data", "--until", "train").returncode == 0
    assert "skipped" in _call(repo, "--after", "data", "train", "--touch").stderr
    assert "skipped" not in _call(repo, "--after", "all", "report", "--touch").stderr
    assert _call(repo, "--done", "all", "all").returncode == 0
    assert len(_calls(repo)) == 3


def test_a_failed_run_records_nothing_and_passes_its_exit_status(repo):
    failed = _call(repo, "--done", "all", "all", rc=3)
    assert failed.returncode == 3
    assert not (repo / ".snakemake/dvc-phases").exists()
    assert _call(repo, "--done", "all", "all").returncode == 0
    assert len(_calls(repo)) == 2


def test_a_touch_records_nothing(repo):
    assert _call(repo, "--after", "data", "train", "--touch").returncode == 0
    assert _call(repo, "--after", "data", "train", "--touch").returncode == 0
    assert len(_calls(repo)) == 2


def test_dvc_metadata_beside_the_outs_is_not_watched(repo):
    """DVC rewrites the .gitignore next to the outs of each stage it runs."""
    assert _call(repo, "--done", "all", "all").returncode == 0
    (repo / "results/.gitignore").write_text("/out.txt\n")
    assert "skipped" in _call(repo, "--done", "all", "all").stderr
    assert len(_calls(repo)) == 1


def test_no_command_is_a_usage_error(repo):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "dannasep.dvc_phase", "--done", "all", "--"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give the Snakemake command after --" in done.stderr


def test_a_dataset_outside_the_repository_is_watched(repo, tmp_path):
    """The merged config (results/config.yaml) may point dataset.root anywhere."""
    outside = tmp_path / "musdb18hq"
    (outside / "test/song").mkdir(parents=True)
    (outside / "test/song/mixture.wav").write_bytes(b"RIFF")
    (repo / "results").mkdir()
    (repo / "results/config.yaml").write_text(f"dataset: {{root: {outside}}}\n")
    assert _call(repo, "--done", "all", "all").returncode == 0
    assert "skipped" in _call(repo, "--done", "all", "all").stderr
    _edit(outside / "test/song/mixture.wav", "RIFF2")
    assert "skipped" not in _call(repo, "--done", "all", "all").stderr
    assert len(_calls(repo)) == 2
