# Data: generate the synthetic MUSDB18-HQ, render one from sampled instruments, or fetch the
# real one; then validate it and write a manifest (file list with sizes and hashes) whose hash
# every checkpoint records.

if config["dataset"]["kind"] == "synthetic":

    rule synth_dataset:
        output:
            directory(config["dataset"]["root"]),
        log:
            f"{LOGS}/data/synth_dataset.log",
        benchmark:
            f"{BENCH}/data/synth_dataset.tsv"
        conda:
            CONDA_ENV
        params:
            s=config["dataset"]["synthetic"],
        shell:
            "dannasep synth --out {output:q} --seed {params.s[seed]}"
            " --train-tracks {params.s[train_tracks]} --valid-tracks {params.s[valid_tracks]}"
            " --test-tracks {params.s[test_tracks]} --duration {params.s[duration]} > {log} 2>&1"

elif config["dataset"]["kind"] == "rendered":

    rule render_dataset:
        # FluidSynth + the pinned SoundFont + espeak-ng (Debian packages; make setup installs them)
        output:
            directory(config["dataset"]["root"]),
        log:
            f"{LOGS}/data/render_dataset.log",
        benchmark:
            f"{BENCH}/data/render_dataset.tsv"
        conda:
            CONDA_ENV
        params:
            r=config["dataset"]["rendered"],
            sha=lambda w: config["dataset"]["rendered"]["soundfont_sha256"] or "",
        shell:
            "dannasep render --out {output:q} --seed {params.r[seed]}"
            " --train-tracks {params.r[train_tracks]} --valid-tracks {params.r[valid_tracks]}"
            " --test-tracks {params.r[test_tracks]} --duration {params.r[duration]}"
            " --soundfont {params.r[soundfont]:q} --soundfont-sha256 {params.sha:q} > {log} 2>&1"

elif dataset_is_produced():

    rule fetch_musdb18hq:
        output:
            directory(config["dataset"]["root"]),
        log:
            f"{LOGS}/data/fetch_musdb18hq.log",
        benchmark:
            f"{BENCH}/data/fetch_musdb18hq.tsv"
        conda:
            CONDA_ENV
        params:
            m=config["dataset"]["musdb18hq"],
        shell:
            "dannasep fetch musdb18hq --out {output:q} --url {params.m[url]:q} --md5 {params.m[md5]:q}"
            " --size {params.m[size]} --download-dir {params.m[download_dir]:q} > {log} 2>&1"


rule validate_dataset:
    input:
        # produced by synth_dataset / fetch_musdb18hq, or the user's existing copy
        root=DATASET_ROOT,
    output:
        DATASET_MANIFEST,
    log:
        f"{LOGS}/data/validate_dataset.log",
    conda:
        CONDA_ENV
    params:
        full="--full" if config["dataset"]["kind"] == "musdb18hq" else "",
    shell:
        "dannasep validate {input.root:q} --manifest {output:q} {params.full} > {log} 2>&1"


rule fetch_xumx_weights:
    # The official X-UMX MUSDB18-HQ weights (initialisation of the Danna-Sep X-UMX). No checksum
    # is published: the first download records its sha256 beside the file, and a later file
    # that differs is refused (see `dannasep fetch xumx-weights --help`).
    output:
        weights=config["pretrained"]["xumx"]["path"],
    log:
        f"{LOGS}/data/fetch_xumx_weights.log",
    conda:
        CONDA_ENV
    params:
        url=config["pretrained"]["xumx"]["url"],
        sha=sha256_option(config["pretrained"]["xumx"]),
    shell:
        "dannasep fetch xumx-weights --out {output.weights:q} --url {params.url:q} {params.sha} > {log} 2>&1"


# The authors' released models (Google Drive, through its large-file confirmation) and demucs
# v2's demucs48_hq, one rule per file, each writing the config's `path` (read by the rules that
# run or import them). Trust on first use as above; demucs48_hq's URL also carries a sha256
# prefix that is checked.
for _key, _entry in config["pretrained"]["danna_sep"].items():

    rule:
        name:
            f"fetch_danna_sep_{_key}"
        output:
            weights=_entry["path"],
        log:
            f"{LOGS}/data/fetch_danna_sep_{_key}.log",
        conda:
            CONDA_ENV
        params:
            key=_key,
            url=_entry["url"],
            sha=sha256_option(_entry),
        shell:
            "dannasep fetch danna-sep-weights --only {params.key} --out {output.weights:q}"
            " --url {params.url:q} {params.sha} > {log} 2>&1"


rule fetch_demucs48_hq:
    output:
        weights=config["pretrained"]["demucs48_hq"]["path"],
    log:
        f"{LOGS}/data/fetch_demucs48_hq.log",
    conda:
        CONDA_ENV
    params:
        url=config["pretrained"]["demucs48_hq"]["url"],
        sha=sha256_option(config["pretrained"]["demucs48_hq"]),
    shell:
        "dannasep fetch demucs-v2-weights --out {output.weights:q} --url {params.url:q} {params.sha} > {log} 2>&1"
