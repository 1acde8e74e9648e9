# Danna-Sep's blend: weights searched exactly on the simplex grid (per-window Gram matrices of
# the saved estimates, no museval call per weight) on the validation tracks by default; then the
# blended systems `dannasep` (searched weights) and `dannasep_paper_weights` (published weights)
# are weighted sums of the saved estimates, evaluated like any model.


rule blend_search:
    input:
        [separation_files(m, BLEND_FOLDER, t) for m in BLEND_MODELS for t in BLEND_TRACKS],
        manifest=DATASET_MANIFEST,
    output:
        weights="results/blend/weights.yaml",
        grid="results/blend/grid.npz",
    params:
        models=BLEND_MODELS,
        tracks=quoted(BLEND_TRACKS),
        step=config["blend"]["step"],
        references=DATASET_ROOT,
        folder=BLEND_FOLDER,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/blend/search.log",
    benchmark:
        f"{BENCH}/blend/search.tsv"
    shell:
        "dannasep blend search --models {params.models:q} --separations results/separations"
        " --references {params.references:q} --subset {params.folder} --tracks {params.tracks}"
        " --step {params.step} --out {output.weights:q} --grid-out {output.grid:q} > {log} 2>&1"


rule blend_apply:
    input:
        estimates=lambda w: [f for m in BLEND_MODELS for f in separation_files(m, w.folder, w.track)],
        weights=lambda w: "results/blend/weights.yaml" if w.blend == "dannasep" else [],
    output:
        separation_files("{blend}", "{folder}", "{track}"),
    wildcard_constraints:
        blend="dannasep|dannasep_paper_weights",
    params:
        weights=lambda w: "results/blend/weights.yaml" if w.blend == "dannasep" else "paper",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/blend/apply/{{blend}}/{{folder}}/{{track}}.log",
    shell:
        "dannasep blend apply --weights {params.weights:q} --separations results/separations"
        " --system {wildcards.blend} --subset {wildcards.folder} --tracks {wildcards.track:q} > {log:q} 2>&1"
