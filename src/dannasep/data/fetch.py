"""`dannasep fetch`: download MUSDB18-HQ or the official X-UMX weights, verified.

musdb18hq: the Zenodo zip (resumable, size + md5 checked) is extracted, validated and renamed
into place, so the dataset folder exists only when complete. xumx-weights: no checksum is
published, so the first download's sha256 is recorded in `<file>.sha256` and every later
download (or a file already present) must match it (trust on first use).
Defaults (URLs, md5, size, paths) come from workflow/schemas/config.schema.yaml.
"""

from __future__ import annotations

import argparse
import logging
import re
import urllib.parse
from pathlib import Path

from ..errors import DataError, DownloadError
from ..io import write_text
from .archive import extract_dataset
from .download import download_file, verify_file

log = logging.getLogger(__name__)

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def _schema_defaults() -> dict:
    from ..config import validate_config

    return validate_config({}, source="defaults")


def _name_from_url(url: str, fallback: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or fallback


def _validator(full_check: bool):
    def validate(root: Path) -> None:
        from .validate import validate_or_raise  # written alongside; imported only when needed

        validate_or_raise(root, expect_full=full_check)

    return validate


def fetch_musdb18hq(out: str | Path, *, url: str | None = None, md5: str | None = None,
                    size: int | None = None, download_dir: str | Path | None = None,
                    archive: str | Path | None = None, full_check: bool = True, retries: int = 5,
                    backoff: float = 2.0, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download (or take `archive`), verify, extract and validate MUSDB18-HQ into `out`.

    With `archive`, md5 and size are checked only if given (a user's own copy is never deleted).
    Without it, the zip goes to `download_dir/<name from url>` and is kept for later runs.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; remove it to fetch again, or use it "
                        "as it is (dataset.musdb18hq.local_path)")
    checksums = {"md5": md5} if md5 else {}
    if archive is not None:
        zip_path = Path(archive)
        if not zip_path.is_file():
            raise DataError(f"{zip_path}: archive not found; check --archive")
        if size is not None or checksums:
            ok, problem, _ = verify_file(zip_path, size=size, checksums=checksums)
            if not ok:
                raise DownloadError(f"{zip_path}: {problem}; the archive is incomplete or not MUSDB18-HQ: "
                                    "download it again (or omit --archive to let dannasep fetch it)")
    else:
        if not url or download_dir is None:
            raise DownloadError("fetch musdb18hq: --url and --download-dir are needed without --archive")
        zip_path = Path(download_dir) / _name_from_url(url, "musdb18hq.zip")
        if zip_path.exists():
            log.info("%s: already downloaded; verifying it", zip_path)
            ok, problem, _ = verify_file(zip_path, size=size, checksums=checksums)
            if not ok:
                log.warning("%s: %s; removing it and downloading again", zip_path, problem)
                zip_path.unlink()
        if not zip_path.exists():
            download_file(url, zip_path, size=size, checksums=checksums, retries=retries,
                          backoff=backoff, timeout=timeout, progress=progress)
    extract_dataset(zip_path, out, validate=_validator(full_check))
    return out


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def read_recorded_sha256(path: str | Path) -> str | None:
    """The sha256 recorded beside `path` (`sha256sum` format), or None if none was recorded."""
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    fields = sidecar.read_text().split()
    if not fields or not SHA256_PATTERN.fullmatch(fields[0].lower()):
        raise DownloadError(f"{sidecar}: not a sha256 record; delete it (the next fetch records a new one)")
    return fields[0].lower()


def record_sha256(path: str | Path, digest: str) -> None:
    write_text(sidecar_path(path), f"{digest}  {Path(path).name}\n")


def fetch_xumx_weights(out: str | Path, *, url: str, sha256: str | None = None,
                       accept_new_checksum: bool = False, retries: int = 5, backoff: float = 2.0,
                       timeout: float = 60.0, progress: bool = True) -> str:
    """Make sure `out` holds the weights at `url` with a trusted sha256; return the sha256.

    The sha256 must equal `sha256` if given, and the one recorded in `<out>.sha256` unless
    `accept_new_checksum` (which records the new one instead).
    """
    out = Path(out)
    expected = sha256.lower() if sha256 else None
    if expected and not SHA256_PATTERN.fullmatch(expected):
        raise DownloadError(f"--sha256 {sha256}: not a sha256 (64 hex digits)")
    recorded = None if accept_new_checksum else read_recorded_sha256(out)
    sidecar = sidecar_path(out)
    accept_hint = (f" (recorded in {sidecar}); if the new file is trusted, re-run with "
                   "--accept-new-checksum")
    if expected and recorded and expected != recorded:
        raise DownloadError(f"{out}: --sha256 {expected} differs from the sha256 {recorded} recorded in "
                            f"{sidecar}; re-run with --accept-new-checksum to trust the new one")

    actual = None
    if out.exists():
        actual = verify_file(out, algorithms=("sha256",))[2]["sha256"]
        if expected and actual != expected:
            log.warning("%s: sha256 is %s, expected %s; removing it and downloading again",
                        out, actual, expected)
            out.unlink()
            actual = None
        elif recorded and actual != recorded:
            raise DownloadError(f"{out}: sha256 is {actual}, expected {recorded}{accept_hint}; otherwise "
                                "delete the file and re-run to download it again")
        else:
            log.info("%s: present, sha256 %s", out, actual)
    if actual is None:
        want = expected or recorded
        hint = accept_hint if recorded and not expected else ""
        digests = download_file(url, out, checksums={"sha256": want} if want else {},
                                algorithms=("sha256",), retries=retries, backoff=backoff,
                                timeout=timeout, progress=progress, mismatch_hint=hint)
        actual = digests["sha256"]
    if accept_new_checksum or recorded != actual:
        record_sha256(out, actual)
        log.info("%s: recorded sha256 %s", sidecar, actual)
    return actual


def _add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retries", type=int, default=5,
                   help="failed attempts in a row before giving up (default 5)")
    p.add_argument("--backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubling each time (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="<what>", required=True)
    m = sub.add_parser("musdb18hq", help="MUSDB18-HQ from Zenodo (record 3338373)",
                       description="Download (resumable), verify (size, md5), extract and validate "
                                   "MUSDB18-HQ. --url/--md5/--size/--download-dir default to the "
                                   "config schema's values.")
    m.add_argument("--out", required=True, help="dataset folder to create (train/ and test/ inside)")
    m.add_argument("--url", help="archive URL")
    m.add_argument("--md5", help="expected md5 of the archive")
    m.add_argument("--size", type=int, help="expected size of the archive in bytes")
    m.add_argument("--download-dir", help="where the archive (and its .part while downloading) goes")
    m.add_argument("--archive", help="use this already-downloaded zip instead of the URL "
                                      "(checked against --md5/--size only if they are given)")
    m.add_argument("--no-full-check", action="store_true",
                   help="do not require the full 100 train / 50 test tracks (small test archives)")
    _add_transfer_options(m)

    w = sub.add_parser("xumx-weights", help="official X-UMX MUSDB18-HQ weights (Zenodo record 4740378)",
                       description="Download the official X-UMX weights; the first download's sha256 is "
                                   "recorded in <out>.sha256 and later ones must match it.")
    w.add_argument("--out", help="weights file (default: the config schema's pretrained.xumx.path)")
    w.add_argument("--url", help="weights URL (default: the config schema's pretrained.xumx.url)")
    w.add_argument("--sha256", help="expected sha256 (otherwise trust on first download)")
    w.add_argument("--accept-new-checksum", action="store_true",
                   help="accept a sha256 different from the recorded one and record it")
    _add_transfer_options(w)


def run(args: argparse.Namespace) -> int:
    transfer = dict(retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                    progress=not args.no_progress)
    if args.what == "musdb18hq":
        if args.archive:
            fetch_musdb18hq(args.out, archive=args.archive, md5=args.md5, size=args.size,
                            full_check=not args.no_full_check, **transfer)
        else:
            d = _schema_defaults()["dataset"]["musdb18hq"]
            fetch_musdb18hq(args.out, url=args.url or d["url"], md5=args.md5 or d["md5"],
                            size=args.size if args.size is not None else d["size"],
                            download_dir=args.download_dir or d["download_dir"],
                            full_check=not args.no_full_check, **transfer)
    else:
        d = _schema_defaults()["pretrained"]["xumx"]
        fetch_xumx_weights(args.out or d["path"], url=args.url or d["url"],
                           sha256=args.sha256 or d["sha256"],
                           accept_new_checksum=args.accept_new_checksum, **transfer)
    return 0
