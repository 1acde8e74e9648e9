"""HTTP download with validated Range resume, one fetch per file at a time, bounded retries, and
checksums of the bytes on disk (stdlib urllib).

`download_file(url, dest)` writes to `<dest>.part` and keeps the server's validator (a strong
ETag, else Last-Modified) beside it in `<dest>.part.json`. A re-run (or a retry after a dropped
connection) continues from the part's size with `Range` and `If-Range: <validator>`: a file that
changed on the server comes back whole (200) and the download starts again, instead of gluing
the end of one version onto the start of another. Without a validator there is no resume. When
the transfer ends, the part is fsynced, then its size and checksums are read back from disk;
only if they match is it renamed onto `dest`, so a file at `dest` is always complete. The whole
download holds the lock of `dest` (locking.file_lock): a second fetch of the same file waits.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import __version__
from ..errors import ConfigError, DownloadError
from ..io import fsync_dir, write_json
from .locking import file_lock

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Statuses worth another try (rate limiting, overload, gateway hiccups); others are final.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 120.0
USER_AGENT = f"dannasep/{__version__} (+urllib)"
# Write errors that mean "no room": the part is kept so that a re-run resumes.
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class TransientError(Exception):
    """A failure that another attempt may fix (dropped connection, timeout, 5xx)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)


@dataclass(frozen=True)
class Download:
    """What download_file verified: digests of the file on disk, its size, and whether the
    end of the transfer was known (Content-Length, Content-Range, chunked framing, or `size`)
    rather than only "the server closed the connection"."""

    digests: dict[str, str]
    size: int
    length_known: bool


def part_path(dest: str | os.PathLike) -> Path:
    """Where the unfinished download of `dest` lives (same folder, so the final rename is atomic)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def hash_file(path: str | os.PathLike, algorithms=("sha256",),
              chunk_size: int = CHUNK_SIZE) -> dict[str, str]:
    """Hex digests of a file, read in chunks (constant memory for any size)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def checked_digest(value: str | None, algorithm: str, option: str) -> str | None:
    """`value` in lower case if it is a hex digest of `algorithm`; ConfigError naming `option` if not.

    Checked before anything is downloaded (a typo must not cost a 22 GB download first).
    """
    if value is None:
        return None
    digits = hashlib.new(algorithm).digest_size * 2
    if not re.fullmatch(rf"[0-9a-fA-F]{{{digits}}}", value.strip()):
        raise ConfigError(f"{option} {value!r}: not an {algorithm} ({digits} hex digits); copy it again from "
                          "where it is published, or leave the option out")
    return value.strip().lower()


def http_failure(url: str, exc: Exception) -> Exception:
    """TransientError for failures worth retrying, DownloadError for final ones."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        if exc.code in RETRYABLE_STATUS:
            retry_after = exc.headers.get("Retry-After", "")
            return TransientError(f"HTTP {exc.code} {exc.reason}",
                                  float(retry_after) if retry_after.isdigit() else 0.0)
        return DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL (and the network) and "
                             "re-run")
    return TransientError(f"cannot connect: {getattr(exc, 'reason', exc)}")


def strong_validator(headers) -> str | None:
    """What `If-Range` may carry: a strong ETag, else Last-Modified (weak ETags are not allowed)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _write_chunk(f, chunk: bytes) -> None:
    f.write(chunk)


class _PartFile:
    """The growing `.part`, its size, and the validator of the server's file it holds bytes of."""

    def __init__(self, path: Path, source: str):
        self.path, self.source = path, source
        self.meta = path.with_name(path.name + ".json")
        self.size = path.stat().st_size if path.exists() else 0
        self.validator = self._recorded_validator()
        self.length_known = False
        if self.size and not self.validator:
            log.warning("%s: kept from an earlier run without the server's ETag or Last-Modified, so "
                        "resuming could mix two versions of the file; starting again", path)
            self.restart()

    def _recorded_validator(self) -> str | None:
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            return None
        return meta.get("validator") if isinstance(meta, dict) and meta.get("url") == self.source else None

    def restart(self) -> None:
        """Drop what was downloaded: the next bytes are the file's first."""
        self.path.write_bytes(b"")
        self.meta.unlink(missing_ok=True)
        self.size, self.validator = 0, None

    def remember(self, validator: str | None) -> None:
        """Record (before any byte is written) which version of the server's file this part holds."""
        self.validator = validator
        if validator:
            write_json(self.meta, {"url": self.source, "validator": validator})
        else:
            self.meta.unlink(missing_ok=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from `bytes 100-199/1000` or `bytes */1000`; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _page_title(response) -> str:
    text = response.read(64 * 1024).decode("utf-8", "replace")
    match = re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I)
    return f" ('{' '.join(match.group(1).split())}')" if match else ""


