"""`dannasep evaluate`: score one separated track against its references (museval JSON out).

The JSON also gets a "provenance" entry (dannasep.provenance.records.score_record): the sha256 of
every estimate and reference file as scored, of the estimates' provenance.json, mode, commit,
versions.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from .references import STEM_SUFFIX, check_estimates, hq_alignment, read_estimates, read_references

log = logging.getLogger(__name__)


def _median_sdr(target: dict) -> float:
    values = [f["metrics"]["SDR"] for f in target["frames"]]
    values = [v for v in values if v is not None and not np.isnan(v)]
    return round(float(np.median(values)), 3) if values else float("nan")


def track_name_of(path: Path) -> str:
    return path.name[: -len(STEM_SUFFIX)] if path.name.endswith(STEM_SUFFIX) else path.name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--estimates", required=True, type=Path, help="folder of <source>.wav estimates")
    parser.add_argument("--references", required=True, type=Path,
                        help="reference track folder of <source>.wav, or a MUSDB18 .stem.mp4")
    parser.add_argument("--track", help="track name (default: the references' folder or file name)")
    parser.add_argument("--out", required=True, type=Path, help="per-track JSON (museval schema)")
    parser.add_argument("--mode", choices=("full", "sdr", "museval"), default="full",
                        help="full: BSS Eval v4 (SDR ISR SIR SAR), museval's computation made fast; "
                             "museval: the same by museval itself (slow); sdr: exact fast SDR only")
    parser.add_argument("--nsdr", action="store_true", help="also store each source's MDX nSDR")
    parser.add_argument("--hq-references", type=Path, metavar="TRACK_DIR",
                        help="with .stem.mp4 references: the MUSDB18-HQ folder of the same track, to check and "
                             "record how the two line up")
    parser.add_argument("--length-tolerance", type=int, default=0, metavar="SAMPLES",
                        help="accept estimates this many samples longer or shorter than the references "
                             "(default 0: this project's separations keep the mixture's length)")
    parser.add_argument("--device", default=None,
                        help="torch device of --mode full (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of --mode full")
    parser.add_argument("--manifest", type=Path,
                        help="dataset manifest JSON the references belong to (its hash is recorded)")


def run(args: argparse.Namespace) -> int:
    from ..io import write_json
    from ..provenance.records import score_record
    from .scores import evaluate_track

    name = args.track or track_name_of(args.references)
    references = read_references(args.references)
    estimates = read_estimates(args.estimates)
    # hashed right after reading: the provenance names the bytes that were scored
    provenance = score_record(track=name, estimates=args.estimates, references=args.references,
                              mode=args.mode, nsdr=args.nsdr, manifest=args.manifest)
    check_estimates(estimates, references, args.estimates, args.length_tolerance)
    if args.mode == "full":  # torch only where it computes: it is most of a small job's start-up
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    scores = evaluate_track(references, estimates, mode=args.mode, track_name=name, with_nsdr=args.nsdr,
                            device=args.device)
    if args.hq_references is not None and str(args.references).endswith(STEM_SUFFIX):
        provenance["alignment"] = hq_alignment(args.references, args.hq_references)
        if provenance["alignment"]["lag_samples"]:
            log.warning("%s: the compressed mixture is %d samples off the HQ one (%s)", args.references,
                        provenance["alignment"]["lag_samples"], args.hq_references)
    # an extra top-level key: museval's loaders (json2df) read only "targets"
    scores["provenance"] = provenance
    write_json(args.out, scores)
    log.info("%s (%s, %.1f s): median SDR %s", name, args.mode, time.perf_counter() - started,
             {t["name"]: _median_sdr(t) for t in scores["targets"]})
    return 0

