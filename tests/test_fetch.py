"""`dannasep fetch` against a local HTTP server: resume, retries, checksums, safe extraction.

The server (http.server in a thread on 127.0.0.1) serves byte strings with Range support and
can drop the connection after N bytes, ignore Range, serve wrong bytes, stall or fail.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import socket
import stat
import sys
import threading
import time
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dannasep import cli
from dannasep.data.archive import extract_dataset
from dannasep.data.download import download_file, part_path
from dannasep.data.fetch import fetch_musdb18hq, fetch_xumx_weights, sidecar_path
from dannasep.errors import DataError, DownloadError

from conftest import make_musdb_tree

FAST = dict(retries=2, backoff=0.0, timeout=5.0, progress=False)


class FileServer:
    """Serves `files` (url path -> bytes) with Range support and records each request's headers.

    `script`: one dict of faults a request, consumed in order: {"drop": n} sends n body bytes and
    drops the connection, {"status": 503} fails, {"stall": s} sleeps s seconds first. The flags
    `ignore_range`, `wrong_bytes` (each byte XOR 0x5A) and `no_content_length` hold for every request.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.script: list[dict] = []
        self.ignore_range = self.wrong_bytes = self.no_content_length = False
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                srv.requests.append(dict(self.headers))
                fault = srv.script.pop(0) if srv.script else {}
                time.sleep(fault.get("stall", 0))
                data = srv.files.get(self.path)
                if "status" in fault or data is None:
                    return self.send_error(fault.get("status", 404))
                data = bytes(b ^ 0x5A for b in data) if srv.wrong_bytes else data
                ranged = "Range" in self.headers and not srv.ignore_range
                start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if ranged else 0
                if ranged and start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(206 if ranged else 200)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if not srv.no_content_length:
                    self.send_header("Content-Length", str(len(data) - start))
                self.close_connection = True
                self.end_headers()
                self.wfile.write(data[start:start + fault.get("drop", len(data))])
                if "drop" in fault:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self) -> list[str | None]:
        return [headers.get("Range") for headers in self.requests]