def _check_free_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{folder}: {needed} bytes are needed for the rest of {url} but only {free} are free; "
            "free some space (or choose another --download-dir) and re-run"
        )


def _attempt(url: str, part: _PartFile, size: int | None, opener, timeout: float, chunk_size: int,
             bar: tqdm) -> None:
    """One HTTP request appending to `part`; returns when the file is complete.

    Raises TransientError for failures worth retrying and DownloadError for final ones.
    """
    if part.size and not part.validator:  # nothing to tie the kept bytes to this version of the file
        part.restart()
        bar.reset(total=size)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
        headers["If-Range"] = part.validator
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and part.size:
            # Range not satisfiable (and the validator matched): complete, or longer than the file.
            _, total = _content_range(exc.headers.get("Content-Range"))
            exc.close()
            if total == part.size or (total is None and size == part.size):
                part.length_known = True
                return
            log.warning("%s: server refused to resume at byte %d; starting again", url, part.size)
            part.restart()
            bar.reset(total=size)
            raise TransientError("HTTP 416 (range not satisfiable), restarting from byte 0") from None
        raise http_failure(url, exc) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise http_failure(url, exc) from None

    with response:
        validator = strong_validator(response.headers)
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != part.size or (validator and validator != part.validator):
                part.restart()
                bar.reset(total=size)
                raise TransientError(f"server resumed at byte {start} of version {validator}, asked for "
                                     f"byte {headers['Range'][6:-1]} of {headers['If-Range']}; restarting")
        else:
            if part.size:
                log.warning("%s: the file changed on the server (or it does not resume); downloading "
                            "it from the start", url)
                part.restart()
                bar.reset(total=size)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            part.remember(validator)
        if response.headers.get_content_type() == "text/html":
            part.discard()
            raise DownloadError(f"{url}: the server sent a web page{_page_title(response)} instead of the "
                                "file; open the URL in a browser to see why (moved, quota, login)")
        if size is not None and total is not None and total != size:
            part.discard()  # bytes of some other file: not worth resuming
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
                    raise TransientError(f"connection lost at byte {part.size}: {exc}") from None
                if not chunk:
                    break
                _write_chunk(f, chunk)
                part.size += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        chunked = bool(getattr(response, "chunked", False))
    if total is not None and part.size < total:
        raise TransientError(f"connection closed at byte {part.size} of {total}")
    part.length_known = total is not None or chunked


def _transfer(url: str, part: _PartFile, size: int | None, opener, resolve, retries: int, backoff: float,
              timeout: float, chunk_size: int, bar: tqdm) -> None:
    """Attempts until the part is complete; gives up after `retries` attempts in a row without
    reaching further into the file than before."""
    failures, furthest = 0, part.size
    while not (size is not None and part.size == size and part.validator):
        try:
            target = resolve(opener, timeout) if resolve else url
            _attempt(target, part, size, opener, timeout, chunk_size, bar)
            return
        except TransientError as exc:
            failures = 1 if part.size > furthest else failures + 1
            furthest = max(furthest, part.size)
            if failures > retries:
                kept = (f"{part.size} bytes are kept in {part.path}: re-run to resume"
                        if part.size and part.validator else "check the URL and the network, then re-run")
                raise DownloadError(f"{url}: giving up after {failures} failed attempts ({exc}); {kept}") from None
            wait = min(max(backoff * 2 ** (failures - 1), exc.retry_after), MAX_BACKOFF_SECONDS)
            log.warning("%s: %s; retrying in %.1f s (%d/%d)", url, exc, wait, failures, retries)
            time.sleep(wait)
    part.length_known = True  # the expected size was reached by a resumed part


