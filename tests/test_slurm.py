"""SLURM through the ./slurm Snakemake profile.

Without a cluster: what the profile makes of every rule (partition, sbatch options) and the sbatch
call the executor plugin builds from it, as the plugin's own code builds it.
With a real one (marked slurm; needs root, installs Debian's slurm-wlm and munge when missing):
workflow/scripts/slurm_cluster.sh starts a single-node cluster on 127.0.0.1 with a cpu and a gpu
partition, and the tests run `snakemake --profile slurm` on the minimal test config in a copy of
the repository: the whole pipeline, a job failing at run time, and a training job preempted with
SIGUSR1 that requeues itself and resumes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import copy_repo
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTER = ROOT / "workflow" / "scripts" / "slurm_cluster.sh"
TEST_CONFIG = ".test/config/config.yaml"
MARKER = "# written by dannasep workflow/scripts/slurm_cluster.sh"
# For the test cluster: squeue (no accounting daemon), fast polling (the profile waits 20 s
# before the first check), no account, and every sbatch log kept as evidence.
CLUSTER_OPTIONS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                   "--seconds-between-status-checks", "2", "--slurm-no-account", "--slurm-keep-successful-logs"]


def _overlay(repo: Path, name: str, models: dict) -> str:
    """A config file layered on the test config (Snakemake merges configfiles key by key)."""
    path = repo / ".test" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"models": {s: {"train": t} for s, t in models.items()}}))
    return str(path.relative_to(repo))


def _env(repo: Path) -> dict:
    # sbatch --export=ALL hands this environment to the jobs: the venv's `dannasep` on PATH.
    return {"PATH": f"{BIN}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(repo), "OMP_NUM_THREADS": "1",
            "LANG": "C.UTF-8"}


def _snakemake_cmd(targets: list[str], overlay: str, *extra: str) -> list[str]:
    # Targets first: --configfile takes every following word.
    return [str(BIN / "snakemake"), *targets, "--profile", "slurm", *extra, "--configfile", TEST_CONFIG, overlay]


def _parse_jobs(output: str) -> list[dict]:
    """The jobs Snakemake printed: rule, local or not, resources, threads, shell command."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        head = re.match(r"(local)?rule (\w+):\n", block)
        if not head:
            continue
        res = re.search(r"^ +resources: (.*)$", block, re.M)
        threads = re.search(r"^ +threads: (\d+)$", block, re.M)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.append({"rule": head.group(2), "local": bool(head.group(1)), "threads": int(threads.group(1)) if threads else 1,
                     "resources": {k: int(v) if v.isdigit() else v for k, v in resources.items()},
                     "shell": shell.group(1) if shell else None})
    return jobs


# ---------------------------------------------------------------------------------------------
# The profile, without a cluster

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Dry run through the profile with one 1-GPU system and a 4-GPU U-Net (2 threads per GPU)."""
    repo = copy_repo(tmp_path_factory.mktemp("slurm-plan") / "repo")
    overlay = _overlay(repo, "gpus", {"xumx": {"gpus": 1}, "unet": {"gpus": 4, "threads": 2}})
    # --cores: a dry run caps threads at the local cores; sbatch gets the rule's own.
    out = subprocess.run(_snakemake_cmd([], overlay, "-n", "--forceall", "--cores", "64"), cwd=repo, env=_env(repo),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = _parse_jobs(out.stdout)
    assert jobs, out.stdout[-3000:]
    return {j["rule"]: j for j in jobs}


def test_profile_sends_training_to_the_gpu_partition_and_all_else_to_cpu(planned):
    for rule, job in planned.items():
        if job["shell"] == "None":  # `all`: nothing to run, never submitted
            continue
        res = job["resources"]
        assert res["runtime"] > 0 and res["mem_mb"] > 0, (rule, res)
        if rule.startswith("train_"):
            assert res["slurm_partition"] == "gpu", rule
            assert "--signal=USR1@120" in res["slurm_extra"].split()  # --requeue: the plugin's setting
        else:
            assert res["slurm_partition"] == "cpu", rule
            # separate declares gpu = models.<system>.separate.gpus (0 here): the plugin adds
            # --gpus only for a nonzero count.
            assert "slurm_extra" not in res and not res.get("gpu"), rule
            assert "--gpus" not in _sbatch_call(job), rule


def _sbatch_call(job: dict) -> str:
    """The sbatch command line the executor plugin builds for a planned job (its own functions)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    fake = SimpleNamespace(resources=Resources(job["resources"]), threads=job["threads"], name=job["rule"],
                           wildcards={}, is_group=lambda: False)
    params = {"run_uuid": "run", "slurm_logfile": "x.log", "comment_str": "c", "account": "",
              "partition": f" -p {job['resources']['slurm_partition']}", "workdir": "/w"}
    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    settings = SimpleNamespace(requeue=profile["slurm-requeue"], no_requeue=False, qos=None, reservation=None)
    return get_submit_command(fake, params, settings=settings) + set_gres_string(fake)


