"""HTTP download with Range resume, bounded retries and streamed checksums (stdlib urllib).

`download_file(url, dest)` writes to `<dest>.part`; a re-run (or a retry after a dropped
connection) continues from the part's size with a `Range: bytes=<size>-` request. The part is
hashed as it grows (an existing part is hashed first), so a resumed file is still hashed in
full. Only when its size and checksums match is the part renamed onto `dest`: a file at `dest`
is always complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..errors import DownloadError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Statuses worth another try (rate limiting, overload, gateway hiccups); others are final.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 120.0
USER_AGENT = f"dannasep/{__version__} (+urllib)"


class _Transient(Exception):
    """A failure that another attempt may fix (dropped connection, timeout, 5xx)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)


def part_path(dest: str | os.PathLike) -> Path:
    """Where the unfinished download of `dest` lives (same folder, so the final rename is atomic)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def hash_file(path: str | os.PathLike, algorithms=("sha256",),
              chunk_size: int = CHUNK_SIZE) -> dict[str, str]:
    """Hex digests of a file, read in chunks (constant memory for any size)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    _hash_into(hashers, Path(path), chunk_size)
    return {name: h.hexdigest() for name, h in hashers.items()}


def _hash_into(hashers: dict, path: Path, chunk_size: int) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for h in hashers.values():
                h.update(chunk)


class _PartFile:
    """The growing `.part` file together with the running hashes of everything in it."""

    def __init__(self, path: Path, algorithms, chunk_size: int):
        self.path = path
        self.algorithms = tuple(algorithms)
        self.hashers = {name: hashlib.new(name) for name in self.algorithms}
        self.size = path.stat().st_size if path.exists() else 0
        if self.size:
            log.info("%s: resuming; hashing the %d bytes already downloaded", path, self.size)
            _hash_into(self.hashers, path, chunk_size)

    def restart(self) -> None:
        """Drop what was downloaded: the next bytes are the file's first."""
        self.path.write_bytes(b"")
        self.hashers = {name: hashlib.new(name) for name in self.algorithms}
        self.size = 0

    def digests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self.hashers.items()}


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from `bytes 100-199/1000` or `bytes */1000`; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _check_free_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{folder}: {needed} bytes are needed for the rest of {url} but only {free} are free; "
            "free some space (or choose another --download-dir) and re-run"
        )


def _attempt(url: str, part: _PartFile, size: int | None, timeout: float, chunk_size: int,
             bar: tqdm) -> None:
    """One HTTP request appending to `part`; returns when the file is complete.

    Raises _Transient for failures worth retrying and DownloadError for final ones.
    """
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and part.size:
            # Range not satisfiable: the part is already complete, or longer than the file.
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == part.size or (total is None and size == part.size):
                return
            log.warning("%s: server refused to resume at byte %d; starting again", url, part.size)
            part.restart()
            bar.reset(total=size)
            raise _Transient("HTTP 416 (range not satisfiable), restarting from byte 0") from None
        if exc.code in RETRYABLE_STATUS:
            retry_after = exc.headers.get("Retry-After", "")
            raise _Transient(f"HTTP {exc.code} {exc.reason}",
                             float(retry_after) if retry_after.isdigit() else 0.0) from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL (and the network) "
                            "and re-run") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Transient(f"cannot connect: {getattr(exc, 'reason', exc)}") from None

    with response:
        total = None
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != part.size:
                part.restart()
                bar.reset(total=size)
                raise _Transient(f"server resumed at byte {start}, asked for {headers['Range']}; "
                                 "restarting")
        else:
            if part.size:
                log.warning("%s: server ignored the Range request; downloading from the start", url)
                part.restart()
                bar.reset(total=size)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if size is not None and total is not None and total != size:
            part.path.unlink(missing_ok=True)  # bytes of some other file: not worth resuming
            raise DownloadError(
                f"{url}: the server reports {total} bytes, expected {size}; the file at the URL is not "
                "the expected one (check --url and --size)"
            )
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        _check_free_space(part.path.parent, (total or 0) - part.size, url)

        with open(part.path, "ab") as f:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"connection lost at byte {part.size}: {exc}") from None
                if not chunk:
                    break
                f.write(chunk)
                for h in part.hashers.values():
                    h.update(chunk)
                part.size += len(chunk)
                bar.update(len(chunk))
    if total is not None and part.size < total:
        raise _Transient(f"connection closed at byte {part.size} of {total}")