@pytest.fixture
def server():
    s = FileServer()
    threading.Thread(target=s.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def zip_tree(root: Path, top_folder: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    """Zip every file under `root` (optionally under `top_folder/`), plus `extra` raw members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, top_folder + path.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def musdb_source(tmp_path_factory) -> Path:
    """A tiny MUSDB18-HQ tree (6 tracks of 0.25 s) to zip."""
    return make_musdb_tree(tmp_path_factory.mktemp("src") / "musdb18hq", seconds=0.25)


@pytest.fixture(scope="module")
def musdb_zip(musdb_source) -> bytes:
    return zip_tree(musdb_source)


def install_validator(monkeypatch, validate_or_raise) -> None:
    """Make `dannasep.data.validate.validate_or_raise` (imported lazily by fetch) this function."""
    monkeypatch.setitem(sys.modules, "dannasep.data.validate",
                        types.SimpleNamespace(validate_or_raise=validate_or_raise))


@pytest.fixture(autouse=True)
def validator_available(monkeypatch):
    """Use the real validator when it exists; otherwise a stand-in that checks train/ and test/."""
    if importlib.util.find_spec("dannasep.data.validate") is None:
        def validate_or_raise(root, expect_full=True):
            if sorted(p.name for p in Path(root).iterdir()) != ["test", "train"]:
                raise DataError(f"{root}: expected train/ and test/")

        install_validator(monkeypatch, validate_or_raise)


def assert_same_tree(extracted: Path, source: Path) -> None:
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert sorted(p.relative_to(extracted) for p in extracted.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (extracted / rel).read_bytes() == (source / rel).read_bytes(), rel


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings (atomic writes) and part files that a failed run must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


# ---- download_file --------------------------------------------------------------------------

def test_dropped_connection_resumes_with_range_and_hashes_everything(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.script = [{"drop": 100_000}]
    dest = tmp_path / "f.bin"
    md5, sha = hashlib.md5(payload).hexdigest(), hashlib.sha256(payload).hexdigest()
    digests = download_file(server.url("/f.bin"), dest, size=len(payload), checksums={"md5": md5},
                            algorithms=("sha256",), **FAST)
    assert server.ranges() == [None, "bytes=100000-"]
    assert dest.read_bytes() == payload and digests == {"md5": md5, "sha256": sha}
    assert leftovers(tmp_path) == []


def test_rerun_resumes_a_kept_part_and_hashes_all_of_it(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.script = [{"drop": 50_000}, {"drop": 0}, {"drop": 0}]  # progress, then two failures: give up
    dest = tmp_path / "f.bin"
    md5 = hashlib.md5(payload).hexdigest()
    with pytest.raises(DownloadError, match="re-run to resume"):
        download_file(server.url("/f.bin"), dest, size=len(payload), checksums={"md5": md5},
                      retries=1, backoff=0.0, timeout=5.0, progress=False)
    assert part_path(dest).read_bytes() == payload[:50_000]
    assert not dest.exists()
    # A new run (new process in real life) continues from the part's size.
    download_file(server.url("/f.bin"), dest, size=len(payload), checksums={"md5": md5}, **FAST)
    assert server.ranges()[-1] == "bytes=50000-"
    assert dest.read_bytes() == payload


def test_server_ignoring_range_restarts_from_scratch(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.ignore_range = True
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"\x00" * 1000)  # wrong bytes: must be discarded, not hashed
    download_file(server.url("/f.bin"), dest, size=len(payload),
                  checksums={"md5": hashlib.md5(payload).hexdigest()}, **FAST)
    assert server.ranges() == ["bytes=1000-"]
    assert dest.read_bytes() == payload


def test_416_on_complete_part_finishes_and_on_overlong_part_restarts(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    sha = hashlib.sha256(payload).hexdigest()
    complete = tmp_path / "complete.bin"
    part_path(complete).write_bytes(payload)
    assert download_file(server.url("/f.bin"), complete, algorithms=("sha256",), **FAST)["sha256"] == sha
    assert len(server.requests) == 1 and complete.read_bytes() == payload

    overlong = tmp_path / "overlong.bin"
    part_path(overlong).write_bytes(payload + b"junk")
    download_file(server.url("/f.bin"), overlong, checksums={"sha256": sha}, **FAST)
    assert server.ranges()[1:] == [f"bytes={len(payload) + 4}-", None]
    assert overlong.read_bytes() == payload


def test_retries_are_bounded_and_client_errors_not_retried(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.script = [{"status": 503}] * 10
    with pytest.raises(DownloadError, match="giving up after 3"):
        download_file(server.url("/f.bin"), tmp_path / "a.bin", **FAST)
    assert len(server.requests) == 3  # retries=2: one attempt and two retries

    server.script = []
    server.requests.clear()
    with pytest.raises(DownloadError, match=r"/missing\.bin: HTTP 404"):
        download_file(server.url("/missing.bin"), tmp_path / "b.bin", **FAST)
    assert len(server.requests) == 1


def test_socket_timeout_is_retried(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.script = [{"stall": 2.0}]
    dest = tmp_path / "f.bin"
    t0 = time.monotonic()
    download_file(server.url("/f.bin"), dest, size=len(payload), retries=1, backoff=0.0, timeout=0.3,
                  progress=False)
    assert time.monotonic() - t0 < 1.5
    assert len(server.requests) == 2 and dest.read_bytes() == payload


def test_size_mismatch_is_refused(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=rf"reports {len(payload)} bytes, expected {len(payload) + 10}"):
        download_file(server.url("/f.bin"), dest, size=len(payload) + 10, **FAST)
    # Without a Content-Length the size is only known at the end.
    server.no_content_length = True
    with pytest.raises(DownloadError) as err:
        download_file(server.url("/f.bin"), dest, size=len(payload) + 10, **FAST)
    assert str(dest) in str(err.value)
    assert f"size is {len(payload)} bytes, expected {len(payload) + 10}" in str(err.value)
    assert leftovers(tmp_path) == [] and not dest.exists()


# ---- MUSDB18-HQ -----------------------------------------------------------------------------

def test_fetch_musdb18hq_downloads_checks_md5_and_extracts(server, musdb_zip, musdb_source, tmp_path):
    server.files["/records/3338373/files/musdb18hq.zip"] = musdb_zip
    out, downloads = tmp_path / "data" / "musdb18hq", tmp_path / "downloads"
    fetch_musdb18hq(out, url=server.url("/records/3338373/files/musdb18hq.zip"),
                    md5=hashlib.md5(musdb_zip).hexdigest(), size=len(musdb_zip), download_dir=downloads,
                    full_check=False, **FAST)
    assert_same_tree(out, musdb_source)
    assert (downloads / "musdb18hq.zip").read_bytes() == musdb_zip
    assert leftovers(downloads) == [] and leftovers(out.parent) == []


def test_fetch_musdb18hq_md5_mismatch_leaves_nothing(server, musdb_zip, tmp_path):
    server.files["/musdb18hq.zip"] = musdb_zip
    server.wrong_bytes = True
    out, downloads = tmp_path / "musdb18hq", tmp_path / "downloads"
    expected = hashlib.md5(musdb_zip).hexdigest()
    actual = hashlib.md5(bytes(b ^ 0x5A for b in musdb_zip)).hexdigest()
    with pytest.raises(DownloadError) as err:
        fetch_musdb18hq(out, url=server.url("/musdb18hq.zip"), md5=expected, size=len(musdb_zip),
                        download_dir=downloads, full_check=False, **FAST)
    message = str(err.value)
    assert str(downloads / "musdb18hq.zip") in message and expected in message and actual in message
    assert not out.exists() and list(downloads.iterdir()) == []


def test_archive_option_uses_local_zip_with_top_folder(musdb_source, tmp_path):
    archive = tmp_path / "copy.zip"
    archive.write_bytes(zip_tree(musdb_source, top_folder="MUSDB18-HQ/", extra={"__MACOSX/._x": b"x"}))
    out = tmp_path / "musdb18hq"
    fetch_musdb18hq(out, archive=archive, full_check=False)
    assert_same_tree(out, musdb_source)
    # A wrong md5 for a local archive is refused, and the user's file is kept.
    with pytest.raises(DownloadError, match=r"copy\.zip: md5 is"):
        fetch_musdb18hq(tmp_path / "other", archive=archive, md5="0" * 32)
    assert archive.exists() and not (tmp_path / "other").exists()
    # An existing dataset folder is never overwritten.
    with pytest.raises(DataError, match="already exists"):
        fetch_musdb18hq(out, archive=archive, full_check=False)
    assert_same_tree(out, musdb_source)


def test_validation_runs_before_rename_with_expect_full(musdb_source, tmp_path, monkeypatch):
    calls = []

    def validate_or_raise(root, expect_full=True):
        calls.append((Path(root).parent, expect_full, sorted(p.name for p in Path(root).iterdir())))
        raise DataError(f"{root}: 6 tracks, expected 150")

    install_validator(monkeypatch, validate_or_raise)
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_tree(musdb_source))
    out = tmp_path / "data" / "musdb18hq"
    where = re.escape(str(out))
    with pytest.raises(DataError, match=rf"a\.zip: .*{where} was not created:\n{where}: 6 tracks, expected 150"):
        fetch_musdb18hq(out, archive=archive)
    assert calls == [(out.parent, True, ["test", "train"])]
    assert list(out.parent.iterdir()) == []


def corrupt_first_member(data: bytes) -> bytes:
    """Flip one byte inside the first member's stored data, so its CRC no longer matches."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    header = data[info.header_offset:info.header_offset + 30]
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage", ["crc", "truncated", "not_a_zip"])
def test_corrupt_archive_is_a_data_error_and_leaves_nothing(musdb_source, tmp_path, damage):
    good = zip_tree(musdb_source)
    data = {"crc": corrupt_first_member(good), "truncated": good[: len(good) // 2],
            "not_a_zip": b"<html>rate limited</html>"}[damage]
    archive = tmp_path / "in" / "musdb18hq.zip"
    archive.parent.mkdir()
    archive.write_bytes(data)
    out = tmp_path / "out" / "musdb18hq"
    with pytest.raises(DataError, match=r"in/musdb18hq\.zip"):
        fetch_musdb18hq(out, archive=archive, full_check=False)
    assert not out.exists() and leftovers(out.parent if out.parent.exists() else tmp_path) == []


def symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("train/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("name, reason", [("../evil.txt", "'..'"), ("train/../../evil.txt", "'..'"),
                                          ("/tmp/evil.txt", "absolute"), (None, "symbolic link")])
def test_escaping_member_is_refused_before_writing(musdb_source, tmp_path, name, reason):
    buf = io.BytesIO(zip_tree(musdb_source))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name) if name else symlink_member(), b"/etc/passwd")
    archive = tmp_path / "evil.zip"
    archive.write_bytes(buf.getvalue())
    out = tmp_path / "data" / "musdb18hq"
    with pytest.raises(DataError) as err:
        extract_dataset(archive, out)
    assert f"'{name or 'train/link'}'" in str(err.value) and reason in str(err.value)
    assert str(archive) in str(err.value)
    assert not out.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "data").exists()