def _word_after(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


def test_multi_gpu_training_is_one_job_with_one_task_per_gpu(planned):
    words = shlex.split(_sbatch_call(planned["train_unet"]))
    for flag in ("--gpus=4", "--ntasks-per-gpu=1", "--ntasks=4", "--cpus-per-task=2", "--requeue", "--signal=USR1@120"):
        assert flag in words, (flag, words)
    assert _word_after(words, "-p") == "gpu"


def test_single_gpu_and_cpu_jobs_ask_for_one_task(planned):
    one_gpu = shlex.split(_sbatch_call(planned["train_xumx"]))
    assert "--gpus=1" in one_gpu and "--ntasks-per-gpu=1" in one_gpu
    assert not any(w.startswith("--ntasks=") for w in one_gpu)
    cpu_train = shlex.split(_sbatch_call(planned["train_demucs"]))
    assert "--ntasks=1" in cpu_train and not any(w.startswith("--gpus") for w in cpu_train)
    evaluate = shlex.split(_sbatch_call(planned["evaluate"]))
    assert "--ntasks=1" in evaluate and _word_after(evaluate, "-p") == "cpu"


@pytest.mark.parametrize("env, unet, xumx", [
    # the job's batch step, where the plugin runs a training job's command as is (`mpi` resource)
    ({"SLURM_JOB_ID": "7"}, "srun --ntasks=4 --cpus-per-task=2 --kill-on-bad-exit=1",
     "srun --ntasks=1 --cpus-per-task=1 --kill-on-bad-exit=1"),
    # already inside a job step (srun would wait forever for resources the step holds)
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}, "torchrun --standalone --nproc-per-node=4 --no-python", ""),
    ({}, "torchrun --standalone --nproc-per-node=4 --no-python", ""),
])
def test_training_launcher_starts_one_process_per_gpu(planned, env, unet, xumx):
    for rule, expected in (("train_unet", unet), ("train_xumx", xumx)):
        prefix = planned[rule]["shell"].split("dannasep train")[0]
        out = subprocess.run(["bash", "-c", f"echo {prefix}"], env={"PATH": "/usr/bin:/bin", **env},
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, (rule, env, out.stdout)


# ---------------------------------------------------------------------------------------------
# A real cluster

def _skip_unless_we_may_run_a_cluster():
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the SLURM integration test runs as root (it writes /etc/slurm/slurm.conf)")
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and not conf.read_text().startswith(MARKER):
        pytest.skip(f"{conf} belongs to a real SLURM installation; not replacing it")
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        pytest.skip("a slurmctld is already running on this machine")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd on 127.0.0.1, stopped at the end even when a test fails."""
    _skip_unless_we_may_run_a_cluster()
    install = subprocess.run(["bash", str(ROOT / "workflow/scripts/install_system_packages.sh"), "slurm-wlm", "munge"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, "could not install slurm-wlm and munge:\n" + install.stderr
    state = tmp_path_factory.mktemp("slurm-cluster") / "state with a space"  # paths are quoted throughout
    try:
        start = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, text=True, timeout=120)


def test_the_executor_plugins_are_the_versions_the_profile_was_tested_with():
    """train.smk's one-process jobs say mpi=0 so that the plugin runs their command without its
    own `srun -n1` around it (srun-in-srun would hide SIGUSR1 from the trainer): that relies on
    how these plugin versions read the `mpi` resource. Another version needs this file's SLURM
    integration tests run against it before the pins (and this test) change."""
    import importlib.metadata as md

    tested = {"snakemake-executor-plugin-slurm": "2.8.0", "snakemake-executor-plugin-slurm-jobstep": "0.6.1"}
    assert {name: md.version(name) for name in tested} == tested
    profile = (ROOT / "slurm" / "config.yaml").read_text()
    assert "snakemake-executor-plugin-slurm 2.8.0" in profile and "-jobstep 0.6.1" in profile


def test_stop_kills_only_the_daemons_it_started(tmp_path):
    """Stale pid files naming other processes: `stop` leaves those processes alone."""
    state = tmp_path / "stale state"
    (state / "munge").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            (state / name).write_text(f"{bystander.pid}\n")
        out = subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert bystander.poll() is None, "stop killed a process it did not start"
        assert "which is not slurmd; not killing it" in out.stderr
    finally:
        bystander.kill()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("slurm-run") / "repo")


def _run(repo: Path, cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Run to the end within `timeout` s (then kill its process group and fail): rc, output, seconds."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake still running after {timeout} s:\n{out[-5000:]}")
    return proc.returncode, out, time.monotonic() - t0


def _slurm_jobs() -> dict[str, dict]:
    """Every job slurmctld remembers (MinJobAge=600 s): id -> state, partition, comment."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%P|%k"], capture_output=True, text=True,
                         check=True).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, state, partition, comment = line.split("|", 3)
        jobs[job_id] = {"state": state, "partition": partition, "comment": comment.strip()}
    return jobs