def _verify_on_disk(part: _PartFile, dest: Path, url: str, size: int | None, checksums: dict[str, str],
                    sha256_prefix: str | None, algorithms, length_known: bool, hint: str) -> dict[str, str]:
    """Read the part back from disk; raise DownloadError (and remove it) unless it is the file."""
    on_disk = part.path.stat().st_size
    digests = hash_file(part.path, algorithms)
    problem = None
    if on_disk != part.size:
        problem = f"size on disk is {on_disk} bytes but {part.size} were received (something else wrote to it)"
    elif size is not None and on_disk != size:
        problem = f"size is {on_disk} bytes, expected {size}"
    elif sha256_prefix and not digests["sha256"].startswith(sha256_prefix):
        problem = f"sha256 is {digests['sha256']}, which does not start with {sha256_prefix}"
    else:
        for name, expected in checksums.items():
            if digests[name] != expected:
                problem = f"{name} is {digests[name]}, expected {expected}"
                break
    if problem:
        part.discard()
        if not length_known:
            hint += (". The server sent no length, so the connection may have closed early: re-run to "
                     "download it again")
        raise DownloadError(f"{dest}: downloaded file's {problem}{hint}. The download was removed")
    return digests


def download_file(url: str, dest: str | os.PathLike, *, size: int | None = None,
                  checksums: dict[str, str] | None = None, algorithms=(), sha256_prefix: str | None = None,
                  require_known_length: bool = False, source: str | None = None,
                  resolve: Callable | None = None, retries: int = 5, backoff: float = 2.0,
                  timeout: float = 60.0, chunk_size: int = CHUNK_SIZE, progress: bool = True,
                  mismatch_hint: str = "") -> Download:
    """Download `url` to `dest` with resume; return what was verified (see Download).

    size: expected byte count (checked against the server's headers early and the file at the end).
    checksums: {"md5": hex, ...} that must match; `algorithms` adds digests to compute without
    checking them; sha256_prefix: the file's sha256 must start with it (torch.hub's convention).
    require_known_length: refuse a file whose end was only "the connection closed" (it may be
    truncated) when nothing else checks it. source: what the part is a download of, for the
    resume record (default `url`); resolve(opener, timeout): the URL to request on each attempt
    (Google Drive's confirmation step), sharing the opener's cookies. retries: consecutive failed
    attempts allowed without progress, with backoff * 2**k seconds in between. timeout: socket
    timeout in seconds. mismatch_hint: appended to a checksum-mismatch message.
    """
    dest = Path(dest)
    checksums = {name.lower(): value.lower() for name, value in (checksums or {}).items()}
    all_algorithms = sorted(set(algorithms) | set(checksums) | ({"sha256"} if sha256_prefix else set()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with file_lock(dest):
        part_file = part_path(dest)
        if size is not None and part_file.exists() and part_file.stat().st_size > size:
            log.warning("%s: longer than the expected %d bytes; starting again", part_file, size)
            part_file.unlink()
        part = _PartFile(part_file, source or url)
        bar = tqdm(total=size, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        try:
            _transfer(url, part, size, opener, resolve, retries, backoff, timeout, chunk_size, bar)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            kept = part_file.stat().st_size if part_file.exists() else 0
            raise DownloadError(f"{part_file}: {os.strerror(exc.errno)} after {kept} bytes of {url}; they are "
                                "kept to resume: free some space (or use a folder with room for the file) "
                                "and re-run") from None
        finally:
            bar.close()
        length_known = part.length_known or size is not None
        if require_known_length and not length_known:
            part.discard()
            raise DownloadError(
                f"{url}: the server sent neither a length nor chunked framing, so a connection closed "
                f"early cannot be told from the end of the file, and nothing else checks the {part.size} "
                "bytes received; they were removed and nothing was recorded. Give the file's sha256 "
                "(--sha256) to download it anyway, or re-run later")
        digests = _verify_on_disk(part, dest, url, size, checksums, sha256_prefix, all_algorithms,
                                  length_known, mismatch_hint)
        os.replace(part_file, dest)
        fsync_dir(Path(dest).parent)
        part.meta.unlink(missing_ok=True)
    log.info("%s: downloaded and verified (%d bytes)", dest, part.size)
    return Download(digests, part.size, length_known)


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