# ---- X-UMX weights --------------------------------------------------------------------------

def test_xumx_weights_trust_on_first_use(server, payload, tmp_path):
    url = server.url("/records/4740378/files/pretrained_xumx_musdb18HQ.pth")
    server.files["/records/4740378/files/pretrained_xumx_musdb18HQ.pth"] = payload
    out = tmp_path / "pretrained" / "pretrained_xumx_musdb18HQ.pth"
    first = hashlib.sha256(payload).hexdigest()

    assert fetch_xumx_weights(out, url=url, **FAST) == first
    assert sidecar_path(out).read_text() == f"{first}  pretrained_xumx_musdb18HQ.pth\n"
    assert fetch_xumx_weights(out, url=url, **FAST) == first  # present and matching: no download
    assert len(server.requests) == 1

    # The file at the URL changes: a new download is refused and nothing replaces the old record.
    changed = payload[::-1]
    server.files["/records/4740378/files/pretrained_xumx_musdb18HQ.pth"] = changed
    out.unlink()
    with pytest.raises(DownloadError) as err:
        fetch_xumx_weights(out, url=url, **FAST)
    assert str(out) in str(err.value) and first in str(err.value) and "--accept-new-checksum" in str(err.value)
    assert not out.exists() and not part_path(out).exists()
    assert sidecar_path(out).read_text().split()[0] == first

    new = hashlib.sha256(changed).hexdigest()
    assert fetch_xumx_weights(out, url=url, accept_new_checksum=True, **FAST) == new
    assert out.read_bytes() == changed and sidecar_path(out).read_text().split()[0] == new


