"""Pretrained weights against the local HTTP server (tests/fetch_server.py): trust on first use,
Google Drive's confirmation step (the authors' released files), demucs v2's sha256-prefixed
URL, the `dannasep fetch` commands and the Snakemake rules that run them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from dannasep import cli
from dannasep.data import fetch as fetch_module
from dannasep.data.download import part_path
from dannasep.data.gdrive import confirmation_url, drive_file_id
from dannasep.data.weights import fetch_weights, fetch_xumx_weights, sidecar_path, url_sha256_prefix
from dannasep.errors import DownloadError

from fetch_server import CLI_FAST, CONFIRM_PAGE_FORM, CONFIRM_PAGE_LINK, FAST, QUOTA_PAGE, FileServer, random_bytes


@pytest.fixture
def server():
    s = FileServer().start()
    yield s
    s.stop()


@pytest.fixture
def payload() -> bytes:
    return random_bytes()

ROOT = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded(path: Path) -> str:
    return sidecar_path(path).read_text().split()[0]


# ---- trust on first use ---------------------------------------------------------------------

def test_xumx_weights_trust_on_first_use(server, payload, tmp_path):
    url = server.url("/records/4740378/files/pretrained_xumx_musdb18HQ.pth")
    server.files["/records/4740378/files/pretrained_xumx_musdb18HQ.pth"] = payload
    out = tmp_path / "pretrained" / "pretrained_xumx_musdb18HQ.pth"
    first = sha(payload)

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
    message = str(err.value)
    assert str(out) in message and first in message and sha(changed) in message
    assert f"`dannasep fetch xumx-weights --out {out} --accept-new-checksum`" in message
    assert not out.exists() and not part_path(out).exists() and recorded(out) == first

    # The advice works.
    assert fetch_xumx_weights(out, url=url, accept_new_checksum=True, **FAST) == sha(changed)
    assert out.read_bytes() == changed and recorded(out) == sha(changed)


def test_present_file_changed_and_explicit_sha256(server, payload, tmp_path):
    server.files["/w.pth"] = payload
    out = tmp_path / "w.pth"
    fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST)
    out.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=rf"w\.pth: sha256 is {sha(b'tampered')}, but {sha(payload)} was "
                                            r"recorded .* --accept-new-checksum"):
        fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST)
    assert out.read_bytes() == b"tampered"

    other = tmp_path / "x.pth"
    with pytest.raises(DownloadError, match=r"x\.pth: downloaded file's sha256 is .*expected abab.*check the URL"):
        fetch_xumx_weights(other, url=server.url("/w.pth"), sha256="ab" * 32, **FAST)
    assert not other.exists() and not sidecar_path(other).exists()
    assert fetch_xumx_weights(other, url=server.url("/w.pth"), sha256=sha(payload).upper(), **FAST) == sha(payload)


def test_truncated_first_download_without_length_is_never_recorded(server, payload, tmp_path):
    # Issue 10: no Content-Length and a connection closed early looked like the end of the file;
    # its sha256 was recorded, and the correct file was refused afterwards.
    server.files["/w.pth"] = payload
    server.no_content_length = True
    server.script = [{"drop": 120_000}]
    out = tmp_path / "w.pth"
    with pytest.raises(DownloadError) as err:
        fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST)
    assert "sent neither a length nor chunked framing" in str(err.value) and "--sha256" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    # With the sha256, a truncated download is caught and the message says a re-run may help ...
    server.script = [{"drop": 120_000}]
    with pytest.raises(DownloadError, match="sent no length, so the connection may have closed early: re-run"):
        fetch_xumx_weights(out, url=server.url("/w.pth"), sha256=sha(payload), **FAST)
    # ... and it does; a server that sends the length is trusted on first use again.
    assert fetch_xumx_weights(out, url=server.url("/w.pth"), sha256=sha(payload), **FAST) == sha(payload)
    out.unlink()
    sidecar_path(out).unlink()
    server.no_content_length = False
    assert fetch_xumx_weights(out, url=server.url("/w.pth"), **FAST) == sha(payload) == recorded(out)


def test_stale_part_of_an_older_file_is_not_glued_to_the_new_one(server, payload, tmp_path):
    # Issue 10: a hybrid of a stale .part and a resumed download was recorded on first use.
    server.files["/w.pth"] = payload
    out = tmp_path / "w.pth"
    server.script = [{"drop": 100_000}]
    with pytest.raises(DownloadError, match="re-run to resume"):
        fetch_weights(out, url=server.url("/w.pth"), retries=0, backoff=0.0, timeout=5.0, progress=False)
    server.files["/w.pth"] = new = payload[::-1]
    assert fetch_weights(out, url=server.url("/w.pth"), **FAST) == sha(new) == recorded(out)
    assert out.read_bytes() == new


# ---- Google Drive ---------------------------------------------------------------------------

def same_url(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.netloc, pa.path) == (pb.scheme, pb.netloc, pb.path) and \
        urllib.parse.parse_qs(pa.query) == urllib.parse.parse_qs(pb.query)


POST_FORM_2022 = ('<form id="download-form" action="https://drive.google.com/uc?id=1qzB&amp;export=download'
                  '&amp;confirm=t&amp;uuid=0a1b" method="post"><input type="submit" id="uc-download-link" '
                  'value="Download anyway"/></form>')
DOWNLOAD_URL_JSON = '<script>var c = {"downloadUrl":"https://doc-0k.googleusercontent.com/docs/x?e\\u003ddownload' \
                    '\\u0026id\\u003d1qzB"};</script>'


@pytest.mark.parametrize("page", [
    CONFIRM_PAGE_FORM.format(id="1qzBbT8U", name="unet_attention.pth", size="130M", uuid="9e1f-77",
                             action="https://drive.usercontent.google.com/download"),
    POST_FORM_2022,
    CONFIRM_PAGE_LINK.format(id="1qzBbT8U", token="AbC1"),
    DOWNLOAD_URL_JSON,
], ids=["get-form-2024", "post-form-2022", "link", "downloadUrl"])
def test_confirmation_page_gives_the_url_gdown_gives(page):
    gdown = pytest.importorskip("gdown.download")
    page_url = "https://docs.google.com/uc?id=1qzBbT8U&export=download"
    assert same_url(confirmation_url(page, page_url), gdown.get_url_from_gdrive_confirmation(page))


def test_drive_refusal_is_reported_as_gdown_reports_it():
    gdown = pytest.importorskip("gdown.download")
    with pytest.raises(gdown.FileURLRetrievalError, match="Too many users"):
        gdown.get_url_from_gdrive_confirmation(QUOTA_PAGE)
    with pytest.raises(DownloadError, match="Google Drive refuses the download: Too many users have viewed"):
        confirmation_url(QUOTA_PAGE, "https://drive.usercontent.google.com/download?id=x")


def test_drive_file_id():
    assert drive_file_id("https://drive.google.com/uc?id=1rpkvcaoKmHbSP5fk0zwhmDmqiSGVXXT8") == \
        "1rpkvcaoKmHbSP5fk0zwhmDmqiSGVXXT8"
    assert drive_file_id("https://drive.google.com/file/d/1qzB/view?usp=sharing") == "1qzB"
    assert drive_file_id("https://zenodo.org/records/1?id=3") is None


@pytest.mark.parametrize("page", ["form", "link"])
def test_large_drive_file_goes_through_the_confirmation(server, payload, tmp_path, monkeypatch, page):
    # The fake Drive lives on 127.0.0.1: let it count as Drive.
    monkeypatch.setattr("dannasep.data.weights.drive_file_id", lambda url: "x" if "/uc?" in url else None)
    server.drive_page = page
    server.drive["1qzBbT8UIKKWNMs"] = ("unet_attention.pth", payload)
    out = tmp_path / "danna-sep" / "unet_attention.pth"
    assert fetch_weights(out, url=server.url("/uc?id=1qzBbT8UIKKWNMs"), **FAST) == sha(payload)
    assert out.read_bytes() == payload and recorded(out) == sha(payload)
    paths = [p for p, _ in server.requests]
    assert paths[:2] == ["/uc?id=1qzBbT8UIKKWNMs", "/download?id=1qzBbT8UIKKWNMs&export=download"]
    assert "confirm=" in paths[-1] and paths[-1] == paths[-2]  # confirmed, then downloaded with Range support
    if page == "link":
        assert "download_warning_1=" in server.requests[-1][1]["Cookie"]


def test_small_drive_file_and_drive_refusal(server, payload, tmp_path, monkeypatch):
    monkeypatch.setattr("dannasep.data.weights.drive_file_id", lambda url: "x" if "/uc?" in url else None)
    server.drive["small"] = ("xumx.onnx", payload[:50_000])
    out = tmp_path / "xumx.onnx"
    assert fetch_weights(out, url=server.url("/uc?id=small"), **FAST) == sha(payload[:50_000])
    assert [p for p, _ in server.requests] == ["/uc?id=small", "/download?id=small&export=download",
                                               "/download?id=small&export=download"]

    server.drive_page = "quota"
    server.drive["big"] = ("demucs_4_decoders.pth", payload)
    other = tmp_path / "demucs_4_decoders.pth"
    with pytest.raises(DownloadError, match="Google Drive refuses the download: Too many users"):
        fetch_weights(other, url=server.url("/uc?id=big"), **FAST)
    assert not other.exists() and not sidecar_path(other).exists() and not part_path(other).exists()


# ---- demucs v2 ------------------------------------------------------------------------------

def test_url_sha256_prefix_reads_names_as_torch_hub_does():
    from torch.hub import HASH_REGEX

    for name in ("demucs48_hq-28a1282c.th", "tasnet_extra-df3777b2.th", "model-abc.tar.gz", "plain.pth"):
        match = HASH_REGEX.search(name)
        expected = match.group(1) if match and match.group(1) else None
        assert url_sha256_prefix(f"https://dl.fbaipublicfiles.com/demucs/v3.0/{name}") == expected
    assert url_sha256_prefix("https://dl.fbaipublicfiles.com/demucs/v3.0/demucs48_hq-28a1282c.th") == "28a1282c"


@pytest.mark.parametrize("matches", [True, False])
def test_demucs_prefix_is_checked_as_torch_hub_checks_it(server, payload, tmp_path, matches):
    import torch.hub

    prefix = sha(payload)[:8] if matches else "28a1282c"
    path = f"/demucs/v3.0/demucs48_hq-{prefix}.th"
    server.files[path] = payload
    out = tmp_path / f"demucs48_hq-{prefix}.th"
    reference = tmp_path / "reference.th"
    try:  # demucs v2 loads through torch.hub with check_hash=True, which does this
        torch.hub.download_url_to_file(server.url(path), str(reference), hash_prefix=prefix, progress=False)
        torch_hub_accepts = True
    except RuntimeError:
        torch_hub_accepts = False
    assert torch_hub_accepts == matches
    code = cli.main(["fetch", "demucs-v2-weights", "--out", str(out), "--url", server.url(path), *CLI_FAST])
    assert code == (0 if matches else 1)
    assert out.exists() == matches and sidecar_path(out).exists() == matches
    if matches:
        assert out.read_bytes() == payload and recorded(out) == sha(payload)


def test_demucs_sha256_contradicting_the_prefix_is_refused_before_downloading(server, tmp_path, capsys):
    args = ["fetch", "demucs-v2-weights", "--out", str(tmp_path / "d.th"), "--url",
            server.url("/demucs48_hq-28a1282c.th"), "--sha256", "ff" * 32, *CLI_FAST]
    assert cli.main(args) == 1
    assert "does not start with 28a1282c" in capsys.readouterr().err and server.requests == []


# ---- CLI and Snakemake ----------------------------------------------------------------------

@pytest.fixture
def released(server, payload, tmp_path, monkeypatch):
    """The schema defaults, with the released files served by the fake Drive and kept in tmp_path."""
    monkeypatch.setattr("dannasep.data.weights.drive_file_id", lambda url: "x" if "/uc?" in url else None)
    defaults = fetch_module._schema_defaults()
    for i, (key, entry) in enumerate(defaults["pretrained"]["danna_sep"].items()):
        file_id = urllib.parse.parse_qs(urllib.parse.urlsplit(entry["url"]).query)["id"][0]
        server.drive[file_id] = (Path(entry["path"]).name, payload[i:])
        entry["url"] = server.url(f"/uc?id={file_id}")
        entry["path"] = str(tmp_path / entry["path"])
    monkeypatch.setattr(fetch_module, "_schema_defaults", lambda: defaults)
    return defaults["pretrained"]["danna_sep"]


@pytest.mark.parametrize("xumx_format, files", [
    ("both", ["demucs_4_decoders.pth", "unet_attention.pth", "xumx.onnx", "xumx_mwf.pth"]),
    ("onnx", ["demucs_4_decoders.pth", "unet_attention.pth", "xumx.onnx"]),
    ("torchscript", ["demucs_4_decoders.pth", "unet_attention.pth", "xumx_mwf.pth"]),
])
def test_cli_danna_sep_weights_fetches_the_released_files(released, payload, tmp_path, xumx_format, files):
    assert cli.main(["fetch", "danna-sep-weights", "--xumx-format", xumx_format, *CLI_FAST]) == 0
    folder = tmp_path / "resources" / "pretrained" / "danna-sep"
    assert sorted(p.name for p in folder.iterdir()) == sorted(files + [f + ".sha256" for f in files])
    for i, (key, entry) in enumerate(released.items()):
        if Path(entry["path"]).name in files:
            assert Path(entry["path"]).read_bytes() == payload[i:] and recorded(Path(entry["path"])) == sha(payload[i:])


def test_cli_danna_sep_weights_one_file_and_its_advice(released, server, payload, tmp_path, capsys):
    out = tmp_path / "u.pth"
    url = released["unet_attention"]["url"]
    args = ["fetch", "danna-sep-weights", "--only", "unet_attention", "--out", str(out), "--url", url, *CLI_FAST]
    sidecar_path(out).write_text("ab" * 32 + "  u.pth\n")  # a different file was recorded before
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"`dannasep fetch danna-sep-weights --only unet_attention --out {out} --accept-new-checksum`" in err
    assert cli.main(args + ["--accept-new-checksum"]) == 0
    assert recorded(out) == sha(payload[2:])  # unet_attention is the third released file

    assert cli.main(["fetch", "danna-sep-weights", "--out", str(out), *CLI_FAST]) == 1
    assert "add --only" in capsys.readouterr().err


def test_snakemake_has_a_fetch_rule_for_each_configured_path():
    from dannasep.config import validate_config

    pretrained = validate_config({})["pretrained"]
    targets = {f"fetch_danna_sep_{key}": (e["path"], f"danna-sep-weights --only {key} --out {e['path']}")
               for key, e in pretrained["danna_sep"].items()}
    targets["fetch_demucs48_hq"] = (pretrained["demucs48_hq"]["path"],
                                    f"demucs-v2-weights --out {pretrained['demucs48_hq']['path']}")
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--cores", "1",
                          "--forceall", *(path for path, _ in targets.values())],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    for rule, (path, command) in targets.items():
        assert f"rule {rule}:\n    output: {path}\n" in out.stdout
        assert f"dannasep fetch {command} --url " in out.stdout
