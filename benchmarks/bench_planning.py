"""Planning the paper DAG: `snakemake -n --configfile config/paper.yaml` against Snakemake alone.

Issue 14.3 asks for the dry run of the paper config (every system, 50 test and 14 validation
tracks, about 1,170 jobs) under 5 s on 2 cores. Most of that time is Snakemake's own: importing
itself and its plugins, creating each job, and printing it. To show what this workflow adds, the
same run times a bare workflow of the same shape, written here: the same rules with the same
number of jobs, each job with as many input and output files as ours, and nothing else (no
params, resources, logs or functions), so what it costs is Snakemake's floor for this DAG.
`--baseline REV` also times the workflow at another commit (a git worktree), in the same run.
The variants take turns, so a change in the machine's speed reaches them all alike.

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_planning.py --help
Writes benchmarks/out/bench_planning.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT_DIR, markdown_table, save_results
from dannasep.config import effective_config
from dannasep.data.tracks import TEST_TRACKS, VALID_TRACKS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WAVS = ["drums", "bass", "other", "vocals"]


def dag_shape(configfile: str) -> dict:
    """Systems, blend models and track counts of the config, as common.smk derives them."""
    cfg = effective_config([configfile], ROOT)
    ds = cfg["dataset"]
    generated = ds[ds["kind"]] if ds["kind"] in ("synthetic", "rendered") else None

    def count(section: str) -> int:
        test = cfg[section]["subset"] == "test"
        names = TEST_TRACKS if test else VALID_TRACKS
        if generated:
            names = names[: generated["test_tracks" if test else "valid_tracks"]]
        return len(names[: cfg[section]["tracks"]] if cfg[section]["tracks"] else names)

    systems = list(cfg["models"])
    blend = [m for m in cfg["blend"]["models"] if m in systems]
    blends = (["dannasep", "dannasep_paper_weights"] if sorted(blend) == ["demucs", "unet", "xumx"]
              else ["dannasep"]) if len(blend) == len(cfg["blend"]["models"]) else []
    return {"systems": systems, "blend_models": blend, "blends": blends,
            "eval_tracks": count("evaluation"), "blend_tracks": count("blend")}


def bare_snakefile(shape: dict) -> str:
    """A workflow with this project's DAG shape and nothing but inputs, outputs and `true`."""
    return f'''
SYSTEMS = {shape["systems"]!r}
BLEND = {shape["blend_models"]!r}
BLENDS = {shape["blends"]!r}
EVAL = [f"e{{i:03d}}" for i in range({shape["eval_tracks"]})]
VALID = [f"v{{i:03d}}" for i in range({shape["blend_tracks"]})]
ALL = SYSTEMS + BLENDS
WAVS = {WAVS!r}


def sep(system, track):
    return [f"sep/{{system}}/{{track}}/{{s}}.wav" for s in WAVS] + [f"sep/{{system}}/{{track}}/prov.json"]


wildcard_constraints:
    track="[^/]+",


rule all:
    input: "manifest", expand("ckpt/{{s}}.json", s=SYSTEMS), "prov.json", "tables/results.html"

rule data:
    output: "manifest"
    shell: "true"

for _s in SYSTEMS:
    rule:
        name: f"train_{{_s}}"
        input: "manifest"
        output: f"ckpt/{{_s}}.json", f"curve/{{_s}}.csv"
        shell: "true"

rule separate:
    input: "ckpt/{{system}}.json", "manifest"
    output: sep("{{system}}", "{{track}}")
    wildcard_constraints: system="|".join(SYSTEMS)
    shell: "true"

rule blend_stats:
    input: [f for m in BLEND for f in sep(m, "{{track}}")], "manifest"
    output: "stats/{{track}}.npz"
    shell: "true"

rule blend_search:
    input: expand("stats/{{t}}.npz", t=VALID)
    output: "weights.yaml", "grid.npz"
    shell: "true"

rule blend_apply:
    input: [f for m in BLEND for f in sep(m, "{{track}}")], "weights.yaml"
    output: sep("{{blend}}", "{{track}}")
    wildcard_constraints: blend="|".join(BLENDS) or "none"
    shell: "true"

rule evaluate:
    input: sep("{{system}}", "{{track}}"), "manifest"
    output: "scores/{{system}}/{{track}}.json"
    shell: "true"

rule tables:
    input: expand("scores/{{s}}/{{t}}.json", s=ALL, t=EVAL), expand("ckpt/{{s}}.json", s=SYSTEMS)
    output: "tables/results.html", "tables/inputs.json"
    shell: "true"

rule provenance:
    input: expand("scores/{{s}}/{{t}}.json", s=ALL, t=EVAL), expand("sep/{{s}}/{{t}}/prov.json", s=ALL, t=EVAL), "tables/inputs.json"
    output: "prov.json"
    shell: "true"
'''


def time_dry_run(cwd: Path, args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run([SNAKEMAKE, "-n", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"snakemake -n {' '.join(args)} in {cwd} failed:\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def job_count(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("total"):
            return int(line.split()[-1])
    raise SystemExit("no job count in the dry run's output")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/paper.yaml", help="the config to plan")
    parser.add_argument("--runs", type=int, default=7, help="dry runs per variant (default 7)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also time the workflow at this git revision (e.g. HEAD~3)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    shape = dag_shape(args.configfile)
    with tempfile.TemporaryDirectory(prefix="bench_planning_") as tmp:
        tmp = Path(tmp)
        bare = tmp / "bare"
        bare.mkdir()
        (bare / "Snakefile").write_text(bare_snakefile(shape))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        variants = {"this workflow": (ROOT, ["--configfile", args.configfile], env),
                    "Snakemake alone, same DAG shape": (bare, [], env)}
        if args.baseline:
            tree = tmp / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=ROOT,
                           check=True, capture_output=True)
            variants[f"this workflow at {args.baseline}"] = (
                tree, ["--configfile", args.configfile], {**os.environ, "PYTHONPATH": str(tree / "src")})
        try:
            times = {name: [] for name in variants}
            jobs = {}
            for name, (cwd, extra, run_env) in variants.items():  # warm-up: caches, .snakemake/
                jobs[name] = job_count(time_dry_run(cwd, extra, run_env)[1])
            for run in range(args.runs):
                for name, (cwd, extra, run_env) in variants.items():
                    times[name].append(time_dry_run(cwd, extra, run_env)[0])
                print(f"run {run + 1}/{args.runs}: " + ", ".join(
                    f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "baseline")], cwd=ROOT,
                               capture_output=True)
    floor = statistics.median(times["Snakemake alone, same DAG shape"])
    rows, result = [], {"configfile": args.configfile, "shape": shape, "runs": args.runs,
                        "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0], "variants": {}}
    for name, values in times.items():
        median = statistics.median(values)
        result["variants"][name] = {"jobs": jobs[name], "seconds": values, "median": median}
        rows.append([name, jobs[name], f"{min(values):.2f}", f"{median:.2f}", f"{max(values):.2f}",
                     f"{median / floor:.2f}x"])
    lines = [f"`snakemake -n --configfile {args.configfile}`, {args.runs} runs a variant, taking turns "
             f"({os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f} at the end):", ""]
    lines += markdown_table(["variant", "jobs", "min s", "median s", "max s", "median / alone"], rows,
                            [False, True, True, True, True, True])
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    save_results(args.out_dir, "bench_planning", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
