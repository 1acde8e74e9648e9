"""Run a DVC stage's Snakemake call, or skip it when a recent run already did its work.

DVC runs its stages one at a time, so dvc.yaml lets Snakemake schedule the work: every stage
after `data` brings the whole pipeline up to date with one Snakemake call (training, separation
and the report overlap as in `snakemake --cores N`), and DVC records and caches, stage by stage,
what each phase wrote. The later stages then have nothing left to do, but each Snakemake start
costs about 2 s even then, twice a stage (its `--touch` and its run). So each call goes through

    python -m dannasep.dvc_phase --done all -- snakemake all ...          a run
    python -m dannasep.dvc_phase --after data -- snakemake ... --touch    a touch

After a run succeeds, the size, modification time and inode of every file Snakemake's decisions
read (the code, the configs, the dataset, results/ and resources/) are recorded as the state
that run left, for its phase (`all` covers `data`). A later call is skipped when a run covering
the phase it needs (`--done`: its own; `--after`: the phases it touches) left exactly the files
there are now: then Snakemake would find nothing to do, and the upstream modification times are
the ones Snakemake wrote, so touching changes nothing. Any difference (an edited file, a file
DVC restored, another config file) runs Snakemake as before. The records live in
.snakemake/dvc-phases/; deleting them only costs the skipped starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .io import file_identity, write_json

PHASES = ("data", "all")  # in order: a run that covers a phase covers those before it
RECORDS = Path(".snakemake") / "dvc-phases"
# What Snakemake's decisions read, relative to the repository (plus the config file and dataset).
WATCHED = ("Snakefile", "params.yaml", "src", "workflow", "config", "results", "resources")
SETTINGS = Path("results") / "config.yaml"  # the merged config the DVC `config` stage writes


def _walk(path: str, found: dict[str, list[int]]) -> None:
    """Add path (a file, or every file under a folder) to found, with io.file_identity's size,
    modification time and inode, skipping dot-files (DVC edits the .gitignore files beside its
    outs) and __pycache__."""
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            for entry in entries:
                if not (entry.name.startswith(".") or entry.name == "__pycache__"):
                    _walk(entry.path, found)
        return
    try:
        found[path] = list(file_identity(path).values())
    except FileNotFoundError:
        pass


def _dataset_roots() -> list[str]:
    """The dataset folders the merged config names (they may lie outside the repository)."""
    try:
        dataset = yaml.safe_load(SETTINGS.read_text()).get("dataset", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [str(dataset[k]) for k in ("root", "musdb18_path") if dataset.get(k)]


def _config_files(command: list[str]) -> list[str]:
    """The files Snakemake's --configfile (or --configfiles) names in command."""
    files, taking = [], False
    for word in command:
        if word in ("--configfile", "--configfiles"):
            taking = True
        elif word.startswith("-"):
            taking = False
        elif taking:
            files.append(word)
    return files


def snapshot(command: list[str]) -> dict:
    """The state a skip decision compares: the config files the command names and the stat of
    every watched file."""
    config_files = _config_files(command)
    found: dict[str, list[int]] = {}
    for path in (*WATCHED, *config_files, *_dataset_roots()):
        _walk(path, found)
    return {"configfiles": config_files, "files": found}


def _record(phase: str) -> Path:
    return RECORDS / f"{phase}.json"


def covered(phase: str, state: dict) -> tuple[str | None, str]:
    """The phase whose last run left exactly `state` and covers `phase` (None if none), and
    otherwise what differs from the closest record, for the log."""
    why = "no run recorded yet"
    for later in reversed(PHASES[PHASES.index(phase):]):
        try:
            recorded = json.loads(_record(later).read_text())
        except (OSError, ValueError):
            continue
        if recorded == state:
            return later, ""
        if recorded.get("configfiles") != state["configfiles"]:
            why = f"another --configfile than the last run of phase {later!r}"
            continue
        old, new = recorded.get("files", {}), state["files"]
        changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        why = (f"{len(changed)} file(s) changed since the last run of phase {later!r}, e.g. "
               + ", ".join(changed[:3]))
    return None, why


def record(phase: str, state: dict) -> None:
    RECORDS.mkdir(parents=True, exist_ok=True)
    for earlier in PHASES[: PHASES.index(phase) + 1]:
        write_json(_record(earlier), state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dannasep.dvc_phase", description=__doc__.split("\n\n")[0],
        epilog="Used by dvc.yaml (written by workflow/scripts/dvc_yaml.py).")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--done", choices=PHASES,
                      help="the command is a run that brings this phase up to date")
    mode.add_argument("--after", choices=PHASES,
                      help="the command only touches the jobs of this phase (and those before it)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- snakemake ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the Snakemake command after --")
    phase = args.done or args.after
    state = snapshot(command)
    by, why = covered(phase, state)
    if by:
        print(f"dvc_phase: skipped `{' '.join(command[:3])} ...`: no file changed since a run "
              f"brought phase {by!r} up to date ({_record(by)})", file=sys.stderr)
        return 0
    print(f"dvc_phase: running Snakemake: {why}", file=sys.stderr)
    returncode = subprocess.call(command)
    if returncode == 0 and args.done:
        record(args.done, snapshot(command))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
