"""`dannasep validate`: check a MUSDB18-HQ folder (or a compressed MUSDB18) before anything reads it.

Every problem names the file or folder and what is wrong with it, so one run lists everything
to repair. Audio is read in blocks, so a 7-minute track costs a few MiB of memory.

Mixture check. MUSDB18-HQ mixtures are the sum of the stems up to 16-bit rounding (the
compressed MUSDB18 is not: each stream is AAC-encoded on its own, sigsep-mus-db issue 9, so the
`stems` format skips this check). A channel passes when the residual (mixture - sum of stems)
has at most 1e-4 of the mixture's energy (40 dB below: far below anything audible, far above
rounding noise), or when its RMS is at most 2 LSB of 16 bits: the five files are rounded
independently, so the residual of an exact mix is the sum of five uniform +-0.5 LSB errors,
RMS sqrt(5/12) = 0.65 LSB. The floor keeps silent channels from failing on rounding alone.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..constants import CHANNELS, SAMPLE_RATE, SOURCES, STEMS, SUBSETS
from ..errors import DataError
from .manifest import DATASET_FORMATS, STEMS_SUFFIX, list_tracks, track_name, write_manifest

log = logging.getLogger(__name__)

FULL_TRACK_COUNTS = {"train": 100, "test": 50}
MIN_MIXTURE_TO_RESIDUAL_DB = 40.0
QUANTISATION_RMS = 2.0 / 32768  # 2 LSB of 16-bit audio, in full-scale units
READ_BLOCK_FRAMES = 1 << 16  # 65536 frames: 1 MiB per stereo float64 block
CHANNEL_NAMES = ("left", "right")
# Official errata (https://sigsep.github.io/datasets/musdb.html#errata): tracks whose mixture
# is known not to be the sum of the stems. They are the data everyone evaluates on, so a failed
# mixture check there is logged as a warning, not reported as a problem.
KNOWN_MIXTURE_ERRATA = {
    "PR - Oh No": "sigsep errata: the sum of sources does not add up to the mix for the left channel",
}
FIX_HINT = ("Fix: re-extract or re-download the tracks named above (dannasep fetch musdb18hq), or "
            "regenerate a synthetic dataset (dannasep synth), then run dannasep validate again.")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the dataset: the file (or folder) and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# ---------------------------------------------------------------- layout and track names


def _list_subsets(root: Path, dataset_format: str) -> tuple[list[Problem], dict[str, list[Path]]]:
    """Check root/train and root/test exist and hold tracks; return the tracks per subset."""
    if not root.is_dir():
        return [Problem(root, "dataset folder does not exist; download or generate it first")], {}
    problems, tracks = [], {}
    what = "track folders" if dataset_format == "wav" else f"<track>{STEMS_SUFFIX} files"
    for subset in SUBSETS:
        folder = root / subset
        if not folder.is_dir():
            problems.append(Problem(folder, f"missing: a MUSDB18 root holds {' and '.join(SUBSETS)} "
                                            "folders; point ROOT at the folder that contains them"))
            continue
        tracks[subset] = list_tracks(folder, dataset_format)
        problems += [Problem(p, f"dangling symbolic link to {os.readlink(p)}: this track is missing; "
                                "restore its target or remove the link")
                     for p in sorted(folder.iterdir()) if p.is_symlink() and not p.exists()]
        if not tracks[subset]:
            problems.append(Problem(folder, f"holds no {what}"))
    return problems, tracks


def _official_track_names() -> dict[str, frozenset[str]] | None:
    """Official names per subset from dannasep.data.tracks, or None where that module is absent."""
    try:
        names = importlib.import_module("dannasep.data.tracks")
    except ModuleNotFoundError as exc:
        if exc.name != "dannasep.data.tracks":
            raise
        log.warning("dannasep.data.tracks not found: track names are not checked against the official list")
        return None
    # TRAIN_TRACKS may or may not include the validation tracks; the train folder holds both.
    return {"train": frozenset(names.TRAIN_TRACKS) | frozenset(names.VALID_TRACKS),
            "test": frozenset(names.TEST_TRACKS)}


def _check_full(root: Path, tracks: dict[str, list[Path]], suffix: str) -> list[Problem]:
    """The full dataset: 100 train and 50 test tracks, with the official names where known."""
    problems = []
    official = _official_track_names()
    for subset, expected in FULL_TRACK_COUNTS.items():
        if subset not in tracks:
            continue
        names = {track_name(p) for p in tracks[subset]}
        if len(names) != expected:
            problems.append(Problem(root / subset, f"holds {len(names)} tracks, the full MUSDB18 "
                                                   f"{subset} set has {expected}"))
        if official is None:
            continue
        for name in sorted(official[subset] - names):
            problems.append(Problem(root / subset / f"{name}{suffix}", f"official {subset} track is missing"))
        for name in sorted(names - official[subset]):
            problems.append(Problem(root / subset / f"{name}{suffix}",
                                    f"not an official MUSDB18 {subset} track name"))
    return problems


# ---------------------------------------------------------------- one wav file


def declared_data_end(path: Path) -> int | None:
    """Byte offset where a RIFF/RF64 wave's header says its audio data ends.

    None when the file is not a RIFF/RF64 wave, has no data chunk, or declares an unknown size.
    libsndfile silently reads a truncated file short, so this is compared with the file size.
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        ds64_data_size, position = None, 12
        while True:
            handle.seek(position)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"ds64":
                body = handle.read(16)  # RIFF size (8 bytes), data size (8 bytes)
                if len(body) == 16:
                    ds64_data_size = struct.unpack("<Q", body[8:])[0]
            elif chunk_id == b"data":
                if size == 0xFFFFFFFF:  # RF64 or a writer that never finalised the header
                    size = ds64_data_size if head[:4] == b"RF64" else None
                return None if size is None else position + 8 + size
            position += 8 + size + (size & 1)  # chunks are padded to even sizes


