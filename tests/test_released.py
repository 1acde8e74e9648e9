"""The authors' released files: run as they are, imported into our modules, and config/released.yaml.

The files are built here in each released layout (tests/released_files.py: the authors' key names,
shapes and call conventions at small sizes). Figures checked once outside the repository with the
authors' own code (2026-11, torch 2.13): their X_UMX, UNetAttn (k=2) and DemucsSplit (channels 4)
classes from music-demixing-challenge-ismir-2021-entry@2f08f9b, scripted with torch.jit.script,
import with relative output differences 2.5e-7, 1.2e-7 and 5.9e-7; an ONNX export of their X_UMX
(torch.onnx TorchScript exporter) imports to 1.4e-7 of onnxruntime and to 1.4e-7 of the scripted
file; our Demucs with a demucs v2.0.3 `Demucs(channels=8, depth=4)` state dict equals v2's
`apply_model(split=False)` to 7.0e-7.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import julius
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import released_files as rf
from dannasep.cli import main
from dannasep.errors import DataError
from dannasep.models.demucs import SincResample
from dannasep.models.released import MaskedMagnitude, load_torchscript, wrap_released
from dannasep.models.released_import import import_file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEPARATE = {"xumx": {"wiener_iterations": 1, "chunk_seconds": 1.5},
            "unet": {"wiener_iterations": 1, "chunk_seconds": 1.5},
            "demucs": {"shifts": 0, "chunk_seconds": 1.5, "clamp": 0.99}}
ARCH = {"xumx_mwf": "xumx", "xumx_onnx": "xumx", "unet_attention": "unet", "demucs_4_decoders": "demucs"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("released")
    built = {kind: build(folder / rf.FILE_NAMES[kind]) for kind, build in rf.BUILDERS.items()}
    built["demucs48_hq"], _ = rf.demucs48_hq(folder / "demucs48_hq-28a1282c.th")
    return built


def relative(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


# ---------------------------------------------------------------------------------------------
# What the files are and how they are called
# ---------------------------------------------------------------------------------------------

def test_scripted_xumx_needs_a_contiguous_magnitude(files):
    module = load_torchscript(files["xumx_mwf"])
    spec = torch.stft(torch.randn(2, 20000), 4096, 1024, window=torch.hann_window(4096), return_complex=True)
    magnitude = spec.abs().unsqueeze(0)
    assert not magnitude.is_contiguous()  # torch >= 1.10
    with pytest.raises(RuntimeError, match="view"):
        module(magnitude)
    out = MaskedMagnitude(module)(magnitude)
    torch.testing.assert_close(out, module(magnitude.contiguous()) * magnitude.unsqueeze(1))


def test_unet_runs_in_pieces_of_2584_frames_of_at_least_2_to_the_levels(files):
    module = load_torchscript(files["unet_attention"])  # 3 levels: needs 8 frames
    runner = wrap_released("unet_attention", module, {"levels": 3})
    assert (runner.piece_frames, runner.min_frames) == (2584, 8)  # danna_sep's tf_sep(batching=True)
    with pytest.raises(RuntimeError):
        module(torch.rand(1, 2, 2049, 4))
    runner.piece_frames = 30  # the same splitting on a smaller scale
    mag = torch.rand(1, 2, 2049, 30 + 5) * 2
    with torch.no_grad():
        out = runner(mag)
        first = module(mag[..., :30])  # pieces one by one, the short tail zero-padded to 8 frames
        tail = module(torch.nn.functional.pad(mag[..., 30:], (0, 3)))[..., :5]
    torch.testing.assert_close(out, torch.cat([first, tail], -1) * mag.unsqueeze(1))
    # The last transposed conv gives 2 * 743 - 1 bins of the 1487 kept and 2 * 15 - 1 frames:
    # the bins from 1485 up and the 30th frame are filled with 0.25, the rest computed.
    assert torch.all(first[:, :, :, 1485:] == 0.25) and torch.all(first[..., -1] == 0.25)
    assert not torch.any(first[:, :, :, :1485, :-1] == 0.25)


def test_sinc_resampling_equals_julius():
    x = torch.randn(2, 3, 4001)
    for old, new in ((1, 2), (2, 1)):
        torch.testing.assert_close(SincResample(old, new)(x), julius.ResampleFrac(old, new)(x), atol=3e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Import: every tensor mapped, outputs checked
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["xumx_mwf", "xumx_onnx", "unet_attention", "demucs_4_decoders"])
def test_import_gives_the_files_outputs(files, kind):
    imported = import_file(kind, files[kind])
    assert imported.check["max_abs_difference_relative"] < 1e-5
    assert not imported.model.training
    assert len(imported.mapping) == len(imported.model.state_dict())


def test_xumx_tensors_land_on_their_source(files):
    """The authors pack the four sources in grouped convs in the order drums, bass, other, vocals."""
    state = load_torchscript(files["xumx_mwf"]).state_dict()
    model = import_file("xumx_mwf", files["xumx_mwf"], check=False).model
    hidden = model.hidden_size
    bass = slice(hidden, 2 * hidden)  # source 1
    assert torch.equal(model.encoders["bass"][0].weight, state["affine1.0.weight"][bass, :, 0])
    assert torch.equal(model.encoders["bass"][1].running_var, state["affine1.1.running_var"][bass])
    assert torch.equal(model.output_scale[3], state["output_scale"].view(4, -1)[3])
    assert torch.equal(model.lstms["other"].weight_hh_l1_reverse, state["other_lstm.weight_hh_l1_reverse"])


def test_onnx_import_equals_the_torchscript_import(files):
    """Both files hold the same weights (same seed): the ONNX graph read back by structure."""
    onnx_model = import_file("xumx_onnx", files["xumx_onnx"], check=False).model
    script_model = import_file("xumx_mwf", files["xumx_mwf"], check=False).model
    mag = torch.rand(1, 2, 2049, 23) * 4
    with torch.no_grad():
        assert relative(onnx_model(mag), script_model(mag)) < 1e-5


def test_demucs48_hq_imports_to_demucs_v2(files, tmp_path):
    path, v2 = rf.demucs48_hq(tmp_path / "v2.th", seed=3)
    model = import_file("demucs48_hq", path).model
    mix = torch.randn(1, 2, 20001) * 0.1
    with torch.no_grad():
        assert relative(model(mix), v2.separate(mix)) < 1e-5


def test_import_names_missing_unexpected_and_misshapen_keys(files, tmp_path):
    state = torch.load(files["demucs48_hq"], weights_only=True)
    broken = dict(state)
    broken.pop("encoder.1.2.bias")
    broken["encoder.0.9.weight"] = torch.zeros(1)
    broken["lstm.linear.bias"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.th")
    with pytest.raises(DataError) as err:
        import_file("demucs48_hq", tmp_path / "broken.th")
    message = str(err.value)
    assert "missing keys ['encoder.1.2.bias']" in message
    assert "unexpected keys ['encoder.0.9.weight']" in message
    assert "lstm.linear.bias gives [3]" in message


def test_import_refuses_a_module_that_computes_something_else(tmp_path):
    path = rf.xumx_mwf(tmp_path / "sigmoid.pth", sigmoid=True)  # same keys, other masks
    with pytest.raises(DataError, match="differ by .* the import is refused"):
        import_file("xumx_mwf", path)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["import", "xumx_mwf", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "absent.pth" in err and "not found" in err
    assert main(["import", "demucs48_hq", str(tmp_path / "absent.th"), "--as-is", "--out", str(tmp_path / "x.pt")]) == 1
    assert "cannot run as it is" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Issue 9's "done when": the file as it is and the imported checkpoint separate alike
# ---------------------------------------------------------------------------------------------

def _separate(tmp_path, checkpoint, system, arch, kind, as_is, mixture):
    config = tmp_path / f"{system}.yaml"
    weights = {"from": "released" if as_is else "import", "kind": kind}
    config.write_text(yaml.safe_dump({"models": {system: {"arch": arch, "weights": weights,
                                                          "separate": SEPARATE[arch]}}}))
    out = tmp_path / f"sep-{checkpoint.stem}"
    assert main(["separate", "--checkpoint", str(checkpoint), "--mixture", str(mixture), "--out-dir", str(out),
                 "--config", str(config), "--system", system, "--device", "cpu"]) == 0
    return {s: sf.read(out / f"{s}.wav")[0] for s in ("drums", "bass", "other", "vocals")}


@pytest.mark.parametrize("kind", ["xumx_mwf", "xumx_onnx", "unet_attention", "demucs_4_decoders"])
def test_released_file_and_imported_checkpoint_separate_alike(files, tmp_path, kind):
    rng = np.random.default_rng(0)
    mixture = tmp_path / "mixture.wav"
    sf.write(mixture, (rng.standard_normal((int(3.3 * 44100), 2)) * 0.1).astype(np.float32), 44100, subtype="FLOAT")
    arch = ARCH[kind]
    released, imported = tmp_path / "released.pt", tmp_path / "imported.pt"
    assert main(["import", kind, str(files[kind]), "--as-is", "--out", str(released),
                 "--system", f"released_{arch}"]) == 0
    assert main(["import", kind, str(files[kind]), "--out", str(imported), "--system", arch]) == 0
    as_is = _separate(tmp_path, released, f"released_{arch}", arch, kind, True, mixture)
    ours = _separate(tmp_path, imported, arch, arch, kind, False, mixture)
    for source in as_is:
        assert as_is[source].shape == ours[source].shape == (int(3.3 * 44100), 2)
        assert np.abs(as_is[source]).max() > 0
        assert relative(ours[source], as_is[source]) < 1e-4, source


# ---------------------------------------------------------------------------------------------
# The checkpoint describes itself; provenance ends at the file
# ---------------------------------------------------------------------------------------------

def test_imported_checkpoint_records_the_file_and_audit_ends_there(files, tmp_path):
    from dannasep.checkpoint import load_checkpoint
    from dannasep.io import sha256_file
    from dannasep.provenance.graph import Tracer

    weights = tmp_path / "demucs_4_decoders.pth"
    shutil.copy(files["demucs_4_decoders"], weights)
    out, pointer = tmp_path / "results" / "checkpoints" / "demucs", tmp_path / "results" / "checkpoints" / "demucs.json"
    url = "https://example.org/demucs_4_decoders.pth"
    assert main(["import", "demucs_4_decoders", str(weights), "--out", str(out), "--pointer", str(pointer),
                 "--url", url]) == 0
    doc = json.loads(pointer.read_text())
    record = load_checkpoint(doc["checkpoint"])
    source = record["source"]
    assert source["url"] == url and source["sha256"] == sha256_file(weights) == doc["source"]["sha256"]
    assert source["mapping"][0].keys() == {"from", "to", "op"} and source["check"]["tolerance_relative"] == 1e-4
    assert record["train_config"] is None and record["inference"] == {"pad_to_valid_length": True}

    tracer = Tracer(tmp_path / "results")
    cid = tracer.trace_checkpoint(doc["checkpoint"], doc["sha256"], pointer)
    targets = {e["to"]: e["relation"] for e in tracer.edges if e["from"] == cid}
    download = f"download:{source['sha256']}"
    assert targets[download] == "imported from"
    assert tracer.nodes[download]["url"] == url and not tracer.problems
    assert not any(t.startswith(("config:", "dataset:")) for t in targets)  # nothing was trained

    with weights.open("ab") as handle:  # the file changed after the import
        handle.write(b"\0")
    tracer = Tracer(tmp_path / "results")
    tracer.trace_checkpoint(doc["checkpoint"], doc["sha256"], pointer)
    assert [p["node"] for p in tracer.problems] == [download]


# ---------------------------------------------------------------------------------------------
# config/released.yaml through Snakemake
# ---------------------------------------------------------------------------------------------

PRETRAINED = {"xumx_mwf": "danna-sep/xumx_mwf.pth", "unet_attention": "danna-sep/unet_attention.pth",
              "demucs_4_decoders": "danna-sep/demucs_4_decoders.pth", "xumx_onnx": "danna-sep/xumx.onnx",
              "demucs48_hq": "demucs48_hq-28a1282c.th", "official_xumx": "pretrained_xumx_musdb18HQ.pth"}
RELEASED_SYSTEMS = {"released_xumx": {"arch": "xumx", "weights": {"from": "released", "kind": "xumx_onnx"},
                                      "separate": SEPARATE["xumx"]},
                    "released_unet": {"arch": "unet", "weights": {"from": "released", "kind": "unet_attention"},
                                      "separate": SEPARATE["unet"]},
                    "released_demucs": {"arch": "demucs", "weights": {"from": "released", "kind": "demucs_4_decoders"},
                                        "separate": SEPARATE["demucs"]}}
# config/released.yaml's systems, and the released ones run as they are
WITH_RELEASED = ["xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs", *RELEASED_SYSTEMS]


def _repo_with_files(tmp_path, files=None):
    from conftest import copy_repo

    repo = copy_repo(tmp_path / "repo")
    folder = repo / "resources" / "pretrained"
    for kind, name in PRETRAINED.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if files is None:
            (folder / name).write_bytes(b"")
        elif kind == "official_xumx":
            from test_xumx_import import official_package

            torch.save(official_package(), folder / name)
        else:
            shutil.copy(files[kind], folder / name)
    return repo


def _snakemake(repo, *args, timeout=300):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(repo), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=repo, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_released_config_plans_no_training(tmp_path):
    repo = _repo_with_files(tmp_path)
    extra = tmp_path / "with_released.yaml"
    extra.write_text(yaml.safe_dump({"models": RELEASED_SYSTEMS, "systems": WITH_RELEASED}))
    out = _snakemake(repo, "-n", "--cores", "2", "--configfile", "config/released.yaml", str(extra))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train_" not in out.stdout
    for system in ("xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs", *RELEASED_SYSTEMS):
        assert f"import_{system}" in out.stdout


def test_a_kind_that_does_not_fit_the_arch_stops_the_run(tmp_path):
    repo = _repo_with_files(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {"released_unet": {"arch": "xumx", "weights": {
        "from": "released", "kind": "unet_attention"}}}, "systems": [*WITH_RELEASED[:5], "released_unet"]}))
    out = _snakemake(repo, "-n", "--cores", "1", "--configfile", "config/released.yaml", str(bad))
    assert out.returncode != 0
    assert "weights.kind unet_attention holds a unet, but arch is xumx" in out.stdout + out.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_small_released_run_end_to_end(files, tmp_path):
    """config/released.yaml on the embedded synthetic data with small files of each layout."""
    repo = _repo_with_files(tmp_path, files)
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({
        "dataset": {"kind": "synthetic", "root": "resources/musdb18hq-synthetic-test",
                    "synthetic": {"train_tracks": 1, "valid_tracks": 1, "test_tracks": 1, "duration": 4.0}},
        "evaluation": {"tracks": 1}, "blend": {"tracks": 1, "step": 0.1},
        "models": {**{s: {"separate": SEPARATE[a]} for s, a in (("xumx", "xumx"), ("xumx_baseline", "xumx"),
                                                                  ("unet", "unet"), ("demucs", "demucs"),
                                                                  ("demucs_baseline", "demucs"))},
                   **RELEASED_SYSTEMS}, "systems": WITH_RELEASED}))
    out = _snakemake(repo, "--cores", "2", "--configfile", "config/released.yaml", str(small), timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    results = repo / "results"
    assert not (results / "training").exists()
    graph = json.loads((results / "provenance.json").read_text())
    assert graph["ok"], graph["problems"]
    downloads = [n for n in graph["nodes"].values() if n["kind"] == "download"]
    assert {n["weights_kind"] for n in downloads} == set(PRETRAINED)
    table = (results / "tables" / "results.csv").read_text()
    assert "released_unet" in table and "Danna-Sep (published weights)" in table
    track = next((results / "separations" / "unet" / "test").iterdir()).name
    for system, twin in (("released_xumx", "xumx"), ("released_unet", "unet"), ("released_demucs", "demucs")):
        for source in ("drums", "vocals"):
            a = sf.read(results / "separations" / system / "test" / track / f"{source}.wav")[0]
            b = sf.read(results / "separations" / twin / "test" / track / f"{source}.wav")[0]
            assert relative(b, a) < 1e-4
    audit = subprocess.run([str(BIN / "dannasep"), "audit", "xumx", "vocals"], cwd=repo, capture_output=True,
                           text=True, env={"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "imported from: published file xumx_mwf https://drive.google.com/" in audit.stdout
