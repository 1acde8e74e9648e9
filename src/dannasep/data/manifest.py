"""Dataset manifest: every data file with its size and sha256, and one hash over that list.

Checkpoints record `manifest_hash`, so it depends only on the dataset's content: paths are
relative to the dataset root (POSIX separators, Unicode NFC so a copy made on macOS hashes the
same), entries are sorted by path, and the JSON that is hashed has sorted keys and no spaces.
Modification times and the root's absolute location never enter it.

Only the files the pipeline reads are listed: the five stems of every track folder
(`wav` format, MUSDB18-HQ) or the `<track>.stem.mp4` files (`stems` format, compressed MUSDB18).
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path

from tqdm import tqdm

from ..constants import SAMPLE_RATE, STEMS, SUBSETS
from ..errors import DataError
from ..io import sha256_file, write_json

STEMS_SUFFIX = ".stem.mp4"
DATASET_FORMATS = ("wav", "stems")
FORMAT_NAMES = {"wav": "musdb18hq-wav", "stems": "musdb18-stem-mp4"}


def _visible(path: Path) -> bool:
    """Hidden entries (.DS_Store, ._AppleDouble, editor files) are never tracks."""
    return not path.name.startswith(".")


def track_name(path: Path) -> str:
    """A track's name: its folder name (wav) or its file name without `.stem.mp4` (stems)."""
    return path.name[: -len(STEMS_SUFFIX)] if path.name.endswith(STEMS_SUFFIX) else path.name


def list_tracks(subset_dir: Path, dataset_format: str = "wav") -> list[Path]:
    """Track folders (wav) or `.stem.mp4` files (stems) in one subset folder, sorted by name."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"dataset_format must be one of {DATASET_FORMATS}, not {dataset_format!r}")
    if dataset_format == "wav":
        found = [p for p in subset_dir.iterdir() if p.is_dir() and _visible(p)]
    else:
        found = [p for p in subset_dir.iterdir()
                 if p.is_file() and _visible(p) and p.name.endswith(STEMS_SUFFIX)]
    return sorted(found, key=lambda p: p.name)


def dataset_files(root: Path, dataset_format: str = "wav") -> list[Path]:
    """Every data file under `root` that the pipeline reads (absolute paths)."""
    files = []
    for subset in SUBSETS:
        subset_dir = root / subset
        if not subset_dir.is_dir():
            continue
        for track in list_tracks(subset_dir, dataset_format):
            if dataset_format == "stems":
                files.append(track)
            else:
                files.extend(track / f"{stem}.wav" for stem in STEMS if (track / f"{stem}.wav").is_file())
    return files


def canonical_json(obj) -> bytes:
    """The one byte string an object hashes as: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_hash(files: list[dict]) -> str:
    """sha256 of the canonical JSON of the file list (entries sorted by path first)."""
    return hashlib.sha256(canonical_json(sorted(files, key=lambda e: e["path"]))).hexdigest()


def _relative_key(path: Path, root: Path) -> str:
    return unicodedata.normalize("NFC", path.relative_to(root).as_posix())


def build_manifest(root: str | os.PathLike, dataset_format: str = "wav") -> dict:
    """Describe a dataset that passed validation.

    Returns {"format", "sample_rate", "tracks": {subset: [names]}, "files": [{"path", "bytes",
    "sha256"}], "manifest_hash"}. `sample_rate` is the project rate that validation enforces.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist; create it (dannasep synth / fetch) first")
    if dataset_format not in DATASET_FORMATS:
        raise DataError(f"unknown dataset format {dataset_format!r}; use one of {', '.join(DATASET_FORMATS)}")
    paths = dataset_files(root, dataset_format)
    files = []
    with tqdm(total=sum(p.stat().st_size for p in paths), desc="hash", unit="B", unit_scale=True,
              disable=None) as progress:
        for path in paths:
            files.append({"path": _relative_key(path, root), "bytes": path.stat().st_size,
                          "sha256": sha256_file(path, progress)})
    files.sort(key=lambda e: e["path"])
    tracks = {
        subset: sorted(unicodedata.normalize("NFC", track_name(p))
                       for p in list_tracks(root / subset, dataset_format))
        for subset in SUBSETS if (root / subset).is_dir()
    }
    return {
        "format": FORMAT_NAMES[dataset_format],
        "sample_rate": SAMPLE_RATE,
        "tracks": tracks,
        "files": files,
        "manifest_hash": manifest_hash(files),
    }


def write_manifest(root: str | os.PathLike, out_path: str | os.PathLike,
                   dataset_format: str = "wav") -> dict:
    """Build the manifest and write it atomically as JSON; return it."""
    manifest = build_manifest(root, dataset_format)
    write_json(out_path, manifest)
    return manifest