WAV_FORMATS = ("WAV", "WAVEX", "RF64")  # RIFF wave containers libsndfile names
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def _non_finite(path: Path, block_frames: int = READ_BLOCK_FRAMES) -> int:
    """Number of NaN or infinite samples of a float wav, read in blocks."""
    count = 0
    with sf.SoundFile(str(path)) as f:
        while len(block := f.read(block_frames, dtype="float64", always_2d=True)):
            count += int(block.size - np.isfinite(block).sum())
    return count


def check_wav(path: Path, subtype: str | None = "PCM_16") -> tuple[list[Problem], sf._SoundFileInfo | None]:
    """A WAV container of `subtype` (MUSDB18-HQ: PCM_16; None: any), 44.1 kHz, stereo, finite,
    not empty, not truncated; return the problems and the info."""
    if not path.is_file():
        if path.is_symlink():
            return [Problem(path, f"dangling symbolic link to {os.readlink(path)}; restore its target")], None
        return [Problem(path, "missing; every track folder needs " + ", ".join(f"{s}.wav" for s in STEMS))], None
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as exc:
        return [Problem(path, f"cannot be read as audio ({exc})")], None
    if info.format not in WAV_FORMATS:
        return [Problem(path, f"holds {info.format} data, not WAV; convert it to a {subtype or 'PCM'} WAV file "
                              f"(e.g. ffmpeg -i {path.name} -c:a pcm_s16le out.wav)")], None
    problems = []
    if subtype is not None and info.subtype != subtype:
        problems.append(Problem(path, f"sample format is {info.subtype} ({info.subtype_info}), the dataset's is "
                                      f"{subtype}; re-extract or re-create the file"))
    if info.subtype in FLOAT_SUBTYPES and (bad := _non_finite(path)):
        problems.append(Problem(path, f"holds {bad} NaN or infinite sample(s)"))
    if info.samplerate != SAMPLE_RATE:
        problems.append(Problem(path, f"sample rate is {info.samplerate} Hz, expected {SAMPLE_RATE} Hz"))
    if info.channels != CHANNELS:
        problems.append(Problem(path, f"has {info.channels} channel(s), expected {CHANNELS} (stereo)"))
    if info.frames == 0:
        problems.append(Problem(path, "holds no audio frames"))
    data_end, size = declared_data_end(path), path.stat().st_size
    if data_end is not None and data_end > size:
        problems.append(Problem(path, f"truncated: its header declares audio up to byte {data_end} "
                                      f"but the file has only {size} bytes"))
    return problems, info


