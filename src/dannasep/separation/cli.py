"""`dannasep separate`: separate audio files with a trained, released or blended system.

    dannasep separate song.mp3 other.flac --system dannasep -o separated
        -> separated/dannasep/song/{drums,bass,other,vocals}.wav (+ provenance.json)

The pipeline's form names the checkpoint and the exact output folder of one track:

    dannasep separate --checkpoint results/checkpoints/xumx.json --system xumx \\
        --mixture <track>/mixture.wav --out-dir results/separations/xumx/test/<track> --config ...

A file that cannot be read or separated gets one error line and the others are still
separated; the exit status is 1 if any failed.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ..constants import SAMPLE_RATE
from ..errors import ConfigError, DannasepError, DataError

FORMAT_CHOICES = ("wav16", "wav32", "flac")


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="audio files (wav, flac, mp3, m4a/aac, ogg, ...; any sample rate, mono or "
                        "stereo) or folders of them")
    p.add_argument("--system", "-n", default=None,
                   help="a trained system (results/checkpoints/<name>.json), a checkpoint .pt, "
                        "a released system, or dannasep: the blend with the searched weights "
                        "(default: dannasep; with --checkpoint: the checkpoint's system)")
    p.add_argument("-o", "--out", default="separated",
                   help="writes OUT/<system>/<track>/<source>.<ext> (default: separated)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="wav32",
                   help="wav16 (16-bit PCM), wav32 (32-bit float, the default: no clipping) or "
                        "flac (24-bit)")
    p.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--mode", choices=("chunked", "paper"),
                   help="chunked: independent chunks with a cross-fade; paper: the whole-track "
                        "result as the authors ran it, streamed (default: each system's setting)")
    p.add_argument("--segment", type=float, metavar="SECONDS",
                   help="chunk length (chunked) or block length (paper), in seconds")
    p.add_argument("--overlap", type=float, help="overlap of chunks, a fraction of --segment")
    p.add_argument("--shifts", type=int,
                   help="the authors' shift scheme for Demucs: 0 none, 1 half a second of silence "
                        "first (theirs), N: N offsets in [0, 0.5 s] averaged")
    p.add_argument("--published-weights", action="store_true",
                   help="with --system dannasep: the paper's blend weights instead of the searched ones")
    p.add_argument("--weights", type=Path, help="blend weights YAML (default: RESULTS/blend/weights.yaml)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="the pipeline's results folder: checkpoints and blend weights (default: results)")
    p.add_argument("--config", help="pipeline config: separation settings per system "
                                    "(default: what each checkpoint recorded)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    pipeline = p.add_argument_group("the pipeline's form (one track)")
    pipeline.add_argument("--checkpoint", type=Path, help="checkpoint .pt, or the <system>.json pointer naming it")
    pipeline.add_argument("--mixture", help="the track's mixture (same as one INPUT)")
    pipeline.add_argument("--out-dir", type=Path, help="write the stems into exactly this folder")


def pick_device(name: str) -> str:
    """`auto` -> cuda, else mps, else cpu; ConfigError for a device this machine lacks."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here; use --device cpu (or auto)")
    if name == "mps" and not has_mps:
        raise ConfigError("--device mps: no Apple GPU here; use --device cpu (or auto)")
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise ConfigError(f"--device {name}: use auto, cpu, cuda, cuda:N or mps")
    return name


def _inputs(args) -> list[Path]:
    from .audio_io import AUDIO_EXTENSIONS

    named = [Path(p) for p in args.inputs] + ([Path(args.mixture)] if args.mixture else [])
    files = []
    for path in named:
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file()
                           and f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith("."))
            if not found:
                print(f"dannasep separate: warning: {path}: no audio files in this folder", file=sys.stderr)
            files += found
        else:
            files.append(path)  # a missing file gets its error line in turn
    return files


def _terminate(signum, _frame):
    # SLURM and Snakemake stop jobs with SIGTERM: unwind so temporary files are removed.
    raise SystemExit(128 + signum)


def run(args) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    import torch

    from .systems import SEPARATE_KEYS, Request, resolve_system

    if args.threads:
        torch.set_num_threads(args.threads)
    _check_numbers(args)
    files = _inputs(args)
    if not files:
        raise DataError("no input files; name audio files or folders (dannasep separate song.mp3)")
    if args.out_dir and len(files) != 1:
        raise ConfigError(f"--out-dir takes one input, got {len(files)}; use -o for several")
    config = None
    if args.config:
        from ..config import load_config

        config = load_config(args.config)
    overrides = dict(zip(SEPARATE_KEYS, (args.mode, args.shifts, args.overlap, args.segment)))
    request = Request(results=args.results, config=config, device=pick_device(args.device),
                      published_weights=args.published_weights, weights=args.weights,
                      overrides=overrides, checkpoint=args.checkpoint)
    # The cheap checks (system, weights, checkpoints) before any separation.
    system = resolve_system(args.system or ("" if args.checkpoint else "dannasep"), request)
    failed = _separate_all(system, files, args, request.device)
    if len(files) > 1:
        print(f"dannasep separate: {len(files) - len(failed)} of {len(files)} files separated"
              + (f"; failed: {', '.join(str(f) for f in failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _check_numbers(args) -> None:
    if args.segment is not None and args.segment <= 0:
        raise ConfigError(f"--segment {args.segment}: must be a positive number of seconds")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise ConfigError(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.shifts is not None and args.shifts < 0:
        raise ConfigError(f"--shifts {args.shifts}: must be 0 or more")


def _separate_all(system, files, args, device) -> list[Path]:
    import soundfile as sf

    from .audio_io import probe
    from .files import separate_track

    failed, seen = [], {}
    for path in files:
        try:
            track = path.stem
            if track in seen:
                raise DataError(f"{path}: same track name as {seen[track]}; its stems would "
                                "overwrite those, so separate it on its own or rename it")
            out_dir = args.out_dir or Path(args.out) / system.name / track
            info = probe(path)
            seen[track] = path
            outputs = separate_track(system, info, out_dir, args.format, device, _progress_bar)
            _write_provenance(out_dir, system, info, outputs, args.format)
        except (DannasepError, sf.LibsndfileError) as exc:
            print(f"dannasep separate: error: {exc}", file=sys.stderr)
            failed.append(path)
    return failed


def _progress_bar(description: str):
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=0, desc=description, unit="s", unit_scale=1 / SAMPLE_RATE, delay=1,
                mininterval=0.5 if interactive else 30, dynamic_ncols=interactive,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")


def _write_provenance(out_dir: Path, system, info, outputs, fmt: str) -> None:
    from ..io import sha256_file, write_json
    from ..provenance.code_state import code_state, package_versions
    from ..provenance.records import written_record

    members = [{"name": m.name, "origin": m.origin, "separation": m.settings} for m in system.members]
    write_json(Path(out_dir) / "provenance.json", {
        "system": system.name,
        # one checkpoint: the keys `dannasep audit` follows
        **({"checkpoint": system.members[0].origin, "separation": system.members[0].settings}
           if len(system.members) == 1 and "sha256" in system.members[0].origin else {}),
        "members": members,
        "blend": ({"weights": system.weights.tolist(), **system.origin}
                  if system.weights is not None else None),
        "mixture": {"path": str(info.path), "sha256": sha256_file(info.path),
                    "samplerate": info.samplerate, "channels": info.channels, "frames": info.frames},
        "format": fmt,
        **written_record(outputs),
        "code": code_state(),
        "versions": package_versions(),
    })
