# Provenance: the graph of the paper table (cells -> score files -> estimates -> checkpoints ->
# train config, dataset manifest, commit) with every recorded sha256 re-checked against the files
# on disk. A mismatch (a checkpoint replaced after scoring, an estimate edited, a dataset changed
# since training) fails the rule, naming the file; `dannasep audit <system> [source]` prints one
# row's chain.


rule provenance:
    input:
        scores=[score_file(s, EVAL_FOLDER, t) for s in ALL_SYSTEMS for t in EVAL_TRACKS],
        separations=[
            f"{separation_dir(s, EVAL_FOLDER, t)}/provenance.json"
            for s in ALL_SYSTEMS
            for t in EVAL_TRACKS
        ],
        pointers=[checkpoint_pointer(s) for s in SYSTEMS],
        manifest=DATASET_MANIFEST,
        # the score files (and sha256) the tables were made from, which the audit checks
        tables=rules.tables.output.inputs,
    output:
        "results/provenance.json",
    log:
        f"{LOGS}/provenance.log",
    benchmark:
        f"{BENCH}/provenance.tsv"
    conda:
        CONDA_ENV
    params:
        systems=ALL_SYSTEMS,
        folder=EVAL_FOLDER,
        tracks=quoted(EVAL_TRACKS),
    shell:
        "dannasep audit --systems {params.systems} --folder {params.folder} --tracks {params.tracks}"
        " --results results --out {output} > {log} 2>&1"
