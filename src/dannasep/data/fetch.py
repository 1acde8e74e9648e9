"""`dannasep fetch`: download MUSDB18-HQ or pretrained weights, verified.

musdb18hq: the Zenodo zip (resumable, size + md5 checked) is extracted, validated and renamed
into place, so the dataset folder exists only when complete. xumx-weights, danna-sep-weights,
demucs-v2-weights: no checksum is published, so the first download's sha256 is recorded in
`<file>.sha256` and every later download (or a file already present) must match it (trust on
first use, weights.py). Defaults (URLs, md5, size, paths) come from
workflow/schemas/config.schema.yaml; digests given on the command line are checked for format
before anything is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import urllib.parse
from pathlib import Path

from ..errors import ConfigError, DataError, DownloadError
from .archive import MAX_COMPRESSION_RATIO, MAX_EXTRACTED_BYTES, extract_dataset
from .download import checked_digest, download_file, verify_file
from .locking import file_lock
from .weights import DANNA_SEP_FILES, XUMX_FORMATS, danna_sep_selection, fetch_weights

log = logging.getLogger(__name__)


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
                    archive: str | Path | None = None, full_check: bool = True,
                    max_extracted_bytes: int = MAX_EXTRACTED_BYTES,
                    max_ratio: float = MAX_COMPRESSION_RATIO, retries: int = 5, backoff: float = 2.0,
                    timeout: float = 60.0, progress: bool = True) -> Path:
    """Download (or take `archive`), verify, extract and validate MUSDB18-HQ into `out`.

    With `archive`, md5 and size are checked only if given (a user's own copy is never deleted).
    Without it, the zip goes to `download_dir/<name from url>` and is kept for later runs.
    max_extracted_bytes, max_ratio: caps on the archive's total size and per-member compression
    ratio (archive.py).
    """
    out = Path(out)
    md5 = checked_digest(md5, "md5", "--md5")
    if size is not None and size < 1:
        raise ConfigError(f"--size {size}: must be the archive's size in bytes (a positive integer)")
    checksums = {"md5": md5} if md5 else {}
    with file_lock(out):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DataError(f"{out}: already exists and is not empty; remove it to fetch again, or use it "
                            "as it is (dataset.musdb18hq.local_path)")
        if archive is not None:
            zip_path = _local_archive(Path(archive), size, checksums)
        else:
            zip_path = _downloaded_archive(url, download_dir, size, checksums,
                                           dict(retries=retries, backoff=backoff, timeout=timeout,
                                                progress=progress))
        extract_dataset(zip_path, out, validate=_validator(full_check), max_total_bytes=max_extracted_bytes,
                        max_ratio=max_ratio)
    return out


def _local_archive(zip_path: Path, size: int | None, checksums: dict) -> Path:
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: archive not found; check --archive")
    if size is not None or checksums:
        ok, problem, _ = verify_file(zip_path, size=size, checksums=checksums)
        if not ok:
            raise DownloadError(f"{zip_path}: {problem}; the archive is incomplete or not MUSDB18-HQ: "
                                "download it again (or omit --archive to let dannasep fetch it)")
    return zip_path


def _downloaded_archive(url: str | None, download_dir, size: int | None, checksums: dict,
                        transfer: dict) -> Path:
    if not url or download_dir is None:
        raise DownloadError("fetch musdb18hq: --url and --download-dir are needed without --archive")
    zip_path = Path(download_dir) / _name_from_url(url, "musdb18hq.zip")
    with file_lock(zip_path):  # another fetch may be downloading it to extract elsewhere
        if zip_path.exists():
            log.info("%s: already downloaded; verifying it", zip_path)
            ok, problem, _ = verify_file(zip_path, size=size, checksums=checksums)
            if not ok:
                log.warning("%s: %s; removing it and downloading again", zip_path, problem)
                zip_path.unlink()
        if not zip_path.exists():
            download_file(url, zip_path, size=size, checksums=checksums, **transfer,
                          mismatch_hint=f" (--md5/--size): the file at {url} is not the expected archive; "
                                        "check --url, --md5 and --size")
    return zip_path


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
    m.add_argument("--max-extracted-bytes", type=int, default=MAX_EXTRACTED_BYTES,
                   help=f"refuse an archive whose members add up to more (default {MAX_EXTRACTED_BYTES})")
    m.add_argument("--max-ratio", type=float, default=MAX_COMPRESSION_RATIO,
                   help="refuse a member whose size is more than this many times its compressed size "
                        f"(default {MAX_COMPRESSION_RATIO:g})")
    _add_transfer_options(m)

    w = sub.add_parser("xumx-weights", help="official X-UMX MUSDB18-HQ weights (Zenodo record 4740378)",
                       description="Download the official X-UMX weights; the first download's sha256 is "
                                   "recorded in <out>.sha256 and later ones must match it.")
    _add_weights_options(w, "pretrained.xumx")

    d = sub.add_parser("danna-sep-weights", help="the authors' released Danna-Sep models (Google Drive)",
                       description="Download the authors' released models (yoyololicon/danna-sep): "
                                   "xumx_mwf.pth (2021 TorchScript X-UMX), xumx.onnx (the X-UMX their "
                                   "package runs since 2022), unet_attention.pth, demucs_4_decoders.pth, "
                                   "to the config schema's pretrained.danna_sep paths. Each file's first "
                                   "sha256 is recorded in <file>.sha256 and later ones must match it.")
    d.add_argument("--only", choices=DANNA_SEP_FILES,
                   help="fetch only this file (then --out/--url/--sha256 apply to it)")
    d.add_argument("--xumx-format", choices=tuple(XUMX_FORMATS), default="both",
                   help="which X-UMX export(s) to fetch without --only (default both)")
    _add_weights_options(d, "pretrained.danna_sep.<file>")

    v = sub.add_parser("demucs-v2-weights", help="demucs v2's demucs48_hq (the MDX 2021 Demucs baseline)",
                       description="Download demucs v2's pretrained demucs48_hq; the sha256 prefix in its "
                                   "file name is checked, and the first download's sha256 is recorded in "
                                   "<out>.sha256 (later ones must match it).")
    _add_weights_options(v, "pretrained.demucs48_hq")


def _add_weights_options(p: argparse.ArgumentParser, key: str) -> None:
    p.add_argument("--out", help=f"weights file (default: the config schema's {key}.path)")
    p.add_argument("--url", help=f"weights URL (default: the config schema's {key}.url)")
    p.add_argument("--sha256", help="expected sha256 (otherwise trust on first download)")
    p.add_argument("--accept-new-checksum", action="store_true",
                   help="accept a sha256 different from the recorded one and record it")
    _add_transfer_options(p)


def _fetch_danna_sep(args: argparse.Namespace, defaults: dict, transfer: dict) -> None:
    if args.only is None and (args.out or args.url or args.sha256):
        raise ConfigError("--out/--url/--sha256 name one file: add --only "
                          f"{{{','.join(DANNA_SEP_FILES)}}}")
    if args.only is not None and args.xumx_format != "both":
        raise ConfigError("--xumx-format selects files when --only is not given; use one of the two")
    keys = [args.only] if args.only else danna_sep_selection(args.xumx_format)
    for key in keys:
        d = defaults[key]
        fetch_weights(args.out or d["path"], url=args.url or d["url"], sha256=args.sha256 or d["sha256"],
                      accept_new_checksum=args.accept_new_checksum,
                      command=f"dannasep fetch danna-sep-weights --only {key}", **transfer)


def run(args: argparse.Namespace) -> int:
    transfer = dict(retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                    progress=not args.no_progress)
    defaults = _schema_defaults()
    pretrained = defaults["pretrained"]
    if args.what == "musdb18hq":
        caps = dict(max_extracted_bytes=args.max_extracted_bytes, max_ratio=args.max_ratio)
        if args.archive:
            fetch_musdb18hq(args.out, archive=args.archive, md5=args.md5, size=args.size,
                            full_check=not args.no_full_check, **caps, **transfer)
        else:
            d = defaults["dataset"]["musdb18hq"]
            fetch_musdb18hq(args.out, url=args.url or d["url"], md5=args.md5 or d["md5"],
                            size=args.size if args.size is not None else d["size"],
                            download_dir=args.download_dir or d["download_dir"],
                            full_check=not args.no_full_check, **caps, **transfer)
    elif args.what == "danna-sep-weights":
        _fetch_danna_sep(args, pretrained["danna_sep"], transfer)
    else:
        key, command, prefixed = {"xumx-weights": ("xumx", "dannasep fetch xumx-weights", False),
                                  "demucs-v2-weights": ("demucs48_hq", "dannasep fetch demucs-v2-weights",
                                                        True)}[args.what]
        d = pretrained[key]
        fetch_weights(args.out or d["path"], url=args.url or d["url"], sha256=args.sha256 or d["sha256"],
                      accept_new_checksum=args.accept_new_checksum, check_url_prefix=prefixed,
                      command=command, **transfer)
    return 0
