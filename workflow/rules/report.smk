# Report: the paper's tables (results, blend weights, model sizes; CSV, Markdown, LaTeX, HTML)
# and figures (PNG, PDF) from the scores, blend weights and grid, checkpoint pointers and training
# curves. The HTML tables and PNG figures are marked for `snakemake --report report.html`.
# Paths of captions and of the workflow description are relative to this file.


report: "../report/workflow.rst"


REPORT_TABLES = "results/tables"
REPORT_FIGURES = "results/figures"
REPORT_METRICS = "results/metrics.json"
# The blend exists only when every blend model is trained (see common.smk: BLENDED_SYSTEMS).
REPORT_BLEND = (
    {"weights": "results/blend/weights.yaml", "grid": "results/blend/grid.npz"}
    if BLENDED_SYSTEMS
    else {}
)


_REPORT_COMMON_INPUT = dict(
    scores=[score_file(s, EVAL_FOLDER, t) for s in ALL_SYSTEMS for t in EVAL_TRACKS],
    pointers=[checkpoint_pointer(s) for s in SYSTEMS],
    weights=REPORT_BLEND.get("weights", []),
)
# "none" when this run has no blend, so a weights file left by an earlier run is not shown
# --systems: this run's systems beyond the paper's rows (e.g. tfc_tdf) get rows too
_REPORT_COMMON_ARGS = (
    "--scores results/scores --folder {params.folder} --tracks {params.tracks}"
    " --weights {params.weights} --checkpoints results/checkpoints --systems {params.systems}"
)


rule tables:
    input:
        **_REPORT_COMMON_INPUT,
    output:
        *_report_table(
            "results",
            "results_table",
            "1. Separation results",
            "SDR: ours vs published",
        ),
        *_report_table(
            "published",
            "published_table",
            "1. Separation results",
            "published numbers",
        ),
        *_report_table("blend_weights", "blend_weights", "2. Blend", "blend weights"),
        *_report_table("model_sizes", "model_sizes", "3. Models", "model sizes"),
        *_report_table("ledger", "ledger", "4. Settings", "settings ledger"),
        inputs=f"{REPORT_TABLES}/inputs.json",
        metrics=REPORT_METRICS,
    log:
        f"{LOGS}/report/tables.log",
    conda:
        CONDA_ENV
    params:
        folder=EVAL_FOLDER,
        tracks=quoted(EVAL_TRACKS),
        weights=lambda w, input: input.weights or "none",
        run_config=settings_file(config),
        systems=ALL_SYSTEMS,
    shell:
        f"dannasep report tables {_REPORT_COMMON_ARGS}"
        f" --out-dir {REPORT_TABLES} --metrics {{output.metrics}} --config {{params.run_config:q}} > {{log}} 2>&1"


rule figures:
    input:
        **_REPORT_COMMON_INPUT,
        grid=REPORT_BLEND.get("grid", []),
        curves=[f"results/training/{s}.csv" for s in TRAINED_SYSTEMS],
    output:
        *_report_figure(
            "sdr_per_source",
            "fig_sdr_per_source",
            "1. Separation results",
            "SDR per source",
        ),
        *_report_figure(
            "sdr_per_track",
            "fig_sdr_per_track",
            "1. Separation results",
            "SDR per track",
        ),
        *_report_figure(
            "blend_simplex",
            "fig_blend_simplex",
            "2. Blend",
            "blend SDR over the weights",
        ),
        *_report_figure(
            "training_curves", "fig_training_curves", "4. Training", "training curves"
        ),
    log:
        f"{LOGS}/report/figures.log",
    conda:
        CONDA_ENV
    params:
        folder=EVAL_FOLDER,
        tracks=quoted(EVAL_TRACKS),
        weights=lambda w, input: input.weights or "none",
        systems=ALL_SYSTEMS,
        grid=lambda w, input: input.grid or "none",
    shell:
        f"dannasep report figures {_REPORT_COMMON_ARGS}"
        f" --grid {{params.grid}} --curves results/training --out-dir {REPORT_FIGURES} > {{log}} 2>&1"


rule track_spectrograms:
    # One dataset track's mixture and stems (the rendered dataset's figure; any kind works).
    input:
        DATASET_MANIFEST,
    output:
        *_report_figure(
            "track_spectrograms",
            "fig_track_spectrograms",
            "5. Data",
            "spectrograms of a track",
        ),
    log:
        f"{LOGS}/report/track_spectrograms.log",
    conda:
        CONDA_ENV
    params:
        track=f"{DATASET_ROOT}/test/{(EVAL_TRACKS if EVAL_FOLDER == 'test' else TEST_TRACKS)[0]}",
        out_stem=lambda w, output: output[0][: -len(".png")],
    shell:
        "dannasep spectrograms {params.track:q} --out-stem {params.out_stem} --seconds 12 > {log} 2>&1"
