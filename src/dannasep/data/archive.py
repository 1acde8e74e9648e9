"""Safe extraction of a MUSDB18-HQ zip into a folder that appears only once complete and valid.

Every member is checked before anything is written: its name (no absolute paths, no `..`, no
symlinks), its compression ratio, and the total size of all members (archive bombs); files are
streamed into a temporary sibling of the target (so CRC errors surface
while reading; zipfile never writes more than a member's declared size), the result is
validated, and only then renamed into place (io.atomic_dir). A full disk stops it with one line,
leaving nothing at the target and the archive where it was.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from ..constants import SUBSETS
from ..errors import DataError
from ..io import atomic_dir
from .download import DISK_FULL

log = logging.getLogger(__name__)

# Folders that archivers add and that are never part of the dataset.
IGNORED_TOP_FOLDERS = ("__MACOSX",)
COPY_BUFFER = 1 << 20
# MUSDB18-HQ holds about 32 GB of WAV (~10 h x 5 files x 176,400 B/s): twice that is room enough.
MAX_EXTRACTED_BYTES = 64 * 2**30
# Deflate cannot exceed about 1032:1, which a silent stem (all-zero WAV) reaches, so the cap sits
# just above it: it refuses members (bzip2, lzma) that expand beyond what any deflated WAV can,
# and the total cap bounds what deflated members can add up to.
MAX_COMPRESSION_RATIO = 1100.0


def unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this member could write outside the target folder (None if it cannot)."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in parts:
        return "'..' path component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _check_sizes(archive: Path, members: list[zipfile.ZipInfo], max_total_bytes: int,
                 max_ratio: float) -> int:
    """Total uncompressed size of `members`; DataError if it, or one member's ratio, is too large."""
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > max_ratio:
            raise DataError(f"{archive}: member '{info.filename}' expands {ratio:.0f} times ({info.compress_size} "
                            f"-> {info.file_size} bytes), above the cap of {max_ratio:g} (an archive bomb?); use "
                            "the official archive, or raise --max-ratio if you trust this one")
    total = sum(i.file_size for i in members)
    if total > max_total_bytes:
        raise DataError(f"{archive}: its members add up to {total} bytes, above the cap of {max_total_bytes} "
                        "(an archive bomb?); use the official archive, or raise --max-extracted-bytes if you "
                        "trust this one")
    return total


def _dataset_prefix(archive: Path, names: list[str]) -> str:
    """'' if train/ and test/ are at the top level, 'X/' if they are under one top folder X."""
    def has_subsets(prefix: str) -> bool:
        return any(n.startswith(prefix + s + "/") for n in names for s in SUBSETS)

    if has_subsets(""):
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and has_subsets(f"{next(iter(tops))}/"):
        return f"{next(iter(tops))}/"
    raise DataError(
        f"{archive}: found no train/ and test/ folders at the top level or under one top folder "
        f"(top-level entries: {', '.join(sorted(tops)[:5]) or 'none'}); is this the MUSDB18-HQ zip?"
    )


def extract_dataset(archive: str | os.PathLike, out: str | os.PathLike,
                    validate: Callable[[Path], None] | None = None,
                    max_total_bytes: int = MAX_EXTRACTED_BYTES,
                    max_ratio: float = MAX_COMPRESSION_RATIO) -> int:
    """Extract the train/ and test/ trees of `archive` into `out`; return the number of files.

    max_total_bytes, max_ratio: caps on the members' total size and on each member's size over
    its compressed size, checked before anything is written. `validate(tmp_root)` runs on the extracted tree before the rename and raises DataError to
    reject it. On any error nothing is left at `out` (nor in its temporary sibling).
    """
    archive, out = Path(archive), Path(out)
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError(f"{archive}: archive not found; check the path") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}); delete it and download it "
                        "again") from None
    with zf:
        members = [i for i in zf.infolist() if i.filename.split("/", 1)[0] not in IGNORED_TOP_FOLDERS]
        for info in members:
            reason = unsafe_reason(info)
            if reason:
                raise DataError(f"{archive}: refusing member '{info.filename}' ({reason}): it could write "
                                "outside the dataset folder; use the official archive")
        prefix = _dataset_prefix(archive, [i.filename for i in members])
        wanted = [i for i in members if i.filename[len(prefix):].split("/", 1)[0] in SUBSETS
                  and i.filename.startswith(prefix)]
        skipped = len(members) - len(wanted)
        if skipped:
            log.info("%s: skipping %d entries outside train/ and test/", archive, skipped)

        needed = _check_sizes(archive, wanted, max_total_bytes, max_ratio)
        out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out.parent).free
        if needed > free:
            raise DataError(f"{out.parent}: extracting {archive} needs {needed} bytes but only {free} are "
                            "free; free some space or choose another --out")

        files = 0
        with atomic_dir(out) as tmp:
            root = tmp.resolve()
            for info in wanted:
                target = (tmp / info.filename[len(prefix):]).resolve()
                if not target.is_relative_to(root):  # defence in depth; unsafe_reason should catch it
                    raise DataError(f"{archive}: refusing member '{info.filename}': it escapes the target")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, COPY_BUFFER)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                    raise DataError(f"{archive}: member '{info.filename}' is corrupt ({exc}); delete the "
                                    "archive and download it again") from None
                except OSError as exc:
                    if exc.errno not in DISK_FULL:
                        raise
                    raise DataError(f"{out / info.filename[len(prefix):]}: {os.strerror(exc.errno)} while "
                                    f"extracting {archive}; nothing was kept at {out} and the archive is "
                                    "kept: free some space (or choose another --out) and re-run") from None
                files += 1
            if validate is not None:
                try:
                    validate(tmp)
                except DataError as exc:  # name the folder the user knows, not the vanished temp one
                    raise DataError(f"{archive}: the extracted dataset is invalid, so {out} was not "
                                    f"created:\n{str(exc).replace(str(tmp), str(out))}") from None
    log.info("%s: extracted %d files into %s", archive, files, out)
    return files