def _scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


def _submitted(output: str) -> dict[str, str]:
    """SLURM job id -> its sbatch log, from Snakemake's 'has been submitted' lines."""
    return dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.$", output, re.M))


def _checkpoint(repo: Path, system: str) -> dict:
    import torch

    pointer = json.loads((repo / f"results/checkpoints/{system}.json").read_text())
    return torch.load(repo / pointer["checkpoint"], map_location="cpu", weights_only=True)


@pytest.mark.slurm
@pytest.mark.integration
@pytest.mark.slow
def test_pipeline_runs_through_sbatch_with_the_profile(slurm_cluster, repo):
    overlay = _overlay(repo, "slurm_gpus", {"xumx": {"gpus": 1}, "unet": {"gpus": 2}})
    rc, out, seconds = _run(repo, _snakemake_cmd([], overlay, *CLUSTER_OPTIONS), timeout=1200)
    assert rc == 0, out[-6000:]
    print(f"pipeline on SLURM: {seconds:.0f} s")

    jobs = _parse_jobs(out)
    assert {j["rule"] for j in jobs if j["local"]} == {"all"}
    remote = [j for j in jobs if not j["local"]]
    submitted = _submitted(out)
    assert len(submitted) == len(remote) >= 20, (len(submitted), len(remote))
    slurm = _slurm_jobs()
    by_rule = {}
    for job_id, log in submitted.items():
        job = slurm[job_id]
        assert job["state"] == "COMPLETED", (job_id, job)
        assert Path(log).is_file(), log
        rule = re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["comment"]).group(1)
        assert job["partition"] == ("gpu" if rule.startswith("train_") else "cpu"), (rule, job)
        by_rule.setdefault(rule, []).append(job_id)
    assert {r for r in by_rule} == {j["rule"] for j in remote}

    # The GPU requests reached SLURM; the 2-GPU U-Net ran as 2 srun tasks forming one DDP group.
    assert re.search(r"TresPerJob=gres:gpu:1\b", _scontrol(by_rule["train_xumx"][0]))
    unet = _scontrol(by_rule["train_unet"][0])
    assert re.search(r"TresPerJob=gres:gpu:2\b", unet) and re.search(r"NumTasks=2\b", unet), unet
    assert _checkpoint(repo, "unet")["training"]["world_size"] == 2
    assert _checkpoint(repo, "xumx")["training"]["world_size"] == 1

    results = repo / "results"
    assert (results / "provenance.json").is_file()
    for system in ("xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs", "dannasep", "dannasep_paper_weights"):
        assert len(list((results / "scores" / system / "test").glob("*.json"))) == 1, system


