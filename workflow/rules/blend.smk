# Danna-Sep's blend: weights searched exactly on the simplex grid (per-window Gram matrices of
# the saved estimates, no museval call per weight) on the validation tracks by default; then the
# blended systems `dannasep` (searched weights) and `dannasep_paper_weights` (published weights)
# are weighted sums of the saved estimates, evaluated like any model.
# The statistics are one job per track (each reads that track's wav files once, in parallel);
# the search reads only the statistics files.


BLEND_STATS = "results/blend/stats/{folder}/{track}.npz"


rule blend_stats:
    input:
        estimates=[
            f for m in BLEND_MODELS for f in separation_files(m, "{folder}", "{track}")
        ],
        manifest=DATASET_MANIFEST,
    output:
        BLEND_STATS,
    log:
        f"{LOGS}/blend/stats/{{folder}}/{{track}}.log",
    benchmark:
        f"{BENCH}/blend/stats/{{folder}}/{{track}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        models=BLEND_MODELS,
        references=DATASET_ROOT,
    shell:
        "dannasep blend stats --models {params.models:q} --separations results/separations"
        " --references {params.references:q} --subset {wildcards.folder} --tracks {wildcards.track:q}"
        " --out-dir results/blend/stats/{wildcards.folder} > {log:q} 2>&1"


rule blend_search:
    input:
        stats=[BLEND_STATS.format(folder=BLEND_FOLDER, track=t) for t in BLEND_TRACKS],
    output:
        weights="results/blend/weights.yaml",
        grid="results/blend/grid.npz",
    log:
        f"{LOGS}/blend/search.log",
    benchmark:
        f"{BENCH}/blend/search.tsv"
    conda:
        CONDA_ENV
    threads: 2
    params:
        models=BLEND_MODELS,
        stats=quoted(
            BLEND_STATS.format(folder=BLEND_FOLDER, track=t) for t in BLEND_TRACKS
        ),
        step=config["blend"]["step"],
        folder=BLEND_FOLDER,
    shell:
        "dannasep blend search --models {params.models:q} --threads {threads}"
        " --stats {params.stats} --subset {params.folder} --step {params.step}"
        " --out {output.weights:q} --grid-out {output.grid:q} > {log} 2>&1"


rule blend_apply:
    input:
        estimates=[
            f for m in BLEND_MODELS for f in separation_files(m, "{folder}", "{track}")
        ],
        weights=lambda w: "results/blend/weights.yaml" if w.blend == "dannasep" else [],
    output:
        separation_files("{blend}", "{folder}", "{track}"),
    log:
        f"{LOGS}/blend/apply/{{blend}}/{{folder}}/{{track}}.log",
    wildcard_constraints:
        blend="dannasep|dannasep_paper_weights",
    conda:
        CONDA_ENV
    params:
        weights=lambda w: (
            "results/blend/weights.yaml" if w.blend == "dannasep" else "paper"
        ),
    shell:
        "dannasep blend apply --weights {params.weights:q} --separations results/separations"
        " --system {wildcards.blend} --subset {wildcards.folder} --tracks {wildcards.track:q} > {log:q} 2>&1"
