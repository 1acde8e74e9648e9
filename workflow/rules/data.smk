# Data: generate the synthetic MUSDB18-HQ, render one from sampled instruments, or fetch the
# real one; then validate it and write a manifest (file list with sizes and hashes) whose hash
# every checkpoint records.

if config["dataset"]["kind"] == "synthetic":

    rule synth_dataset:
        output:
            directory(config["dataset"]["root"]),
        params:
            s=config["dataset"]["synthetic"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/synth_dataset.log",
        benchmark:
            f"{BENCH}/data/synth_dataset.tsv"
        shell:
            "dannasep synth --out {output} --seed {params.s[seed]}"
            " --train-tracks {params.s[train_tracks]} --valid-tracks {params.s[valid_tracks]}"
            " --test-tracks {params.s[test_tracks]} --duration {params.s[duration]} > {log} 2>&1"

elif config["dataset"]["kind"] == "rendered":

    rule render_dataset:
        # FluidSynth + the pinned SoundFont + espeak-ng (Debian packages; make setup installs them)
        output:
            directory(config["dataset"]["root"]),
        params:
            r=config["dataset"]["rendered"],
            sha=lambda w: config["dataset"]["rendered"]["soundfont_sha256"] or "''",
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/render_dataset.log",
        benchmark:
            f"{BENCH}/data/render_dataset.tsv"
        shell:
            "dannasep render --out {output} --seed {params.r[seed]}"
            " --train-tracks {params.r[train_tracks]} --valid-tracks {params.r[valid_tracks]}"
            " --test-tracks {params.r[test_tracks]} --duration {params.r[duration]}"
            " --soundfont {params.r[soundfont]:q} --soundfont-sha256 {params.sha} > {log} 2>&1"

elif dataset_is_produced():

    rule fetch_musdb18hq:
        output:
            directory(config["dataset"]["root"]),
        params:
            m=config["dataset"]["musdb18hq"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/data/fetch_musdb18hq.log",
        benchmark:
            f"{BENCH}/data/fetch_musdb18hq.tsv"
        shell:
            "dannasep fetch musdb18hq --out {output} --url '{params.m[url]}' --md5 {params.m[md5]}"
            " --size {params.m[size]} --download-dir {params.m[download_dir]} > {log} 2>&1"


rule validate_dataset:
    input:
        # produced by synth_dataset / fetch_musdb18hq, or the user's existing copy
        root=DATASET_ROOT,
    output:
        DATASET_MANIFEST,
    params:
        full="--full" if config["dataset"]["kind"] == "musdb18hq" else "",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/data/validate_dataset.log",
    shell:
        "dannasep validate {input.root:q} --manifest {output} {params.full} > {log} 2>&1"


rule fetch_xumx_weights:
    # The official X-UMX MUSDB18-HQ weights (initialisation of the Danna-Sep X-UMX). No checksum
    # is published: the first download records its sha256 beside the file, and a later file
    # that differs is refused (see `dannasep fetch xumx-weights --help`).
    output:
        weights=config["pretrained"]["xumx"]["path"],
    params:
        url=config["pretrained"]["xumx"]["url"],
        sha=(
            f"--sha256 {config['pretrained']['xumx']['sha256']}"
            if config["pretrained"]["xumx"]["sha256"]
            else ""
        ),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/data/fetch_xumx_weights.log",
    shell:
        "dannasep fetch xumx-weights --out {output.weights} --url '{params.url}' {params.sha} > {log} 2>&1"
