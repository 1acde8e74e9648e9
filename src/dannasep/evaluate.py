"""`dannasep evaluate`: score one separated track against its references (museval JSON out).

References are a MUSDB18-HQ track folder of <source>.wav, or a compressed MUSDB18 `.stem.mp4`
(read the way `musdb` reads it: stempeg + ffmpeg, 16-bit, streams 1-4 = drums, bass, other,
vocals). Estimates are a folder of <source>.wav (results/separations/<system>/<subset>/<track>/).
The JSON also gets a "provenance" entry (dannasep.provenance_records.score_record): the sha256 of every
estimate and reference file as scored, of the estimates' provenance.json, mode, commit, versions.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from .audio import read_wav
from .constants import SAMPLE_RATE, SOURCES
from .errors import DataError

log = logging.getLogger(__name__)

STEM_SUFFIX = ".stem.mp4"
# stream index of each source in a MUSDB18 .stem.mp4 (stream 0 is the mixture)
STEM_IDS = {"drums": 1, "bass": 2, "other": 3, "vocals": 4}


def read_stem_references(path: Path) -> dict[str, np.ndarray]:
    """source -> float64 [samples, channels] from a MUSDB18 .stem.mp4, decoded as musdb does."""
    import stempeg

    if not path.is_file():
        raise DataError(f"{path}: no such file; check --references")
    try:
        stems, rate = stempeg.read_stems(str(path), ffmpeg_format="s16le")
    except Exception as exc:  # stempeg raises assorted errors from ffmpeg/ffprobe
        raise DataError(f"{path}: cannot decode the stems ({exc}); "
                        "is ffmpeg installed and the file complete?") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate is {rate} Hz, expected {SAMPLE_RATE} Hz")
    if stems.ndim != 3 or stems.shape[0] < 5:
        raise DataError(f"{path}: expected 5 streams (mixture + 4 sources), found shape {stems.shape}")
    return {s: stems[i] for s, i in STEM_IDS.items()}


def read_references(path: Path) -> dict[str, np.ndarray]:
    """source -> [samples, channels] from a track folder or a .stem.mp4 file."""
    if path.name.endswith(STEM_SUFFIX):
        return read_stem_references(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a track folder; pass the dataset's <subset>/<track> folder")
    return {s: read_wav(_existing(path / f"{s}.wav", "reference"), SAMPLE_RATE)[0] for s in SOURCES}


def read_estimates(folder: Path) -> dict[str, np.ndarray]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no estimates folder; run the separation step for this track")
    return {s: read_wav(_existing(folder / f"{s}.wav", "estimate"), SAMPLE_RATE)[0] for s in SOURCES}


def _existing(path: Path, kind: str) -> Path:
    if not path.is_file():
        fix = "run the separation step for this track" if kind == "estimate" else "check the dataset"
        raise DataError(f"{path}: {kind} file missing; {fix}")
    return path


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
    parser.add_argument("--mode", choices=("full", "sdr"), default="full",
                        help="full: museval BSS Eval v4 (SDR SIR SAR ISR, slow); sdr: exact fast SDR only")
    parser.add_argument("--nsdr", action="store_true", help="also store each source's MDX nSDR")
    parser.add_argument("--manifest", type=Path,
                        help="dataset manifest JSON the references belong to (its hash is recorded)")


def run(args: argparse.Namespace) -> int:
    from .io import write_json
    from .metrics import evaluate_track
    from .provenance_records import score_record

    name = args.track or track_name_of(args.references)
    references = read_references(args.references)
    estimates = read_estimates(args.estimates)
    # hashed right after reading: the provenance names the bytes that were scored
    provenance = score_record(track=name, estimates=args.estimates, references=args.references,
                              mode=args.mode, nsdr=args.nsdr, manifest=args.manifest)
    for s in SOURCES:
        if estimates[s].shape[1] != references[s].shape[1]:
            raise DataError(f"{args.estimates / (s + '.wav')}: {estimates[s].shape[1]} channels, "
                            f"reference has {references[s].shape[1]}; write it in stereo")
    started = time.perf_counter()
    scores = evaluate_track(references, estimates, mode=args.mode, track_name=name, with_nsdr=args.nsdr)
    # an extra top-level key: museval's loaders (json2df) read only "targets"
    scores["provenance"] = provenance
    write_json(args.out, scores)
    log.info("%s (%s, %.1f s): median SDR %s", name, args.mode, time.perf_counter() - started,
             {t["name"]: _median_sdr(t) for t in scores["targets"]})
    return 0
