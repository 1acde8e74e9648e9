"""`dannasep <command>`: one subcommand a pipeline step.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only for the command being run, so `dannasep --help` stays instant
(torch takes seconds to import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import DannasepError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("dannasep.data.synth", "generate the synthetic MUSDB18-HQ-shaped dataset"),
    "fetch": ("dannasep.data.fetch", "download MUSDB18-HQ or pretrained weights (resumable, checksummed)"),
    "render": ("dannasep.data.render.cli", "render a MUSDB18-HQ-shaped dataset from sampled instruments (FluidSynth, espeak-ng)"),
    "validate": ("dannasep.data.validate", "check a MUSDB18-HQ folder (or compressed MUSDB18) and write its manifest"),
    "train": ("dannasep.training.cli", "train one system (resumable, DDP-ready) and write its checkpoint"),
    "separate": ("dannasep.separation.cli", "separate audio files (any format) or a track with a trained, released or blended system (bounded memory)"),
    "evaluate": ("dannasep.evaluation.cli", "score a separated track with museval BSS Eval v4 or the exact fast SDR (museval JSON)"),
    "blend": ("dannasep.blend.cli", "per-track blend statistics, the exact blend-weight search (any number of systems), or applying weights"),
    "spectrograms": ("dannasep.report.spectrograms", "spectrograms of one dataset track's mixture and stems (PNG, PDF)"),
    "report": ("dannasep.report.cli", "the paper's tables and figures from the results (CSV, Markdown, LaTeX, HTML; PNG, PDF)"),
    "audit": ("dannasep.provenance.audit", "trace a table number to its checkpoint, config, data and commit; verify every hash"),
    "inspect": ("dannasep.provenance.inspect", "print what a checkpoint records (model, config, data, commit, scores)"),
    "import": ("dannasep.models.released_import", "import a published weight file (the authors' TorchScript/ONNX, demucs48_hq, official X-UMX) into a checked checkpoint"),
}


# commands whose outputs record the code that made them
RECORDING_COMMANDS = {"train", "separate", "evaluate", "blend", "import"}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dannasep",
        description="Danna-Sep reproducibility pipeline: every Snakemake rule calls one of these steps.",
    )
    parser.add_argument("--version", action="version", version=f"dannasep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in RECORDING_COMMANDS:
        from .provenance.code_state import code_state

        code_state()  # read now: the code this process runs, whatever changes while it runs
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except DannasepError as exc:
        print(f"dannasep {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dannasep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
