# Training: one rule per system (train_xumx_baseline, train_xumx, train_unet, ...). Each writes
# a self-describing checkpoint results/checkpoints/<system>/<system>-<hash>.pt, a pointer
# results/checkpoints/<system>.json naming it, and the training curve CSV. A killed job re-run
# resumes from results/checkpoints/<system>/last.pt.


def _train_resources(system):
    """Generic resources; the SLURM profile (slurm/config.yaml) maps them to sbatch options.

    On SLURM, training runs in a job step of its own, started by _launcher's srun, with the
    job's Snakemake outside it: then SIGUSR1 (the profile's --signal=USR1@120, or preemption)
    reaches only the trainer, which saves its state and requeues the job. The executor plugin
    runs a job's command as is, without its own `srun -n1` around it, when the job has an `mpi`
    resource; it checks the MPI task count only when `mpi` is truthy, so a one-process job says
    mpi=0. tasks_per_gpu=1: --ntasks-per-gpu=1 (the plugin's default takes `tasks` per GPU).
    Verified with snakemake-executor-plugin-slurm 2.8.0 and -jobstep 0.6.1; tests/test_slurm.py
    fails when other versions are installed, so that this is checked again before a pin moves.
    """
    t = config["models"][system]["train"]
    resources = {
        "gpu": t["gpus"],
        "mem_mb": t["mem_mb"],
        "runtime": t["runtime_min"],
        "tasks_per_gpu": 1,
    }
    if t["gpus"] > 1:
        # One job, one task per GPU: --gpus=N --ntasks-per-gpu=1 --ntasks=N.
        resources.update(tasks=t["gpus"], mpi="srun")
    else:
        resources.update(mpi=0)
    return resources


def _launcher(system):
    """Command prefix that starts the training processes, one per GPU.

    In a SLURM job's batch step (SLURM_JOB_ID set, no SLURM_STEP_ID): srun, one task per GPU
    (training/distributed.py reads SLURM_PROCID and SLURM_NTASKS). srun is given
    --cpus-per-task again (SLURM >= 22.05 does not pass sbatch's on), and --kill-on-bad-exit ends
    the step when one rank dies instead of leaving the others waiting. Already inside a job step,
    or outside SLURM: the command itself, or torchrun for several GPUs.
    """
    t = config["models"][system]["train"]
    procs = max(1, t["gpus"])
    srun = f"srun --ntasks={procs} --cpus-per-task={t['threads']} --kill-on-bad-exit=1"
    local = (
        f"torchrun --standalone --nproc-per-node={procs} --no-python"
        if procs > 1
        else ""
    )
    return (
        f'$(if [ -n "${{SLURM_JOB_ID:-}}" ] && [ -z "${{SLURM_STEP_ID:-}}" ]; '
        f"then echo {srun}; else echo {local}; fi) "
    )


def _init_pointer(system):
    """The pointer of the system whose final weights `system` starts from (init_system), or []."""
    other = config["models"][system]["init_system"]
    if not other:
        return []
    if other not in SYSTEMS or other == system:
        raise WorkflowError(
            f"models.{system}.init_system: {other!r} is not another system of this config "
            f"(configured: {', '.join(SYSTEMS)}); name the system trained first, or set it to null"
        )
    return checkpoint_pointer(other)


for _system in TRAINED_SYSTEMS:

    rule:
        name:
            f"train_{_system}"
        input:
            manifest=DATASET_MANIFEST,
            # The code this training runs: editing it retrains this system (as DVC's stage would).
            code=system_code(config, _system, with_workflow=False),
            pretrained=(
                config["pretrained"]["xumx"]["path"]
                if config["models"][_system]["init"] == "official_xumx"
                else []
            ),
            init=_init_pointer(_system),
        output:
            pointer=checkpoint_pointer(_system),
            curve=f"results/training/{_system}.csv",
        log:
            f"{LOGS}/train/{_system}.log",
        benchmark:
            f"{BENCH}/train/{_system}.tsv"
        # A training that asks for several threads goes first: left to wait, it would start only
        # once the others leave enough cores free, at the end of the run (Hybrid Demucs on 2 cores).
        priority: config["models"][_system]["train"]["threads"] - 1
        conda:
            CONDA_ENV
        threads: config["models"][_system]["train"]["threads"]
        resources:
            **_train_resources(_system),
        params:
            config_file=system_settings(_system),
            system=_system,
            launch=_launcher(_system),
            # what the training computes from (a new time limit or thread count reruns nothing)
            settings=without_resources(config["models"][_system]),
            data=config["data"],
            root=DATASET_ROOT,
            pretrained=(
                f"--pretrained {shlex.quote(config['pretrained']['xumx']['path'])}"
                if config["models"][_system]["init"] == "official_xumx"
                else ""
            ),
            init=(
                f"--init-checkpoint {_init_pointer(_system)}"
                if _init_pointer(_system)
                else ""
            ),
        shell:
            "{params.launch}dannasep train --config {params.config_file:q} --system {params.system} --threads {threads}"
            " --root {params.root:q}"
            " --manifest {input.manifest} --out-dir results/checkpoints/{params.system}"
            " --pointer {output.pointer} --curve {output.curve} {params.pretrained} {params.init} --no-progress"
            " > {log} 2>&1"
