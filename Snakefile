# Danna-Sep reproducibility pipeline.
#   snakemake --cores 2                      embedded default (synthetic data, CPU, minutes)
#   snakemake --profile slurm --configfile config/paper.yaml    the paper on a SLURM cluster
# Every rule calls one `dannasep` command; see `dannasep --help`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/separate.smk"
include: "workflow/rules/blend.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/provenance.smk"


# Every score is an input of the tables and of the audit, so they are not listed here again
# (550 fewer lookups when planning the paper DAG).
rule all:
    default_target: True
    input:
        DATASET_MANIFEST,
        [checkpoint_pointer(s) for s in SYSTEMS],
        "results/provenance.json",
        rules.tables.output,
        rules.figures.output,
        rules.track_spectrograms.output,