def _verify(path: Path, dest: Path, size: int | None, actual_size: int, digests: dict[str, str],
            checksums: dict[str, str], hint: str) -> None:
    """Raise DownloadError (and remove `path`) unless size and checksums match."""
    problem = None
    if size is not None and actual_size != size:
        problem = f"size is {actual_size} bytes, expected {size}"
    else:
        for name, expected in checksums.items():
            if digests[name] != expected.lower():
                problem = f"{name} is {digests[name]}, expected {expected.lower()}"
                break
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{dest}: downloaded file's {problem}{hint}. The download was removed; "
                            "re-run to download it again")


def download_file(url: str, dest: str | os.PathLike, *, size: int | None = None,
                  checksums: dict[str, str] | None = None, algorithms=(), retries: int = 5,
                  backoff: float = 2.0, timeout: float = 60.0, chunk_size: int = CHUNK_SIZE,
                  progress: bool = True, mismatch_hint: str = "") -> dict[str, str]:
    """Download `url` to `dest` with resume; return the hex digests of the file.

    size: expected byte count (checked against the server's headers early and the file at the end).
    checksums: {"md5": hex, ...} that must match; `algorithms` adds digests to compute without
    checking them. retries: consecutive failed attempts allowed without progress (a dropped
    connection that delivered bytes does not count), with backoff * 2**k seconds in between.
    timeout: socket timeout in seconds. mismatch_hint: appended to a checksum-mismatch message.
    """
    dest = Path(dest)
    checksums = {name.lower(): value for name, value in (checksums or {}).items()}
    all_algorithms = sorted(set(algorithms) | set(checksums))
    part_file = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if size is not None and part_file.exists() and part_file.stat().st_size > size:
        log.warning("%s: longer than the expected %d bytes; starting again", part_file, size)
        part_file.unlink()
    part = _PartFile(part_file, all_algorithms, chunk_size)

    bar = tqdm(total=size, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
               desc=dest.name, disable=not progress, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    failures = 0
    try:
        while not (size is not None and part.size == size):
            before = part.size
            try:
                _attempt(url, part, size, timeout, chunk_size, bar)
                break
            except _Transient as exc:
                failures = 1 if part.size > before else failures + 1
                if failures > retries:
                    kept = (f"{part.size} bytes are kept in {part_file}: re-run to resume" if part.size
                            else "check the URL and the network, then re-run")
                    raise DownloadError(f"{url}: giving up after {failures} failed attempts ({exc}); "
                                        f"{kept}") from None
                wait = min(max(backoff * 2 ** (failures - 1), exc.retry_after), MAX_BACKOFF_SECONDS)
                log.warning("%s: %s; retrying in %.1f s (%d/%d)", url, exc, wait, failures, retries)
                time.sleep(wait)
    finally:
        bar.close()

    digests = part.digests()
    _verify(part_file, dest, size, part.size, digests, checksums, mismatch_hint)
    os.replace(part_file, dest)
    log.info("%s: downloaded and verified (%d bytes)", dest, part.size)
    return digests


def verify_file(path: str | os.PathLike, *, size: int | None = None,
                checksums: dict[str, str] | None = None, algorithms=()) -> tuple[bool, str, dict[str, str]]:
    """Check a file already on disk: (ok, what differs, digests). Nothing is removed."""
    path = Path(path)
    checksums = {name.lower(): value.lower() for name, value in (checksums or {}).items()}
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return False, f"size is {actual_size} bytes, expected {size}", {}
    digests = hash_file(path, sorted(set(algorithms) | set(checksums)))
    for name, expected in checksums.items():
        if digests[name] != expected:
            return False, f"{name} is {digests[name]}, expected {expected}", digests
    return True, "", digests