# ---------------------------------------------------------------- one track


def mixture_residual(folder: Path, block_frames: int = READ_BLOCK_FRAMES) -> tuple[np.ndarray, np.ndarray, int]:
    """Energies of the mixture and of (mixture - sum of the sources), per channel, read in blocks.

    Returns (mixture_energy (channels,), residual_energy (channels,), frames), in full-scale
    units (samples in [-1, 1)). Assumes the five stems have equal lengths and channel counts.
    """
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(sf.SoundFile(str(folder / f"{s}.wav"))) for s in STEMS}
        mixture_energy = np.zeros(files["mixture"].channels)
        residual_energy = np.zeros(files["mixture"].channels)
        frames = 0
        while True:
            blocks = {s: f.read(block_frames, dtype="float64", always_2d=True) for s, f in files.items()}
            if len(blocks["mixture"]) == 0:
                return mixture_energy, residual_energy, frames
            residual = blocks["mixture"] - sum(blocks[s] for s in SOURCES)
            mixture_energy += np.einsum("tc,tc->c", blocks["mixture"], blocks["mixture"])
            residual_energy += np.einsum("tc,tc->c", residual, residual)
            frames += len(residual)


def _mixture_problems(folder: Path) -> list[Problem]:
    """Compare the mixture with the sum of the sources (tolerance: see the module docstring)."""
    mixture_path = folder / "mixture.wav"
    try:
        mixture_energy, residual_energy, frames = mixture_residual(folder)
    except (RuntimeError, OSError) as exc:
        return [Problem(mixture_path, f"reading the stems failed part-way ({exc})")]
    allowed = np.maximum(mixture_energy * 10 ** (-MIN_MIXTURE_TO_RESIDUAL_DB / 10),
                         frames * QUANTISATION_RMS ** 2)
    failing = np.flatnonzero(residual_energy > allowed)
    if failing.size == 0:
        return []
    with np.errstate(divide="ignore"):
        ratio_db = 10 * np.log10(mixture_energy / residual_energy)
    detail = ", ".join(f"{CHANNEL_NAMES[c] if c < len(CHANNEL_NAMES) else c} channel {ratio_db[c]:.1f} dB"
                       for c in failing)
    message = (f"is not the sum of {', '.join(s + '.wav' for s in SOURCES)}: the residual is only "
               f"{detail} below the mixture (at least {MIN_MIXTURE_TO_RESIDUAL_DB:.0f} dB expected)")
    if folder.name in KNOWN_MIXTURE_ERRATA:
        log.warning("%s: %s; accepted, known dataset error (%s)", mixture_path, message,
                    KNOWN_MIXTURE_ERRATA[folder.name])
        return []
    return [Problem(mixture_path, message)]


def check_track(folder: Path, subtype: str | None = "PCM_16") -> list[Problem]:
    """All five stems present and valid, of equal length, and the mixture their sum."""
    problems, frames = [], {}
    for stem in STEMS:
        stem_problems, info = check_wav(folder / f"{stem}.wav", subtype)
        problems += stem_problems
        if info is not None:
            frames[stem] = info.frames
    if len(set(frames.values())) > 1:
        counts = list(frames.values())
        reference = "mixture" if "mixture" in frames else max(frames, key=lambda s: counts.count(frames[s]))
        for stem, count in frames.items():
            if count != frames[reference]:
                problems.append(Problem(folder / f"{stem}.wav", f"has {count} frames but {reference}.wav has "
                                        f"{frames[reference]}; all five stems of a track must have equal lengths"))
    if not problems:
        problems += _mixture_problems(folder)
    return problems


def check_dataset(root: str | os.PathLike, expect_full: bool = False,
                  subtype: str | None = "PCM_16") -> list[Problem]:
    """Every problem of a MUSDB18-HQ folder (root/{train,test}/<track>/<stem>.wav)."""
    root = Path(root)
    problems, tracks = _list_subsets(root, "wav")
    if expect_full:
        problems += _check_full(root, tracks, suffix="")
    folders = [folder for subset in SUBSETS for folder in tracks.get(subset, [])]
    for folder in tqdm(folders, desc="validate", unit="track", disable=None):
        problems += check_track(folder, subtype)
    return problems


