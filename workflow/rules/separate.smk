# Separation: one job per system and track, streamed with bounded memory in the system's
# `separate.mode`: chunked (overlapping chunks, each its own Wiener filter) or paper (the
# authors' whole-track inference in passes); one MWF iteration for the spectrogram models.
# The same `dannasep separate` separates anyone's music (README, "Separating a song").


# What a separation reads (job sizes left out, so a new time limit re-separates nothing), once a
# system rather than once a job: planning the paper DAG asks for it ~500 times.
SEPARATE_SETTINGS = {
    system: without_resources(config["models"][system])["separate"]
    for system in SYSTEMS
}


rule separate:
    input:
        pointer="results/checkpoints/{system}.json",
        manifest=DATASET_MANIFEST,
    output:
        separation_files("{system}", "{folder}", "{track}"),
    log:
        f"{LOGS}/separate/{{system}}/{{folder}}/{{track}}.log",
    benchmark:
        f"{BENCH}/separate/{{system}}/{{folder}}/{{track}}.tsv"
    wildcard_constraints:
        system="|".join(SYSTEMS) or "none",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=lambda w: config["models"][w.system]["separate"]["mem_mb"],
        runtime=lambda w: config["models"][w.system]["separate"]["runtime_min"],
        gpu=lambda w: config["models"][w.system]["separate"]["gpus"],
    params:
        config_file=lambda w: system_settings(w.system),
        mixture=MIXTURE,
        out_dir=separation_dir("{system}", "{folder}", "{track}"),
        settings=lambda w: SEPARATE_SETTINGS[w.system],
        device=lambda w: (
            "cuda" if config["models"][w.system]["separate"]["gpus"] else "cpu"
        ),
    shell:
        "dannasep separate --checkpoint {input.pointer:q} --mixture {params.mixture:q}"
        " --out-dir {params.out_dir:q} --config {params.config_file} --system {wildcards.system}"
        " --threads {threads} --device {params.device} > {log:q} 2>&1"
