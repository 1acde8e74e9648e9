# Training: one rule per system (train_xumx_baseline, train_xumx, train_unet, ...). Each writes
# a self-describing checkpoint results/checkpoints/<system>/<system>-<hash>.pt, a pointer
# results/checkpoints/<system>.json naming it, and the training curve CSV. A killed job re-run
# resumes from results/checkpoints/<system>/last.pt.


def _train_resources(system):
    t = config["models"][system]["train"]
    return {"gpu": t["gpus"], "mem_mb": t["mem_mb"], "runtime": t["runtime_min"],
            # one SLURM task per GPU: DDP through srun
            "tasks": max(1, t["gpus"])}


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
            system=_system,
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
        log:
            f"{LOGS}/train/{_system}.log",
        benchmark:
            f"{BENCH}/train/{_system}.tsv"
        shell:
            "dannasep train --config {EFFECTIVE_CONFIG} --system {params.system} --root '{params.root}'"
            " --manifest {input.manifest} --out-dir results/checkpoints/{params.system}"
            " --pointer {output.pointer} --curve {output.curve} {params.pretrained} --no-progress"
            " > {log} 2>&1"
