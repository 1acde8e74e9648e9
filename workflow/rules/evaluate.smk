# Evaluation per track in museval's own JSON schema: BSS Eval v4 as museval computes it (mode
# "full", seconds a track; "museval" runs museval itself, minutes), or the exact fast SDR
# (identical SDR, milliseconds) when evaluation.mode is "sdr".


rule evaluate:
    input:
        estimates=separation_files("{system}", "{folder}", "{track}"),
        manifest=DATASET_MANIFEST,
    output:
        score_file("{system}", "{folder}", "{track}"),
    log:
        f"{LOGS}/evaluate/{{system}}/{{folder}}/{{track}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{system}}/{{folder}}/{{track}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        estimates=lambda w: separation_dir(w.system, w.folder, w.track),
        references=EVAL_REFERENCES,
        mode=config["evaluation"]["mode"],
        nsdr="--nsdr" if config["evaluation"]["nsdr"] else "",
        hq=HQ_ALIGNMENT_OPTION,
    shell:
        "dannasep evaluate --estimates {params.estimates:q} --references {params.references:q}"
        " --track {wildcards.track:q} --out {output:q} --mode {params.mode} {params.nsdr}"
        " --manifest {input.manifest:q} {params.hq} > {log:q} 2>&1"