def test_xumx_weights_present_file_changed_and_explicit_sha256(server, payload, tmp_path):
    server.files["/w.pth"] = payload
    out = tmp_path / "w.pth"
    fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST)
    out.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=r"w\.pth: sha256 is .* expected"):
        fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST)
    assert out.read_bytes() == b"tampered"

    other = tmp_path / "x.pth"
    with pytest.raises(DownloadError, match=r"x\.pth: downloaded file's sha256 is"):
        fetch_xumx_weights(other, url=server.url("/w.pth"), sha256="ab" * 32, **FAST)
    assert not other.exists() and not sidecar_path(other).exists()
    sha = hashlib.sha256(payload).hexdigest()
    assert fetch_xumx_weights(other, url=server.url("/w.pth"), sha256=sha.upper(), **FAST) == sha


# ---- CLI ------------------------------------------------------------------------------------

CLI_FAST = ["--retries", "1", "--backoff", "0", "--no-progress"]


def test_cli_md5_mismatch_exits_1_naming_the_file(server, musdb_zip, tmp_path, capsys):
    server.files["/musdb18hq.zip"] = musdb_zip
    out, downloads = tmp_path / "musdb18hq", tmp_path / "dl"
    code = cli.main(["fetch", "musdb18hq", "--out", str(out), "--url", server.url("/musdb18hq.zip"),
                     "--md5", "0" * 32, "--size", str(len(musdb_zip)), "--download-dir", str(downloads),
                     "--no-full-check", *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 1
    assert "dannasep fetch: error:" in err and str(downloads / "musdb18hq.zip") in err and "0" * 32 in err
    assert not out.exists()


def test_cli_archive_success_and_weights_refusal(server, musdb_source, payload, tmp_path, capsys):
    archive = tmp_path / "musdb18hq.zip"
    archive.write_bytes(zip_tree(musdb_source))
    out = tmp_path / "musdb18hq"
    assert cli.main(["fetch", "musdb18hq", "--out", str(out), "--archive", str(archive), "--no-full-check",
                     *CLI_FAST]) == 0
    assert_same_tree(out, musdb_source)

    server.files["/w.pth"] = payload
    weights = tmp_path / "w.pth"
    sidecar_path(weights).write_text("ab" * 32 + "  w.pth\n")  # a different file was recorded before
    args = ["fetch", "xumx-weights", "--out", str(weights), "--url", server.url("/w.pth"), *CLI_FAST]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert str(weights) in err and "--accept-new-checksum" in err
    assert cli.main(args + ["--accept-new-checksum"]) == 0
    assert sidecar_path(weights).read_text().split()[0] == hashlib.sha256(payload).hexdigest()
