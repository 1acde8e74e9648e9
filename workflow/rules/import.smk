# Published weights instead of training: one rule per system whose models.<system>.weights.from
# is `import` (the file's weights copied into our module by an explicit key map, refused unless
# both give the same outputs on a random input) or `released` (the authors' TorchScript or ONNX
# module run as it is). Either writes the same checkpoint pointer a train rule would, so
# separation, evaluation, blend and audit do not change; the checkpoint records the file's URL
# and sha256, where its provenance ends. The files are fetched by the rules of data.smk whose
# outputs are the `pretrained:` paths.
from dannasep.models.released_layouts import kind_info, pretrained_entry


def _import_check(system):
    """The cheap check before any job: the kind fits the system's arch."""
    weights = config["models"][system]["weights"]
    arch = config["models"][system]["arch"]
    if kind_info(weights["kind"])["arch"] != arch:
        raise WorkflowError(
            f"models.{system}: weights.kind {weights['kind']} holds a {kind_info(weights['kind'])['arch']}, "
            f"but arch is {arch}; set arch: {kind_info(weights['kind'])['arch']} or another kind"
        )
    if weights["from"] == "released" and kind_info(weights["kind"])["format"] not in (
        "torchscript",
        "onnx",
    ):
        raise WorkflowError(
            f"models.{system}: weights.kind {weights['kind']} holds weights only and cannot run as it is; "
            "use weights.from: import"
        )
    return weights


for _system in IMPORTED_SYSTEMS:
    _weights = _import_check(_system)
    _file = pretrained_entry(config, _weights["kind"])

    rule:
        name:
            f"import_{_system}"
        input:
            weights=_file["path"],
        output:
            pointer=checkpoint_pointer(_system),
        log:
            f"{LOGS}/import/{_system}.log",
        benchmark:
            f"{BENCH}/import/{_system}.tsv"
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=8000,
            runtime=30,
        params:
            system=_system,
            kind=_weights["kind"],
            url=_file["url"],
            as_is="--as-is" if _weights["from"] == "released" else "",
        shell:
            "dannasep import {params.kind} {input.weights:q} --system {params.system} --url '{params.url}'"
            " --out results/checkpoints/{params.system} --pointer {output.pointer} {params.as_is} > {log} 2>&1"