# ---------------------------------------------------------------- compressed MUSDB18


def check_stem_file(path: Path) -> list[Problem]:
    """A `.stem.mp4`: five audio streams (mixture, drums, bass, other, vocals), 44.1 kHz stereo."""
    import ffmpeg  # ffmpeg-python, a dependency of stempeg
    import stempeg

    try:
        info = stempeg.Info(str(path))
    except FileNotFoundError:
        raise DataError("ffprobe not found: install ffmpeg (it ships ffprobe) to check .stem.mp4 files") from None
    except ffmpeg.Error as exc:
        reason = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        return [Problem(path, f"ffprobe cannot read it ({reason[0]})")]
    problems = []
    if info.nb_audio_streams != len(STEMS):
        problems.append(Problem(path, f"has {info.nb_audio_streams} audio streams, expected {len(STEMS)} "
                                      f"({', '.join(STEMS)})"))
    for index in range(min(info.nb_audio_streams, len(STEMS))):
        stream = f"stream {index} ({STEMS[index]})"
        if info.sample_rate(index) != SAMPLE_RATE:
            problems.append(Problem(path, f"{stream} sample rate is {info.sample_rate(index)} Hz, "
                                          f"expected {SAMPLE_RATE} Hz"))
        if info.channels(index) != CHANNELS:
            problems.append(Problem(path, f"{stream} has {info.channels(index)} channel(s), "
                                          f"expected {CHANNELS} (stereo)"))
    return problems


def check_stems_dataset(root: str | os.PathLike, expect_full: bool = False) -> list[Problem]:
    """Every problem of a compressed MUSDB18 folder (root/{train,test}/<track>.stem.mp4)."""
    root = Path(root)
    problems, tracks = _list_subsets(root, "stems")
    if expect_full:
        problems += _check_full(root, tracks, suffix=STEMS_SUFFIX)
    files = [path for subset in SUBSETS for path in tracks.get(subset, [])]
    for path in tqdm(files, desc="validate", unit="track", disable=None):
        problems += check_stem_file(path)
    return problems


# ---------------------------------------------------------------- entry points


def validate_or_raise(root: str | os.PathLike, expect_full: bool = False, dataset_format: str = "wav",
                      subtype: str | None = "PCM_16") -> None:
    """Raise DataError listing every problem (one a line, each naming its file) and the fix."""
    if dataset_format not in DATASET_FORMATS:
        raise DataError(f"unknown dataset format {dataset_format!r}; use one of {', '.join(DATASET_FORMATS)}")
    if dataset_format == "wav":
        problems = check_dataset(root, expect_full=expect_full, subtype=subtype)
    else:
        problems = check_stems_dataset(root, expect_full=expect_full)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise DataError(f"dataset {root} has {len(problems)} problem(s):\n{lines}\n{FIX_HINT}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="dataset folder holding train/ and test/")
    parser.add_argument("--manifest", type=Path, metavar="OUT.json",
                        help="write the dataset manifest (sizes, sha256, manifest_hash) here when valid")
    parser.add_argument("--full", action="store_true",
                        help="expect the full dataset: 100 train and 50 test tracks with the official names")
    parser.add_argument("--format", choices=DATASET_FORMATS, default="wav", dest="dataset_format",
                        help="wav: MUSDB18-HQ track folders (default); stems: compressed MUSDB18 .stem.mp4 files")
    parser.add_argument("--subtype", default="PCM_16",
                        help="sample format every wav must have (default PCM_16, MUSDB18-HQ's; 'any' to skip)")


def run(args: argparse.Namespace) -> int:
    validate_or_raise(args.root, expect_full=args.full, dataset_format=args.dataset_format,
                      subtype=None if args.subtype == "any" else args.subtype)
    print(f"{args.root}: valid ({args.dataset_format})")
    if args.manifest is not None:
        manifest = write_manifest(args.root, args.manifest, dataset_format=args.dataset_format)
        print(f"manifest: {args.manifest} ({len(manifest['files'])} files, "
              f"manifest_hash {manifest['manifest_hash']})")
    return 0
