"""`dannasep fetch` against a local HTTP server (tests/fetch_server.py): resume with If-Range,
retries, one fetch per file at a time, checks of the bytes on disk, full disks, checksum formats,
and safe extraction (escaping members, archive bombs).

The weights (trust on first use, Google Drive, demucs v2) are in test_fetch_weights.py.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import json
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dannasep import cli
from dannasep.data import download as download_module
from dannasep.data.archive import extract_dataset
from dannasep.data.download import download_file, part_path
from dannasep.data.fetch import fetch_musdb18hq
from dannasep.data.locking import file_lock, lock_path
from dannasep.errors import DataError, DownloadError

from conftest import make_musdb_tree
from fetch_server import FileServer

FAST = dict(retries=2, backoff=0.0, timeout=5.0, progress=False)
CLI_FAST = ["--retries", "1", "--backoff", "0", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    s = FileServer().start()
    yield s
    s.stop()


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


# ---- download_file: resume, retries ---------------------------------------------------------

def test_dropped_connection_resumes_with_range_and_if_range(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.script = [{"drop": 100_000}]
    dest = tmp_path / "f.bin"
    md5, sha = hashlib.md5(payload).hexdigest(), hashlib.sha256(payload).hexdigest()
    result = download_file(server.url("/f.bin"), dest, size=len(payload), checksums={"md5": md5},
                           algorithms=("sha256",), **FAST)
    assert server.ranges() == [None, "bytes=100000-"]
    assert server.requests[1][1]["If-Range"] == server.validator_headers(payload)["ETag"]
    assert dest.read_bytes() == payload and result.digests == {"md5": md5, "sha256": sha}
    assert result.size == len(payload) and result.length_known
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


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


def complete_part(server, url: str, dest: Path, data: bytes) -> None:
    """A .part holding `data`, recorded (as download_file records it) as bytes of the file at `url`."""
    part_path(dest).write_bytes(data)
    validator = server.validator_headers(server.files[url.removeprefix(server.base)])["ETag"]
    (dest.parent / (dest.name + ".part.json")).write_text(json.dumps({"url": url, "validator": validator}))


def keep_part(server, url: str, dest: Path, at: int) -> None:
    """A download that stopped after `at` bytes, leaving its .part and validator record."""
    server.script = [{"drop": at}]
    with pytest.raises(DownloadError, match="re-run to resume"):
        download_file(url, dest, retries=0, backoff=0.0, timeout=5.0, progress=False)
    assert part_path(dest).stat().st_size == at


def test_server_ignoring_range_restarts_from_scratch(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    keep_part(server, server.url("/f.bin"), dest, 1000)
    server.ignore_range = True
    download_file(server.url("/f.bin"), dest, size=len(payload),
                  checksums={"md5": hashlib.md5(payload).hexdigest()}, **FAST)
    assert server.ranges()[1:] == ["bytes=1000-"]
    assert dest.read_bytes() == payload


@pytest.mark.parametrize("validators", ["etag", "last_modified"])
def test_changed_file_behind_a_stale_part_is_downloaded_whole(server, payload, tmp_path, validators):
    # Issue 10: a stale .part of the old file + the rest of the new one used to make a hybrid.
    server.validators = validators
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    keep_part(server, server.url("/f.bin"), dest, 100_000)
    sent = server.validator_headers(payload)["ETag" if validators == "etag" else "Last-Modified"]
    changed = payload[::-1]  # same length: the size cannot tell
    server.files["/f.bin"] = changed
    result = download_file(server.url("/f.bin"), dest, algorithms=("sha256",), **FAST)
    assert server.requests[-1][1]["Range"] == "bytes=100000-" and server.requests[-1][1]["If-Range"] == sent
    assert dest.read_bytes() == changed and result.digests["sha256"] == hashlib.sha256(changed).hexdigest()


def test_server_ignoring_if_range_is_caught_by_the_validator_it_sends(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    keep_part(server, server.url("/f.bin"), dest, 100_000)
    server.files["/f.bin"] = changed = payload[::-1]
    server.ignore_if_range = True  # answers 206 with the new file's bytes and ETag
    download_file(server.url("/f.bin"), dest, **FAST)
    assert server.ranges()[1:] == ["bytes=100000-", None]
    assert dest.read_bytes() == changed


@pytest.mark.parametrize("validators", ["weak", None])
def test_no_resume_without_a_strong_validator(server, payload, tmp_path, validators):
    server.validators = validators
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    server.script = [{"drop": 100_000}]
    download_file(server.url("/f.bin"), dest, **FAST)
    assert server.ranges() == [None, None] and dest.read_bytes() == payload
    part_path(dest).write_bytes(payload[:5000])  # a part left by an older version: no record beside it
    download_file(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert server.ranges()[-1] is None


def test_416_on_complete_part_finishes_and_on_overlong_part_restarts(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    sha = hashlib.sha256(payload).hexdigest()
    complete = tmp_path / "complete.bin"
    complete_part(server, server.url("/f.bin"), complete, payload)
    result = download_file(server.url("/f.bin"), complete, algorithms=("sha256",), **FAST)
    assert result.digests["sha256"] == sha and result.length_known
    assert server.ranges() == [f"bytes={len(payload)}-"] and complete.read_bytes() == payload

    overlong = tmp_path / "overlong.bin"
    complete_part(server, server.url("/f.bin"), overlong, payload + b"junk")
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


def test_a_server_that_always_drops_at_the_same_byte_is_given_up(server, payload, tmp_path):
    server.validators = None  # no resume: every attempt starts again and stops at the same byte
    server.files["/f.bin"] = payload
    server.script = [{"drop": 1000}] * 10
    with pytest.raises(DownloadError, match="giving up after 3"):
        download_file(server.url("/f.bin"), tmp_path / "f.bin", size=len(payload), **FAST)
    # Without the cap on attempts that reach no further, this would loop for ever (each attempt
    # "progresses" from byte 0 to 1000): one attempt and two retries, as for any other failure.
    assert len(server.requests) == 3


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


def test_a_web_page_is_never_taken_for_the_file(server, tmp_path):
    server.files["/f.bin"] = b"<html><head><title>Rate limit exceeded</title></head></html>"
    server.types["/f.bin"] = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"f\.bin: the server sent a web page \('Rate limit exceeded'\)"):
        download_file(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert list(tmp_path.iterdir()) == []


# ---- download_file: one fetch per file, bytes on disk, full disks ---------------------------

def dannasep(*args: str, preexec_fn=None) -> subprocess.Popen:
    """`python -m dannasep ARGS` in a new process (this worktree's code: PYTHONPATH is inherited)."""
    env = {**__import__("os").environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "dannasep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=preexec_fn)


def test_two_concurrent_fetches_of_one_file_take_turns(server, payload, tmp_path):
    # Issue 10: both used to append to one .part; the first reported a file twice the size.
    server.files["/w.pth"] = payload
    gate = threading.Event()
    server.script = [{"gate": gate}]  # the first fetch stops half way until the second is waiting
    out = tmp_path / "w.pth"
    args = ["fetch", "xumx-weights", "--out", str(out), "--url", server.url("/w.pth"), *CLI_FAST]
    first = dannasep(*args)
    deadline = time.monotonic() + 60
    while not server.requests:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = dannasep(*args)
    said = []
    for line in second.stderr:  # until it says that it waits (or ends without saying so)
        said.append(line)
        if "another process is fetching it; waiting" in line:
            break
    gate.set()
    results = [first.communicate(timeout=120), second.communicate(timeout=120)]
    second_err = "".join(said) + results[1][1]
    assert [p.returncode for p in (first, second)] == [0, 0], results
    assert "waiting" in "".join(said) and len(server.requests) == 1  # it waited, then found the file
    assert out.read_bytes() == payload
    sha = hashlib.sha256(payload).hexdigest()
    assert out.with_name("w.pth.sha256").read_text().split()[0] == sha
    assert f"present, sha256 {sha}" in second_err and "Traceback" not in results[0][1] + second_err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth", "w.pth.sha256"]  # no lock, no part


def test_file_lock_is_exclusive_reentrant_and_leaves_no_file(tmp_path):
    dest = tmp_path / "f.bin"
    entered = threading.Event()

    def other_thread():
        with file_lock(dest):
            entered.set()

    with file_lock(dest):
        with file_lock(dest):  # the fetch holds it around the download, which takes it again
            assert lock_path(dest).exists()
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert not entered.wait(0.5)  # waits while it is held
    assert entered.wait(10)
    thread.join()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["flipped", "extra"])
def test_the_bytes_on_disk_are_verified_before_the_rename(server, payload, tmp_path, monkeypatch, damage):
    # What the network sent is right; what reached the disk is not (a bad disk, another writer).
    writes = 0

    def write(f, chunk):
        nonlocal writes
        writes += 1
        if damage == "flipped":
            f.write(bytes([chunk[0] ^ 1]) + chunk[1:] if f.tell() == 0 else chunk)
        else:
            f.write(chunk + b"!")

    monkeypatch.setattr(download_module, "_write_chunk", write)
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    md5 = hashlib.md5(payload).hexdigest()
    with pytest.raises(DownloadError) as err:
        download_file(server.url("/f.bin"), dest, checksums={"md5": md5}, chunk_size=1 << 16, **FAST)
    expected = (f"md5 is {hashlib.md5(bytes([payload[0] ^ 1]) + payload[1:]).hexdigest()}, expected {md5}"
                if damage == "flipped" else f"size on disk is {len(payload) + 5} bytes but {len(payload)}")
    assert str(dest) in str(err.value) and expected in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_download_is_one_line_and_keeps_the_part(server, payload, tmp_path, monkeypatch,
                                                                  capsys):
    def write(f, chunk):
        if f.tell() + len(chunk) > 100_000:
            f.write(chunk[:100_000 - f.tell()])
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(chunk)

    monkeypatch.setattr(download_module, "_write_chunk", write)
    server.files["/musdb18hq.zip"] = payload
    downloads = tmp_path / "dl"
    args = ["fetch", "musdb18hq", "--out", str(tmp_path / "musdb18hq"), "--url", server.url("/musdb18hq.zip"),
            "--md5", hashlib.md5(payload).hexdigest(), "--size", str(len(payload)), "--download-dir",
            str(downloads), "--no-full-check", *CLI_FAST]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    part = part_path(downloads / "musdb18hq.zip")
    assert err.count("\n") == 1 and err.startswith(f"dannasep fetch: error: {part}: No space left on device")
    assert "kept" in err and "re-run" in err
    assert part.read_bytes() == payload[:100_000]
    monkeypatch.undo()  # space was freed: the re-run resumes where the disk filled up
    with pytest.raises(DataError):  # the payload is no zip; what matters is the download before it
        fetch_musdb18hq(tmp_path / "musdb18hq", url=server.url("/musdb18hq.zip"),
                        md5=hashlib.md5(payload).hexdigest(), size=len(payload), download_dir=downloads,
                        full_check=False, **FAST)
    assert server.ranges()[-1] == "bytes=100000-"
    assert (downloads / "musdb18hq.zip").read_bytes() == payload


def file_size_limit(limit: int):
    """For a child process: writes past `limit` bytes fail with EFBIG (as on a full filesystem)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_too_large_during_download_is_one_line_and_resumable(server, payload, tmp_path):
    # A real EFBIG from the kernel (RLIMIT_FSIZE), not a simulated one.
    server.files["/w.pth"] = payload
    out = tmp_path / "w.pth"
    args = ["fetch", "xumx-weights", "--out", str(out), "--url", server.url("/w.pth"), *CLI_FAST]
    child = dannasep(*args, preexec_fn=file_size_limit(100_000))
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1
    line = [l for l in err.splitlines() if "error:" in l]
    assert len(line) == 1 and line[0].startswith(f"dannasep fetch: error: {part_path(out)}: File too large")
    assert "Traceback" not in err and part_path(out).stat().st_size == 100_000
    assert not out.exists() and not out.with_name("w.pth.sha256").exists()
    child = dannasep(*args)
    assert child.communicate(timeout=120) and child.returncode == 0
    assert server.ranges()[-1] == "bytes=100000-" and out.read_bytes() == payload


# ---- checksum formats ------------------------------------------------------------------------

@pytest.mark.parametrize("what, option, value", [("musdb18hq", "--md5", "12d4f2ec"),
                                                 ("musdb18hq", "--md5", "g" * 32),
                                                 ("xumx-weights", "--sha256", "ab" * 31),
                                                 ("danna-sep-weights", "--sha256", "z" * 64),
                                                 ("demucs-v2-weights", "--sha256", "12 34")])
def test_malformed_digests_are_refused_before_downloading(server, tmp_path, capsys, what, option, value):
    server.files["/x"] = b"x" * 1000
    extra = {"musdb18hq": ["--download-dir", str(tmp_path / "dl"), "--size", "1000"],
             "danna-sep-weights": ["--only", "unet_attention"]}.get(what, [])
    code = cli.main(["fetch", what, "--out", str(tmp_path / "out"), "--url", server.url("/x"), option, value,
                     *extra, *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{option} {value!r}: not an {option[2:]}" in err
    assert server.requests == [] and list(tmp_path.iterdir()) == []


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


# ---- archive bombs, full disk during extraction ------------------------------------------------

def zip_with(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_member_with_a_huge_compression_ratio_is_refused_before_writing(musdb_source, tmp_path):
    archive = tmp_path / "bomb.zip"
    silent = b"\0" * 20_000_000  # bzip2 shrinks it to a few dozen bytes, beyond what deflate can
    members = {"train/A - B/mixture.wav": silent, "test/C - D/mixture.wav": b"RIFF"}
    archive.write_bytes(zip_with(members, zipfile.ZIP_BZIP2))
    info = zipfile.ZipFile(archive).getinfo("train/A - B/mixture.wav")
    ratio = info.file_size / info.compress_size
    assert ratio > 10_000
    out = tmp_path / "data" / "musdb18hq"
    with pytest.raises(DataError, match=rf"bomb\.zip: member 'train/A - B/mixture\.wav' expands {ratio:.0f} "
                                        r"times .* above the cap of 1100 .*--max-ratio"):
        extract_dataset(archive, out)
    assert not (tmp_path / "data").exists()


def test_ratio_cap_admits_a_silent_deflated_stem_and_can_be_lowered(musdb_source, tmp_path, capsys):
    # A stem with no sound (all-zero WAV) deflates about 1000:1, the most deflate can do.
    tree = tmp_path / "src"
    for path in musdb_source.rglob("*.wav"):
        target = tree / path.relative_to(musdb_source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    silent = tree / "train" / sorted(p.name for p in (tree / "train").iterdir())[0] / "vocals.wav"
    silent.write_bytes(silent.read_bytes()[:44] + bytes(3_000_000))
    archive = tmp_path / "musdb18hq.zip"
    archive.write_bytes(zip_tree(tree))
    ratios = [i.file_size / i.compress_size for i in zipfile.ZipFile(archive).infolist()]
    assert 900 < max(ratios) < 1100
    assert extract_dataset(archive, tmp_path / "ok") == len(ratios)
    assert cli.main(["fetch", "musdb18hq", "--out", str(tmp_path / "low"), "--archive", str(archive),
                     "--no-full-check", "--max-ratio", "100", *CLI_FAST]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocals.wav' expands" in err and "above the cap of 100 " in err
    assert not (tmp_path / "low").exists()


def test_total_extracted_size_is_capped(musdb_source, tmp_path):
    archive = tmp_path / "musdb18hq.zip"
    archive.write_bytes(zip_tree(musdb_source))
    total = sum(p.stat().st_size for p in musdb_source.rglob("*") if p.is_file())
    with pytest.raises(DataError, match=rf"add up to {total} bytes, above the cap of {total - 1} .*"
                                        "--max-extracted-bytes"):
        extract_dataset(archive, tmp_path / "out", max_total_bytes=total - 1)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert extract_dataset(archive, tmp_path / "out", max_total_bytes=total) > 0


def test_file_too_large_during_extraction_is_one_line_and_leaves_nothing(musdb_source, tmp_path):
    archive = tmp_path / "musdb18hq.zip"
    archive.write_bytes(zip_tree(musdb_source))
    out = tmp_path / "data" / "musdb18hq"
    child = dannasep("fetch", "musdb18hq", "--out", str(out), "--archive", str(archive), "--no-full-check",
                     *CLI_FAST, preexec_fn=file_size_limit(20_000))  # every stem is ~44 kB
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1 and "Traceback" not in err
    line = [l for l in err.splitlines() if "error:" in l]
    assert len(line) == 1 and re.match(rf"dannasep fetch: error: {re.escape(str(out))}/(train|test)/.*\.wav: "
                                       "File too large while extracting", line[0])
    assert "archive is kept" in line[0] and archive.exists()
    assert list((tmp_path / "data").iterdir()) == []


# ---- CLI ------------------------------------------------------------------------------------

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


def test_cli_archive_success(musdb_source, tmp_path):
    archive = tmp_path / "musdb18hq.zip"
    archive.write_bytes(zip_tree(musdb_source))
    out = tmp_path / "musdb18hq"
    assert cli.main(["fetch", "musdb18hq", "--out", str(out), "--archive", str(archive), "--no-full-check",
                     *CLI_FAST]) == 0
    assert_same_tree(out, musdb_source)
