"""DVC versioning of the pipeline (dvc.yaml, params.yaml, .dvc/config, .dvcignore).

Everything runs in a copy of the repository (never the developer's results/ or .dvc/cache):
- dvc.yaml agrees with Snakemake: for every stage, the jobs its Snakemake command would run in
  a fresh checkout (read from Snakemake's own DAG), minus those of the stages it builds on, are
  that stage's phase; the files the phase writes must be the stage's outs, the files it reads
  from other phases its deps, and the settings file DVC tracks must be Snakemake's own config.
- the round trip on the minimal test config: `dvc exp run` builds everything, a second
  `dvc repro` does nothing, `dvc push` to a local remote, a fresh clone + `dvc pull` restores
  every result byte for byte and Snakemake then has nothing to redo; an experiment on a cheap
  value (`dvc exp run -S` on the blend step) reruns only the stages that use it.
Both are integration tests; the settings script's error message is checked on its own (fast).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEST_CONFIG = ".test/config/config.yaml"
SETTINGS = "results/config.yaml"  # the merged config the `config` stage writes; DVC's params
SYSTEMS = tuple(yaml.safe_load((ROOT / "config/config.yaml").read_text())["models"])
TRAIN_STAGES = {f"train_{s}" for s in SYSTEMS}
SNAKEMAKE_STAGES = {"data", *TRAIN_STAGES, "separate_evaluate", "blend", "report"}
ALL_STAGES = {"config", *SNAKEMAKE_STAGES}
# Every job of the pipeline: the default target and the report rules.
WHOLE_PIPELINE = "snakemake all tables figures provenance --configfile {config}"
integration = pytest.mark.integration
slow = pytest.mark.slow

# Run inside the copy with the venv's Python: reads Snakemake command lines on stdin and writes,
# for each, the jobs Snakemake would run (its DAG after --until/--omit-from) and its config.
DAG_DUMP = r'''
import json, shlex, sys
from snakemake import cli
from snakemake.dag import DAG

class Captured(BaseException):
    """Stops Snakemake once the DAG is final (after --until/--omit-from pruning)."""

captured = {}
original_postprocess = DAG.postprocess

async def capture(self, *args, **kwargs):
    await original_postprocess(self, *args, **kwargs)
    if kwargs.get("check_initial"):
        captured["config"] = dict(self.workflow.config)
        captured["jobs"] = [{"rule": job.rule.name, "input": sorted(map(str, job.input)),
                             "output": sorted(map(str, job.output)),
                             "benchmark": str(job.benchmark) if job.benchmark else None,
                             "shell": job.shellcmd or ""}
                            for job in self.needrun_jobs()]
        raise Captured

DAG.postprocess = capture
result = {}
for line in sys.stdin.read().splitlines():
    captured.clear()
    parser, args = cli.parse_args(shlex.split(line)[1:] + ["--dry-run", "--quiet"])
    try:
        cli.args_to_api(args, parser)
    except Captured:
        result[line] = dict(captured)
    else:
        raise SystemExit(f"Snakemake built no DAG for: {line}")
with open(sys.argv[1], "w") as fh:
    json.dump(result, fh)
'''


# --- helpers -------------------------------------------------------------------------------

def _env(repo: Path) -> dict[str, str]:
    """No global git/DVC config (HOME), the venv first on PATH, the copy's own code."""
    home = repo.parent / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{BIN}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home),
            "PYTHONPATH": str(repo / "src"), "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
            "LANG": "C.UTF-8"}


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{shlex.join(cmd)} failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}"
    return out


def _copy_repo(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files as a fresh git repository (one commit)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and rel != "dvc.lock":  # a developer's lock describes other results
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = _env(dest)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "test@dannasep"],
                ["git", "config", "user.name", "dannasep test"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "copy of the working tree"]):
        _run(cmd, dest, env)
    return dest


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _dvc_stages(repo: Path) -> dict[str, dict]:
    """dvc.yaml as DVC resolves it (vars and params.yaml interpolated)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(repo)) as dvc_repo:
        for stage in dvc_repo.index.stages:
            stages[stage.name] = {
                "cmds": stage.cmd if isinstance(stage.cmd, list) else [stage.cmd],
                "deps": [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                "params": {d.def_path: set(d.params) for d in stage.deps
                           if isinstance(d, ParamsDependency)},
                "outs": [o.def_path for o in stage.outs],
            }
    return stages


def _with_config(cmd: str, config: str) -> str:
    """A stage's command with another config file (the last word of the `config` stage)."""
    words = shlex.split(cmd)
    at = words.index("--configfile") + 1 if "--configfile" in words else len(words) - 1
    words[at] = config
    return shlex.join(words)


