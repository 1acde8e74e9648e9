"""The install surface: pins agree, the CLI answers, the README's commands exist."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps)


def test_every_dependency_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", d) for d in deps), deps
    assert _pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_names_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = dict(p.split("==") for p in pip_section if "==" in p)
    assert env_pins == _pyproject_pins()


def test_constraints_hold_torch():
    lines = [l for l in (ROOT / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert "torch==2.13.0" in lines
    assert not any("+cpu" in l for l in lines)


def test_cli_help_lists_every_step():
    out = subprocess.run([sys.executable, "-m", "dannasep", "--help"], capture_output=True, text=True, check=True)
    from dannasep.cli import COMMANDS

    for name in COMMANDS:
        assert name in out.stdout
        sub = subprocess.run([sys.executable, "-m", "dannasep", name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0, sub.stderr
        assert "usage: dannasep " + name in sub.stdout


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert [l for l in ci.splitlines() if l.strip() and not l.startswith(("#", "set ", "cd "))] == ["make test"]


WORKFLOW_ONLY = {"snakemake", "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep",
                 "dvc", "pygments"}  # pygments: `snakemake --report` only


def test_rule_conda_env_names_the_same_pins_and_no_path():
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "dannasep.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    runtime = {k: v for k, v in _pyproject_pins().items() if k not in WORKFLOW_ONLY}
    assert dict(p.split("==") for p in pip_section) == runtime  # every entry a pin: no path, no -e
    assert "nodefaults" in env["channels"]
    assert yaml.safe_load((ROOT / "environment.yml").read_text())["channels"] == env["channels"]


def test_conda_jobs_plan_from_another_prefix(tmp_path):
    """`--sdm conda --conda-prefix <elsewhere>`: the workflow plans, and a job's command finds
    `dannasep` (workflow/bin) and the code (PYTHONPATH) without the repository installed."""
    import os

    prefix = tmp_path / "conda envs elsewhere"
    # conda cannot be installed here: a stand-in answers the queries Snakemake makes
    # before planning (a dry run creates no environment)
    stub = tmp_path / "bin" / "conda"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\ncase \"$*\" in\n"
                    "  *--version*) echo 'conda 24.7.1';;\n"
                    "  'config --get channel_priority --json') echo '{\"get\": {\"channel_priority\": \"strict\"}}';;\n"
                    "  'info --json') echo '{\"conda_prefix\": \"/opt/conda\", \"root_prefix\": \"/opt/conda\", \"platform\": \"linux-64\"}';;\n"
                    "  *) echo \"conda stand-in: $*\" >&2; exit 1;;\nesac\n")
    stub.chmod(0o755)
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1",
                          "--sdm", "conda", "--conda-prefix", str(prefix), "--forceall", "-p"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "dannasep train" in text
    wrapper = ROOT / "workflow" / "bin" / "dannasep"
    env = {"PATH": f"{wrapper.parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
           "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}
    done = subprocess.run(["dannasep", "--version"], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("dannasep "), done.stderr
    assert os.access(wrapper, os.X_OK)


def test_make_stops_at_once_without_python_311(tmp_path):
    """A python3 of 3.10 first on PATH and no newer one: one line saying what to install, before
    any system package or pip install is tried."""
    import os
    import shutil
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\ncase "$1" in --version) echo "Python 3.10.12";; *) exit 1;; esac\n')
    stub.chmod(0o755)
    for tool in ("make", "bash", "sh", "env", "cat", "dirname", "uname", "test"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    repo = tmp_path / "repo"
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "workflow/scripts/find_python.sh",
                 "workflow/scripts/install_system_packages.sh"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    start = time.monotonic()
    out = subprocess.run(["make", "run"], cwd=repo, capture_output=True, text=True, timeout=60,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert out.returncode != 0 and time.monotonic() - start < 10
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs Python 3.11 or newer (found: Python 3.10.12)" in errors[0]
    assert "apt-get install python3.11 python3.11-venv" in errors[0]
    assert not (repo / ".venv").exists()


def test_python_floor_is_stated():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11"