@pytest.mark.slurm
@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_job_fails_the_run_and_shows_its_log(slurm_cluster, repo):
    # Valid config, but a learning rate of 1e30 makes the loss NaN at the first optimizer step:
    # fails at run time, in the job.
    overlay = _overlay(repo, "slurm_bad", {"demucs_baseline": {"lr": 1.0e30}})
    rc, out, seconds = _run(repo, _snakemake_cmd(["results/checkpoints/demucs_baseline.json"], overlay, *CLUSTER_OPTIONS),
                            timeout=420)
    assert rc != 0
    assert seconds < 300, seconds
    assert "Error in rule train_demucs_baseline" in out
    assert "Logfile logs/train/demucs_baseline.log:" in out
    assert "demucs_baseline: loss is nan at step 1; lower the lr" in out  # the log's content, not only its path
    job_id = next(j for j, log in _submitted(out).items() if "rule_train_demucs_baseline" in log)
    assert _slurm_jobs()[job_id]["state"] == "FAILED"
    assert f".snakemake/slurm_logs/rule_train_demucs_baseline/{job_id}.log" in out


def _wait(predicate, timeout: float, proc: subprocess.Popen, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-5000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _start_now(job_id: str) -> bool:
    """Move a pending job's begin time to now; True once it left the queue."""
    if "JobState=PENDING" not in _scontrol(job_id):
        return True
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
    time.sleep(1)
    return False


@pytest.mark.slurm
@pytest.mark.integration
@pytest.mark.slow
def test_preempted_training_requeues_itself_and_resumes(slurm_cluster, repo):
    """SIGUSR1 to the job's steps, as --signal=USR1@120 sends it before the time limit."""
    system, steps = "xumx_baseline", 40
    overlay = _overlay(repo, "slurm_long", {system: {"gpus": 1, "epochs": 1000, "max_steps": steps,
                                                     "valid_every": 1000, "checkpoint_every": 2}})
    shutil.rmtree(repo / "results/checkpoints" / system, ignore_errors=True)
    state = repo / "results/checkpoints" / system / "last.pt"
    proc = subprocess.Popen(_snakemake_cmd([f"results/checkpoints/{system}.json"], overlay, *CLUSTER_OPTIONS), cwd=repo,
                            env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait(state.is_file, 300, proc, "the first saved training state")
        job_id = next(j for j, job in _slurm_jobs().items()
                      if job["comment"] == f"rule_train_{system}" and job["state"] == "RUNNING")
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        _wait(lambda: re.search(r"Restarts=1\b", _scontrol(job_id)), 60, proc, "the job to requeue")
        trainer_log = (repo / f"logs/train/{system}.log").read_text()
        assert f"requeueing SLURM job {job_id}" in trainer_log, trainer_log
        # Only the trainer's job step got the signal: until SLURM killed the job to requeue it,
        # Snakemake in the batch step saw no failure (with Snakemake in the signalled step, it
        # dies first: "task 0: User defined signal 1", "Error in rule").
        slurm_log = (repo / f".snakemake/slurm_logs/rule_train_{system}/{job_id}.log").read_text()
        before_requeue = slurm_log.split("DUE TO JOB REQUEUE")[0]
        assert "DUE TO JOB REQUEUE" in slurm_log, slurm_log
        assert "Error in rule" not in before_requeue and "User defined signal" not in before_requeue, slurm_log
        # SLURM holds a requeued job for 2 minutes (Reason=BeginTime): start it now.
        _wait(lambda: "JobState=PENDING" in _scontrol(job_id), 60, proc, "the requeued job to be pending")
        _wait(lambda: _start_now(job_id), 60, proc, "the requeued job to start")
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-6000:]
    resumed = re.search(rf"resuming {system} from .*step (\d+)", (repo / f"logs/train/{system}.log").read_text())
    assert resumed and int(resumed.group(1)) >= 2
    assert _checkpoint(repo, system)["training"]["steps"] == steps
    assert _slurm_jobs()[job_id]["state"] == "COMPLETED"
