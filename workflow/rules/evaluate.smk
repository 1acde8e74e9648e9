# Evaluation: museval BSS Eval v4 per track (museval's own JSON schema), or the exact fast SDR
# (identical SDR, milliseconds instead of minutes) when evaluation.mode is "sdr".


rule evaluate:
    input:
        estimates=lambda w: separation_files(w.system, w.folder, w.track),
        manifest=DATASET_MANIFEST,
    output:
        score_file("{system}", "{folder}", "{track}"),
    params:
        estimates=lambda w: separation_dir(w.system, w.folder, w.track),
        references=eval_references,
        mode=config["evaluation"]["mode"],
        nsdr="--nsdr" if config["evaluation"]["nsdr"] else "",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate/{{system}}/{{folder}}/{{track}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{system}}/{{folder}}/{{track}}.tsv"
    shell:
        "dannasep evaluate --estimates {params.estimates:q} --references {params.references:q}"
        " --track {wildcards.track:q} --out {output:q} --mode {params.mode} {params.nsdr}"
        " --manifest {input.manifest:q} > {log:q} 2>&1"
