"""`dannasep fetch musdb18hq` and safe extraction: download with md5 and size, a local archive,
validation before the rename, corrupt archives, members that would escape the target, archive
bombs (compression ratio, total size), and a full disk while extracting.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import stat
import sys
import types
import zipfile
from pathlib import Path

import pytest

from dannasep import cli
from dannasep.data.archive import extract_dataset
from dannasep.data.fetch import fetch_musdb18hq
from dannasep.errors import DataError, DownloadError

from conftest import make_musdb_tree
from fetch_server import CLI_FAST, FAST, FileServer, dannasep, file_size_limit, leftovers


@pytest.fixture
def server():
    s = FileServer().start()
    yield s
    s.stop()


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
