"""`dannasep fetch`'s downloads against a local HTTP server (tests/fetch_server.py): resume with
If-Range, retries, one fetch per file at a time, checks of the bytes on disk, full disks, and
checksum formats checked before downloading.

MUSDB18-HQ and safe extraction are in test_fetch_musdb.py; the weights (trust on first use,
Google Drive, demucs v2) in test_fetch_weights.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from dannasep import cli
from dannasep.data import download as download_module
from dannasep.data.download import download_file, part_path
from dannasep.data.fetch import fetch_musdb18hq
from dannasep.data.locking import file_lock, lock_path
from dannasep.errors import DataError, DownloadError

from fetch_server import CLI_FAST, FAST, FileServer, dannasep, file_size_limit, leftovers, random_bytes


@pytest.fixture
def server():
    s = FileServer().start()
    yield s
    s.stop()


@pytest.fixture
def payload() -> bytes:
    return random_bytes()


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
