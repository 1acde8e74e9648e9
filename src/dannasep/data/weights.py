"""Pretrained weight files, trusted on first use: the official X-UMX, the authors' released
Danna-Sep models (Google Drive) and demucs v2's `demucs48_hq`.

None has a published checksum, so the first download's sha256 is recorded beside the file
(`<file>.sha256`, sha256sum format) and every later download, or a file already present, must
match it. A first download is recorded only if its end was known (Content-Length, Content-Range
or chunked framing) or something checked it: bytes that stopped when a connection closed early
are never taken for the file. demucs v2 names its files `<name>-<first 8 hex digits of the
sha256>.th` and torch.hub checks that prefix (`check_hash=True`); it is checked here too.
Every refusal names the command that resolves it.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from pathlib import Path

from ..errors import ConfigError, DownloadError
from ..io import write_text
from .download import checked_digest, download_file, hash_file
from .gdrive import drive_file_id, drive_resolver
from .locking import file_lock

log = logging.getLogger(__name__)

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# torch.hub.HASH_REGEX: the hash prefix in a file name such as demucs48_hq-28a1282c.th.
HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")
# The authors' released files (config keys under pretrained.danna_sep). Since 2022 their package
# runs X-UMX from xumx.onnx; xumx_mwf.pth is the 2021 TorchScript export.
DANNA_SEP_FILES = ("xumx_mwf", "xumx_onnx", "unet_attention", "demucs_4_decoders")
XUMX_FORMATS = {"torchscript": ("xumx_mwf",), "onnx": ("xumx_onnx",), "both": ("xumx_mwf", "xumx_onnx")}


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


def url_sha256_prefix(url: str) -> str | None:
    """The sha256 prefix in the URL's file name (demucs v2 / torch.hub convention), or None."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    match = HASH_PREFIX.search(name)
    return match.group(1) if match and match.group(1) else None


def danna_sep_selection(xumx_format: str = "both") -> list[str]:
    """The released files to fetch: the U-Net, Demucs, and X-UMX in the chosen format(s)."""
    if xumx_format not in XUMX_FORMATS:
        raise ConfigError(f"--xumx-format {xumx_format}: choose one of {', '.join(XUMX_FORMATS)}")
    return [key for key in DANNA_SEP_FILES
            if key in XUMX_FORMATS[xumx_format] or not key.startswith("xumx")]


def _check_present(out: Path, url: str, expected, recorded, prefix, accept: str) -> str | None:
    """sha256 of the file already at `out` if it is the trusted one; None if it must be fetched."""
    if not out.exists():
        return None
    actual = hash_file(out)["sha256"]
    if expected and actual != expected:
        log.warning("%s: sha256 is %s, expected %s; removing it and downloading again", out, actual, expected)
        out.unlink()
        return None
    if recorded and actual != recorded:
        raise DownloadError(f"{out}: sha256 is {actual}, but {recorded} was recorded in {sidecar_path(out)} "
                            f"on the first download. If you replaced the file on purpose, run {accept} to "
                            "trust it; otherwise delete it and re-run to download it again")
    if prefix and not actual.startswith(prefix):
        raise DownloadError(f"{out}: sha256 is {actual}, which does not start with {prefix}, the prefix in "
                            f"the name of {url}: it is not that file; delete it and re-run to download it")
    log.info("%s: present, sha256 %s", out, actual)
    return actual


def fetch_weights(out: str | Path, *, url: str, sha256: str | None = None, accept_new_checksum: bool = False,
                  check_url_prefix: bool = False, command: str = "dannasep fetch xumx-weights",
                  retries: int = 5, backoff: float = 2.0, timeout: float = 60.0,
                  progress: bool = True) -> str:
    """Make sure `out` holds the file at `url` with a trusted sha256; return the sha256.

    The sha256 must equal `sha256` if given, the one recorded in `<out>.sha256` unless
    `accept_new_checksum` (which records the new one instead), and, with `check_url_prefix`,
    start with the hash prefix in the URL's file name. A Google Drive URL goes through Drive's
    confirmation step. `command` is what the user runs, for the advice in refusals.
    """
    out = Path(out)
    expected = checked_digest(sha256, "sha256", "--sha256")
    prefix = url_sha256_prefix(url) if check_url_prefix else None
    if check_url_prefix and not prefix:
        log.warning("%s: no sha256 prefix in the file name; only trust on first use applies", url)
    if expected and prefix and not expected.startswith(prefix):
        raise ConfigError(f"--sha256 {expected} does not start with {prefix}, the sha256 prefix in the name "
                          f"of {url}; one of the two is wrong")
    accept = f"`{command} --out {out} --accept-new-checksum`"
    sidecar = sidecar_path(out)
    with file_lock(out):
        recorded = None if accept_new_checksum else read_recorded_sha256(out)
        if expected and recorded and expected != recorded:
            raise DownloadError(f"{out}: --sha256 {expected} differs from the sha256 {recorded} recorded in "
                                f"{sidecar}; to trust the new one, run {accept} with --sha256")
        actual = _check_present(out, url, expected, recorded, prefix, accept)
        if actual is None:
            want = expected or recorded
            if expected:
                hint = f" (--sha256): the file at {url} is not the one expected; check the URL and the sha256"
            elif recorded:
                hint = (f", recorded in {sidecar} on the first download. If the file at {url} has changed "
                        f"(or the recorded download was incomplete), run {accept} to trust the new one")
            else:
                hint = f" (the prefix in the file name of {url}); check the URL"
            result = download_file(
                url, out, checksums={"sha256": want} if want else {}, algorithms=("sha256",),
                sha256_prefix=prefix, require_known_length=not (want or prefix),
                resolve=drive_resolver(url) if drive_file_id(url) else None, mismatch_hint=hint,
                retries=retries, backoff=backoff, timeout=timeout, progress=progress)
            actual = result.digests["sha256"]
        if accept_new_checksum or recorded != actual:
            record_sha256(out, actual)
            log.info("%s: recorded sha256 %s", sidecar, actual)
    return actual


def fetch_xumx_weights(out: str | Path, *, url: str, sha256: str | None = None,
                       accept_new_checksum: bool = False, **transfer) -> str:
    """The official X-UMX MUSDB18-HQ weights (Zenodo record 4740378), trusted on first use."""
    return fetch_weights(out, url=url, sha256=sha256, accept_new_checksum=accept_new_checksum,
                         command="dannasep fetch xumx-weights", **transfer)
