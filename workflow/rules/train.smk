# Training: one rule per system (train_xumx_baseline, train_xumx, train_unet, ...). Each writes
# a self-describing checkpoint results/checkpoints/<system>/<system>-<hash>.pt, a pointer
# results/checkpoints/<system>.json naming it, and the training curve CSV. A killed job re-run
# resumes from results/checkpoints/<system>/last.pt.


def _train_resources(system):
    """Generic resources; the SLURM profile (slurm/config.yaml) maps them to sbatch options."""
    t = config["models"][system]["train"]
    resources = {"gpu": t["gpus"], "mem_mb": t["mem_mb"], "runtime": t["runtime_min"]}
    if t["gpus"] > 1:
        # One SLURM job with one task per GPU: the executor plugin submits
        # --gpus=N --ntasks-per-gpu=1 --ntasks=N (without tasks_per_gpu it would use `tasks` as
        # tasks *per GPU*), and `mpi` makes its job step run this rule's command as is, without
        # its own `srun -n1` around it, so that _launcher's srun starts the N processes.
        resources.update(tasks=t["gpus"], tasks_per_gpu=1, mpi="srun")
    return resources


def _launcher(system):
    """Command prefix that starts one DDP process per GPU ("" for one process).

    Inside a SLURM job: srun, one task per GPU (training/distributed.py reads SLURM_PROCID and
    SLURM_NTASKS); srun needs --cpus-per-task given again (SLURM >= 22.05 does not pass sbatch's
    on), and --kill-on-bad-exit ends the job when one rank dies instead of leaving the others
    waiting. Elsewhere (a workstation with several GPUs): torchrun.
    """
    t = config["models"][system]["train"]
    if t["gpus"] <= 1:
        return ""
    srun = f"srun --ntasks={t['gpus']} --cpus-per-task={t['threads']} --kill-on-bad-exit=1"
    torchrun = f"torchrun --standalone --nproc-per-node={t['gpus']} --no-python"
    return f'$(if [ -n "${{SLURM_JOB_ID:-}}" ]; then echo {srun}; else echo {torchrun}; fi) '


for _system in SYSTEMS:

    rule:
        name:
            f"train_{_system}"
        input:
            manifest=DATASET_MANIFEST,
            pretrained=(
                config["pretrained"]["xumx"]["path"]
                if config["models"][_system]["init"] == "official_xumx"
                else []
            ),
        output:
            pointer=checkpoint_pointer(_system),
            curve=f"results/training/{_system}.csv",
        params:
            config_file=EFFECTIVE_CONFIG,
            system=_system,
            launch=_launcher(_system),
            settings=config["models"][_system],
            data=config["data"],
            root=DATASET_ROOT,
            pretrained=(
                f"--pretrained {config['pretrained']['xumx']['path']}"
                if config["models"][_system]["init"] == "official_xumx"
                else ""
            ),
        threads: config["models"][_system]["train"]["threads"]
        resources:
            **_train_resources(_system),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/train/{_system}.log",
        benchmark:
            f"{BENCH}/train/{_system}.tsv"
        shell:
            "{params.launch}dannasep train --config {params.config_file} --system {params.system} --root '{params.root}'"
            " --manifest {input.manifest} --out-dir results/checkpoints/{params.system}"
            " --pointer {output.pointer} --curve {output.curve} {params.pretrained} --no-progress"
            " > {log} 2>&1"