def _snakemake_dags(repo: Path, commands: list[str]) -> dict[str, dict]:
    out = repo.parent / "dag.json"
    done = subprocess.run([sys.executable, "-c", DAG_DUMP, str(out)], cwd=repo, env=_env(repo),
                          input="\n".join(commands), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"Snakemake could not build a DAG:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def _snakemake_call(cmd: str, mode: str) -> str:
    """The Snakemake command a stage's call runs through `python -m dannasep.dvc_phase MODE
    PHASE --` (a run: --done, a touch: --after)."""
    words = shlex.split(cmd)
    assert words[:4] == ["python", "-m", "dannasep.dvc_phase", mode] and words[5] == "--", cmd
    assert (mode == "--after") == ("--touch" in words), cmd
    return shlex.join(words[6:])


def _covers(path: str, file: str) -> bool:
    return file == path or file.startswith(path.rstrip("/") + "/")


def _upstream(stages: dict[str, dict], name: str) -> set[str]:
    """The stages whose outs `name` depends on, directly or not."""
    found, todo = set(), [name]
    while todo:
        deps = stages[todo.pop()]["deps"]
        for other, stage in stages.items():
            if other not in found and any(_covers(o, d) or _covers(d, o)
                                          for o in stage["outs"] for d in deps):
                found.add(other)
                todo.append(other)
    return found - {name}


def _written(job: dict) -> list[str]:
    """What a job writes: its outputs, benchmark, and the folder its command names with
    --out-dir (the checkpoint folder of a training job, which Snakemake does not declare so
    that a killed job resumes from its last.pt)."""
    words = shlex.split(job["shell"])
    out_dirs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out-dir"]
    return job["output"] + ([job["benchmark"]] if job["benchmark"] else []) + out_dirs


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _pretrained_exception(config: str, path: str) -> bool:
    """The official X-UMX weights (paper config only) are cached by the data stage in
    resources/ but are no dep of train_xumx: a dvc.yaml dep cannot depend on the config, and a
    dep that is absent under the default config would stop DVC. The weights are pinned by
    their sha256 (`dannasep fetch xumx-weights` refuses another file)."""
    return config == "config/paper.yaml" and path.startswith("resources/pretrained/")


def _file_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file DVC versions: results/ (except git-kept placeholders) and resources/."""
    hashes = {}
    for top in ("results", "resources"):
        for f in sorted((repo / top).rglob("*")):
            if f.is_file() and f.name != ".gitkeep" and "downloads" not in f.parts:
                hashes[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


# --- dvc.yaml and Snakemake agree ----------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    return _copy_repo(tmp_path_factory.mktemp("dvc_sync") / "repo")


@integration
@slow
@pytest.mark.parametrize("config", ["config/config.yaml", TEST_CONFIG, "config/paper.yaml"])
def test_dvc_stages_are_the_snakemake_phases(fresh_copy, config):
    all_stages = _dvc_stages(fresh_copy)
    assert set(all_stages) == ALL_STAGES
    stages = {n: s for n, s in all_stages.items() if n in SNAKEMAKE_STAGES}

    # Snakemake's side: the jobs each stage's calls would run (or touch) in a checkout with no
    # results, and the whole pipeline's.
    runs = {name: _with_config(_snakemake_call(s["cmds"][-1], "--done"), config) for name, s in stages.items()}
    touches = {name: _with_config(_snakemake_call(s["cmds"][0], "--after"), config)
               for name, s in stages.items() if len(s["cmds"]) == 2}
    whole = WHOLE_PIPELINE.format(config=config)
    dags = _snakemake_dags(fresh_copy, sorted({*runs.values(), *touches.values(), whole}))
    key = lambda job: (job["rule"], tuple(job["output"]))  # noqa: E731
    everything = {key(j): j for j in dags[whole]["jobs"] if j["output"]}
    # A stage's phase: the jobs that write into its outs. Every job is in exactly one phase.
    phases = {name: {} for name in stages}
    for k, job in everything.items():
        owners = [name for name, stage in stages.items()
                  if all(any(_covers(o, f) for o in stage["outs"]) for f in _written(job))]
        assert len(owners) == 1, f"{k} writes into the outs of {owners or 'no stage'} ({config})"
        phases[owners[0]][k] = job
    for name in stages:
        assert phases[name], f"stage {name} runs no job of its own under {config}"
        # Its run makes its phase (a stage after `data` runs the whole pipeline: the first one
        # does the work of those after it); its touch, only the phases it builds on.
        ran = {key(j) for j in dags[runs[name]]["jobs"] if j["output"]}
        if name == "data":
            assert ran == set(phases[name]), f"data: its command runs {sorted(ran ^ set(phases[name]))[:5]}"
        else:
            assert ran == set(everything), f"{name}: its command is not the whole pipeline ({config})"
        if name in touches:
            touched = {key(j) for j in dags[touches[name]]["jobs"]}
            upstream = set().union(*(set(phases[u]) for u in _upstream(stages, name)))
            assert touched and touched <= upstream, (
                f"{name}: its --touch reaches jobs outside the phases it builds on: "
                f"{sorted(touched - upstream)[:5]} ({config})")

    producer = {}  # file or folder -> stage whose phase writes it
    for name, phase in phases.items():
        for job in phase.values():
            for f in _written(job):
                producer[f] = name

    for name, stage in stages.items():
        written = {f for f, owner in producer.items() if owner == name}
        outs = stage["outs"]
        # Outs: every file the phase writes, nothing another phase writes, no stale entry.
        unversioned = sorted(f for f in written if not any(_covers(o, f) for o in outs))
        assert not unversioned, (
            f"{name}: files written by the phase but not in its outs ({config}): {unversioned[:5]}")
        assert not [f for f, owner in producer.items() if owner != name
                    and any(_covers(o, f) for o in outs)], f"{name}: outs hold another phase's files"
        stale = [o for o in outs if not any(_covers(o, f) for f in written)]
        assert not stale, f"{name}: outs no job of the phase writes: {stale}"

        # Deps: the code (test_dvc_yaml_is_generated_from_the_declaration), plus every file the
        # phase reads from another phase.
        deps = stage["deps"]
        data_deps = [d for d in deps if d.startswith(("results/", "resources/"))]
        code_read = {f for job in phases[name].values() for f in job["input"] if f.startswith("src/")}
        assert not [f for f in code_read if not any(_covers(d, f) for d in deps)], (
            f"{name}: a rule's code inputs are not the stage's code deps")
        reads = {f for job in phases[name].values() for f in job["input"]
                 if f not in written and not f.startswith("src/")}
        missing = sorted(f for f in reads if not any(_covers(d, f) for d in data_deps)
                         and not _pretrained_exception(config, f))
        assert not missing, (
            f"{name}: files the phase reads but not in its deps ({config}): {missing[:5]}")
        # Each data dep is another stage's out, from a stage the phase really reads from.
        feeding = {producer[f] for f in reads if f in producer}
        for dep in data_deps:
            owners = {owner for f, owner in producer.items() if _covers(dep, f) or _covers(f, dep)}
            assert owners and owners <= feeding, (
                f"{name}: dep {dep} comes from {owners}, not from {feeding}")

        # Every Snakemake call: through the skip wrapper, the selected config, no mtime trigger.
        for at, cmd in enumerate(stage["cmds"]):
            words = shlex.split(_snakemake_call(cmd, "--after" if at < len(stage["cmds"]) - 1 else "--done"))
            assert words[0] == "snakemake" and "--configfile" in words
            after = words[words.index("--rerun-triggers") + 1:]
            end = next((i for i, w in enumerate(after) if w.startswith("-")), len(after))
            triggers = set(after[:end])
            assert triggers == {"code", "input", "params", "software-env"}, cmd

    # The settings DVC tracks are Snakemake's own config, and hold every tracked key.
    settings_cmd = shlex.split(_with_config(all_stages["config"]["cmds"][0], config))
    subprocess.run(settings_cmd, cwd=fresh_copy, env=_env(fresh_copy), check=True, timeout=60)
    settings = yaml.safe_load((fresh_copy / SETTINGS).read_text())
    assert settings == dags[whole]["config"]
    assert all_stages["config"]["outs"] == [SETTINGS]
    for name, stage in stages.items():
        assert set(stage["params"]) == {SETTINGS}, f"{name} reads params from {set(stage['params'])}"
        for dotted in stage["params"][SETTINGS]:
            _lookup(settings, dotted)  # KeyError: DVC would stop on a missing parameter


@integration
@slow
def test_each_training_stage_tracks_only_its_own_model(fresh_copy):
    stages = _dvc_stages(fresh_copy)
    for system in SYSTEMS:
        keys = stages[f"train_{system}"]["params"][SETTINGS]
        models = {k for k in keys if k.startswith("models")}
        assert models and all(k.startswith(f"models.{system}.") for k in models), keys
        # The data stage stops before every training rule.
        assert f"train_{system}" in shlex.split(_snakemake_call(stages["data"]["cmds"][-1], "--done"))


def test_dvc_yaml_is_generated_from_the_declaration():
    out = subprocess.run([sys.executable, str(ROOT / "workflow/scripts/dvc_yaml.py"), "--check"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_code_deps_follow_imports_and_keep_models_apart():
    from dannasep.provenance.code_deps import stage_code

    xumx = stage_code("train", archs=["xumx"])
    unet = stage_code("train", archs=["unet"])
    assert "src/dannasep/models/xumx.py" in xumx and "src/dannasep/models/unet.py" not in xumx
    assert "src/dannasep/models/unet.py" in unet and "src/dannasep/models/xumx.py" not in unet
    # followed through function-level imports: the trainer validates with separate_array
    assert "src/dannasep/separation/inference.py" in xumx and "src/dannasep/losses.py" in xumx
    report = stage_code("report")
    assert "src/dannasep/report/figures.py" in report and "src/dannasep/report/figures.py" not in xumx
    assert not any(f.startswith("src/dannasep/training/") for f in report)


def test_code_deps_statement_cache_is_keyed_by_content(tmp_path, monkeypatch):
    """The parsed import statements kept across processes: reused for the same text, parsed again
    after an edit (even with the same size and mtime), and a broken cache file is only a miss."""
    import os

    from dannasep.provenance import code_deps

    src = tmp_path / "src"
    (src / "dannasep" / "sub").mkdir(parents=True)
    for init in (src / "dannasep" / "__init__.py", src / "dannasep" / "sub" / "__init__.py"):
        init.write_text("")
    (src / "dannasep" / "a.py").write_text("import os\nfrom .sub import b\n")
    (src / "dannasep" / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (src / "dannasep" / "c.py").write_text("X = 1\n")
    parsed = []
    real_parse = code_deps._parse_statements
    monkeypatch.setattr(code_deps, "_parse_statements", lambda text, name: parsed.append(name) or real_parse(text, name))

    def closure(cache_file):
        code_deps._imported.cache_clear()
        monkeypatch.setattr(code_deps, "_STATEMENTS", code_deps._StatementsCache(cache_file))  # a new process
        return {str(p.relative_to(src)) for p in code_deps.import_closure(["dannasep.a"], src)}

    cache = tmp_path / "cache" / "statements.json"
    everything = {"dannasep/__init__.py", "dannasep/a.py", "dannasep/sub/__init__.py", "dannasep/sub/b.py", "dannasep/c.py"}
    # four texts: the two empty __init__.py files are one
    assert closure(cache) == everything and len(parsed) == 4 and cache.is_file()
    parsed.clear()
    assert closure(cache) == everything and parsed == []  # nothing parsed again
    b = src / "dannasep" / "sub" / "b.py"
    stat = b.stat()
    b.write_text("def f():\n    from .. import a\n")  # same size; put the old mtime back
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert closure(cache) == everything - {"dannasep/c.py"} and parsed == [str(b)]
    cache.write_text("{not json")
    parsed.clear()
    assert closure(cache) == everything - {"dannasep/c.py"} and len(parsed) == 3


def test_code_deps_cover_what_a_training_really_imports(tmp_path):
    """Static closure vs. the modules a real (tiny) training run loads."""
    from conftest import make_musdb_tree
    from dannasep.provenance.code_deps import stage_code

    root = make_musdb_tree(tmp_path / "data", seconds=1.5)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"xumx": {
        "arch": "xumx", "loss": "multidomain",
        "kwargs": {"n_fft": 512, "hop_length": 128, "max_bin": 100, "hidden_size": 8, "nb_layers": 1},
        "data": {"samples_per_track": 1, "segment_seconds": 0.5},
        "train": {"epochs": 1, "max_steps": 1, "batch_size": 1, "loss_precision": "float32",
                  "valid_tracks": 1}}}}))
    script = (
        "import sys; from dannasep import cli\n"
        f"rc = cli.main(['train', '--config', {str(cfg)!r}, '--system', 'xumx', '--root', {str(root)!r},"
        f" '--out-dir', {str(tmp_path / 'ck')!r}, '--pointer', {str(tmp_path / 'p.json')!r},"
        f" '--curve', {str(tmp_path / 'c.csv')!r}, '--no-progress'])\n"
        "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items())"
        " if n.split('.')[0] == 'dannasep' and getattr(m, '__file__', None)))\n"
        "sys.exit(rc)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**_env(ROOT), "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = {str(Path(f).resolve().relative_to(ROOT)) for f in out.stdout.split() if f.endswith(".py")}
    declared = set(stage_code("train", archs=["xumx"]))
    assert loaded and loaded <= declared, sorted(loaded - declared)


def _stale_stages(repo: Path, env: dict) -> set[str]:
    return set(json.loads(_run(["dvc", "status", "--json"], repo, env).stdout))


@slow
def test_an_edit_reruns_only_the_stages_that_run_the_edited_code(tmp_path):
    """dvc status after editing one module, on a lock recorded over placeholder outputs (what a
    finished run leaves: DVC compares deps, so the outputs' content does not matter here)."""
    repo = _copy_repo(tmp_path / "repo")
    env = _env(repo)
    stages = _dvc_stages(repo)
    _run(shlex.split(stages["config"]["cmds"][0]), repo, env)
    for stage in stages.values():
        for out in stage["outs"]:
            path = repo / out
            if not path.exists():
                is_dir = not Path(out).suffix or out in ("resources",)
                target = path / "placeholder" if is_dir else path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(out)
    _run(["dvc", "commit", "-f", "-q"], repo, env, timeout=300)
    assert _stale_stages(repo, env) == set()

    figures = repo / "src/dannasep/report/figures.py"
    original = figures.read_text()
    figures.write_text(original + "\n# an unrelated edit\n")
    assert _stale_stages(repo, env) == {"report"}
    figures.write_text(original)
    assert _stale_stages(repo, env) == set()

    # settings: job sizes (time limit, memory, threads) retrain nothing; a learning rate does
    config = repo / "config/config.yaml"
    shipped = config.read_text()
    for extra, expected in (("{train: {runtime_min: 7, mem_mb: 999, threads: 1}, separate: {mem_mb: 777}}", set()),
                            ("{train: {lr: 0.0123}}", {"train_xumx"})):
        edited = yaml.safe_load(shipped)
        for key, value in yaml.safe_load(extra).items():
            edited["models"]["xumx"].setdefault(key, {}).update(value)
        config.write_text(yaml.safe_dump(edited, sort_keys=False))
        _run(shlex.split(stages["config"]["cmds"][0]), repo, env)
        assert _stale_stages(repo, env) == {"config"} | expected, extra
    config.write_text(shipped)
    _run(shlex.split(stages["config"]["cmds"][0]), repo, env)
    assert _stale_stages(repo, env) == set()

    model = repo / "src/dannasep/models/xumx.py"
    model.write_text(model.read_text() + "\n# an edit to the X-UMX model\n")
    xumx_stages = {f"train_{s}" for s in SYSTEMS
                   if yaml.safe_load((repo / "config/config.yaml").read_text())["models"][s]["arch"] == "xumx"}
    assert xumx_stages == {"train_xumx_baseline", "train_xumx"}
    assert _stale_stages(repo, env) == xumx_stages | {"separate_evaluate", "report"}


def test_settings_script_names_a_missing_config(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "workflow/scripts/effective_config.py"),
                          str(tmp_path / "config.yaml"), "config/no-such.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "config/no-such.yaml: config file not found" in out.stderr
    assert not (tmp_path / "config.yaml").exists()


# --- the round trip ------------------------------------------------------------------------

@integration
@slow
def test_repro_push_pull_and_experiment_round_trip(tmp_path):
    repo = _copy_repo(tmp_path / "repo")
    env = _env(repo)
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], repo, env)

    # The whole minimal pipeline through DVC, pointed at the test config by a parameter.
    built = _run(["dvc", "exp", "run", "-S", f"snakemake.configfile={TEST_CONFIG}"], repo, env,
                 timeout=1500)
    assert _stages_run(built.stdout) == ALL_STAGES, built.stdout[-3000:]
    # The first training stage's Snakemake call ran the whole pipeline; every stage after it
    # found nothing changed and skipped its calls (no DVC rewrite of an out in between).
    skipped = (built.stdout + built.stderr).count("dvc_phase: skipped `snakemake all ")
    assert skipped == len(TRAIN_STAGES) - 1 + len({"separate_evaluate", "blend", "report"}), skipped
    # DVC reads the score summary as metrics and the training curves as plots.
    metrics = json.loads(_run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    shown = metrics[""]["data"]["results/metrics.json"]["data"]
    assert shown == json.loads((repo / "results/metrics.json").read_text())
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], repo, env).stdout)["data"]
    sdr_plot = next(v for k, v in plots.items() if k.startswith("validation SDR"))
    rows = sdr_plot[0]["content"]["data"]["values"]
    plotted = {(r["filename"], r["epoch"]): r["valid_sdr_avg"] for r in rows}
    expected = {(curve.name, r["epoch"]): r["valid_sdr_avg"]
                for curve in sorted((repo / "results/training").glob("*.csv"))
                for r in csv.DictReader(curve.open())}
    assert len(expected) >= len(SYSTEMS) and plotted == expected

    # A second repro does nothing, quickly.
    start = time.monotonic()
    again = _run(["dvc", "repro"], repo, env)
    assert time.monotonic() - start < 10
    assert not _stages_run(again.stdout), again.stdout
    assert json.loads(_run(["dvc", "status", "--json"], repo, env).stdout) == {}

    # Commit what git keeps (dvc.lock, params.yaml, the uncached metrics) and push the rest.
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "add", "-f", "results/metrics.json"], repo, env)
    _run(["git", "commit", "-qm", "minimal run"], repo, env)
    _run(["dvc", "push"], repo, env, timeout=300)
    assert any(f.is_file() for f in remote.rglob("*"))
    produced = _file_hashes(repo)
    assert any(p.startswith("results/checkpoints/") for p in produced)

    # A fresh clone (no cache, no results, no Snakemake metadata) gets everything back.
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    clone_env = _env(clone)
    _run(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], clone, clone_env)
    _run(["dvc", "pull"], clone, clone_env, timeout=300)
    assert _file_hashes(clone) == produced
    assert json.loads(_run(["dvc", "status", "--json"], clone, clone_env).stdout) == {}

    # DVC restores contents, not modification times: one `snakemake --touch` (no job runs)
    # aligns them with the DAG, and then Snakemake has nothing to redo.
    smk = ["snakemake", "--cores", "1", "--configfile", TEST_CONFIG]
    _run([*smk, "--touch"], clone, clone_env)
    dry = _run([*smk, "--dry-run"], clone, clone_env)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    assert _file_hashes(clone) == produced

    # An experiment on a cheap setting reruns exactly the stages that use it.
    exp = _run(["dvc", "exp", "run", "-S", f"{TEST_CONFIG}:blend.step=0.2"], repo, env, timeout=900)
    assert _stages_run(exp.stdout) == {"config", "blend", "report"}, exp.stdout[-3000:]
    after = _file_hashes(repo)
    assert after["results/blend/grid.npz"] != produced["results/blend/grid.npz"]
    kept = [p for p in produced if p.startswith(("results/checkpoints/", "results/separations/xumx/"))]
    assert kept and all(after[p] == produced[p] for p in kept)
