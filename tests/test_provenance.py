"""Provenance and audit on a real tiny chain: dataset -> manifest -> checkpoints -> `dannasep
separate` -> `dannasep blend apply` -> `dannasep evaluate` -> `dannasep audit`, then tampering.

The chain is built once (relative paths, as the workflow runs it from its working directory);
every test that tampers with it works on its own copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import museval
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import TEST_NAMES, make_musdb_tree
from dannasep import cli
from dannasep.provenance import audit
from dannasep.checkpoint import build_record, save_final, torch_save_atomic
from dannasep.constants import SOURCES
from dannasep.data.manifest import write_manifest
from dannasep.models import TINY_KWARGS, build_model
from dannasep.provenance.code_state import code_state

COMPONENTS = ("xumx", "demucs")
BLEND = "mix"
SYSTEMS = COMPONENTS + (BLEND,)
# bass and other each come from one model only: the other model's file is not part of the blend
WEIGHTS = {"xumx": {"drums": 0.5, "bass": 0.0, "other": 1.0, "vocals": 0.3},
           "demucs": {"drums": 0.5, "bass": 1.0, "other": 0.0, "vocals": 0.7}}
MANIFEST = "results/data/manifest.json"


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tiny_record(system: str, seed: int, manifest_hash: str) -> dict:
    torch.manual_seed(seed)
    model = build_model(system, **TINY_KWARGS[system])
    return build_record(system=system, model_name=system, model_class=type(model).__name__,
                        model_kwargs=model.kwargs, state_dict=model.state_dict(),
                        train_config={"system": {"arch": system, "kwargs": TINY_KWARGS[system]},
                                      "data": {"segment_seconds": 2.0}},
                        seed=seed, manifest_hash=manifest_hash)


def run_cli(*argv) -> None:
    assert cli.main([str(a) for a in argv]) == 0, argv


def run_audit(*argv) -> int:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    return audit.run(parser.parse_args([str(a) for a in argv]))


def audit_json(capsys, *argv) -> tuple[int, dict, str]:
    capsys.readouterr()
    status = run_audit(*argv, "--json")
    out = capsys.readouterr()
    return status, json.loads(out.out), out.err


def score_path(system, track):
    return Path(f"results/scores/{system}/test/{track}.json")


def estimate(system, track, source):
    return Path(f"results/separations/{system}/test/{track}/{source}.wav")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        make_musdb_tree(Path("data"), train=[], test=TEST_NAMES, seconds=2.0)
        manifest = write_manifest("data", MANIFEST)
        for seed, system in enumerate(COMPONENTS):
            save_final(tiny_record(system, seed, manifest["manifest_hash"]), f"results/checkpoints/{system}",
                       f"results/checkpoints/{system}.json")
            for track in TEST_NAMES:
                run_cli("separate", "--checkpoint", f"results/checkpoints/{system}.json",
                        "--mixture", f"data/test/{track}/mixture.wav",
                        "--out-dir", f"results/separations/{system}/test/{track}")
        Path("results/blend").mkdir(parents=True)
        Path("results/blend/weights.yaml").write_text(yaml.safe_dump({"weights": WEIGHTS}))
        run_cli("blend", "apply", "--weights", "results/blend/weights.yaml", "--separations",
                "results/separations", "--system", BLEND, "--subset", "test", "--tracks", *TEST_NAMES)
        for system in SYSTEMS:
            for track in TEST_NAMES:
                run_cli("evaluate", "--estimates", f"results/separations/{system}/test/{track}",
                        "--references", f"data/test/{track}", "--track", track,
                        "--out", score_path(system, track), "--mode", "sdr", "--manifest", MANIFEST)
    return work


@pytest.fixture
def copy(chain, tmp_path, monkeypatch):
    """A private copy of the chain, as the current directory (records hold relative paths)."""
    work = tmp_path / "work"
    shutil.copytree(chain, work)
    monkeypatch.chdir(work)
    return work


def checkpoint_of(system) -> Path:
    return Path(json.loads(Path(f"results/checkpoints/{system}.json").read_text())["checkpoint"])


# --- what the steps record ----------------------------------------------------------------------

def test_score_json_records_what_was_scored_and_museval_still_reads_it(copy):
    track = TEST_NAMES[0]
    prov = json.loads(score_path("xumx", track).read_text())["provenance"]
    folder = f"results/separations/xumx/test/{track}"
    assert prov["estimates"]["folder"] == folder
    assert prov["estimates"]["files"] == {f"{s}.wav": sha256(f"{folder}/{s}.wav") for s in SOURCES}
    assert prov["estimates"]["provenance"]["sha256"] == sha256(f"{folder}/provenance.json")
    assert prov["references"]["files"] == {f"data/test/{track}/{s}.wav": sha256(f"data/test/{track}/{s}.wav")
                                           for s in SOURCES}
    assert prov["manifest"]["manifest_hash"] == json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    assert prov["mode"] == "sdr" and prov["code"] == code_state()
    # museval's own directory loader (it globs test/**/*.json) ignores the extra key
    store = museval.EvalStore()
    store.add_eval_dir("results/scores/xumx")
    assert len(store.df["track"].unique()) == len(TEST_NAMES)


def test_blend_apply_records_weights_and_component_files(copy):
    track = TEST_NAMES[1]
    prov = json.loads(Path(f"results/separations/{BLEND}/test/{track}/provenance.json").read_text())
    assert prov["weights"] == {"path": "results/blend/weights.yaml",
                               "sha256": sha256("results/blend/weights.yaml"), "table": WEIGHTS}
    for model in COMPONENTS:
        used = [s for s in SOURCES if WEIGHTS[model][s] != 0]
        component = prov["components"][model]
        assert component["files"] == {f"{s}.wav": sha256(estimate(model, track, s)) for s in used}
        assert component["provenance"]["sha256"] == sha256(f"results/separations/{model}/test/{track}/provenance.json")
    assert prov["estimates"] == {f"{s}.wav": sha256(estimate(BLEND, track, s)) for s in SOURCES}
    # the blend is the weighted sum of the component files it names
    blended = sf.read(estimate(BLEND, track, "vocals"))[0]
    parts = sum(WEIGHTS[m]["vocals"] * sf.read(estimate(m, track, "vocals"))[0] for m in COMPONENTS)
    np.testing.assert_allclose(blended, parts, atol=1e-6)


# --- audit of an untouched chain ----------------------------------------------------------------

def test_audit_passes_and_cell_is_median_over_tracks(copy, capsys):
    status, graph, _ = audit_json(capsys, "xumx")
    assert status == 0 and graph["ok"] and graph["problems"] == []
    for source in SOURCES:  # independent: nanmedian over frames, then median over tracks
        medians = []
        for track in TEST_NAMES:
            doc = json.loads(score_path("xumx", track).read_text())
            target = next(t for t in doc["targets"] if t["name"] == source)
            medians.append(np.nanmedian([f["metrics"]["SDR"] for f in target["frames"]]))
        assert graph["table"]["xumx"][source] == pytest.approx(np.median(medians), abs=1e-12)
    assert graph["table"]["xumx"]["avg"] == pytest.approx(np.mean([graph["table"]["xumx"][s] for s in SOURCES]))
    ckpt = graph["nodes"][f"checkpoint:{sha256(checkpoint_of('xumx'))}"]
    assert ckpt["path"] == str(checkpoint_of("xumx")) and ckpt["seed"] == 0
    assert ckpt["model"]["kwargs"] == build_model("xumx", **TINY_KWARGS["xumx"]).kwargs
    manifest_hash = json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    assert f"dataset:{manifest_hash}" in graph["nodes"]
    assert f"commit:{code_state()['git_commit']}" in graph["nodes"]


def test_audit_of_a_score_file_prints_the_chain(copy, capsys):
    assert run_audit(score_path("demucs", TEST_NAMES[0])) == 0
    text = capsys.readouterr().out
    for expected in (str(checkpoint_of("demucs")), sha256(checkpoint_of("demucs")),
                     json.loads(Path(MANIFEST).read_text())["manifest_hash"],
                     f"data/test/{TEST_NAMES[0]}/mixture.wav", "train config", "seed 1",
                     f"commit {code_state()['git_commit']}", "every hash verified: OK"):
        assert expected in text


def test_blend_chain_covers_every_component(copy, capsys):
    status, graph, _ = audit_json(capsys, BLEND, "vocals")
    assert status == 0
    assert set(graph["table"][BLEND]) == {"vocals"}
    reachable = _reachable(graph, f"cell:{BLEND}/vocals")
    for model in COMPONENTS:
        assert f"checkpoint:{sha256(checkpoint_of(model))}" in reachable
    assert "weights:results/blend/weights.yaml" in reachable


# --- tampering ----------------------------------------------------------------------------------

def test_replaced_checkpoint_fails_naming_it(copy, capsys):
    path = checkpoint_of("xumx")
    before = sha256(path)
    manifest_hash = json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    torch_save_atomic(tiny_record("xumx", 99, manifest_hash), path)  # same name, other weights
    after = sha256(path)
    assert before != after
    status, graph, err = audit_json(capsys, "xumx")
    assert status == 1 and not graph["ok"]
    mismatch = [p for p in graph["problems"] if p["file"] == str(path)]
    assert mismatch and mismatch[0]["expected"] == before and mismatch[0]["actual"] == after
    assert str(path) in err and before in err and after in err
    # the blend that used it fails too
    assert run_audit(BLEND) == 1


def test_edited_estimate_fails_naming_it(copy, capsys):
    path = estimate("xumx", TEST_NAMES[1], "drums")
    before = sha256(path)
    audio, sr = sf.read(path, dtype="float32")
    audio[100, 0] += 0.01
    sf.write(path, audio, sr, subtype="FLOAT")
    status, graph, err = audit_json(capsys, "xumx", "drums")
    assert status == 1
    assert {(p["file"], p["expected"], p["actual"]) for p in graph["problems"]} == {(str(path), before, sha256(path))}
    assert str(path) in err
    assert run_audit(BLEND) == 1  # xumx drums has weight 0.5 in the blend


def test_file_outside_the_blend_does_not_fail_the_blend(copy, capsys):
    path = estimate("xumx", TEST_NAMES[0], "bass")  # xumx bass has weight 0
    sf.write(path, np.zeros((10, 2), np.float32), 44100, subtype="FLOAT")
    assert audit_json(capsys, BLEND)[0] == 0
    assert audit_json(capsys, "xumx")[0] == 1


def test_new_checkpoint_makes_estimates_stale(copy, capsys):
    manifest_hash = json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    old = checkpoint_of("demucs")
    old_sha = sha256(old)
    new = save_final(tiny_record("demucs", 7, manifest_hash), "results/checkpoints/demucs",
                     "results/checkpoints/demucs.json")
    assert not Path(old).exists()  # a training folder keeps the final checkpoint its pointer names
    status, graph, _ = audit_json(capsys, "demucs")
    assert status == 1
    assert {(p["file"], p["expected"], p["actual"]) for p in graph["problems"]} == {
        ("results/checkpoints/demucs.json", old_sha, sha256(new)), (str(old), old_sha, None)}


def test_changed_dataset_fails_naming_the_files(copy, capsys):
    reference = Path(f"data/test/{TEST_NAMES[0]}/vocals.wav")
    scored = sha256(reference)
    audio, sr = sf.read(reference, dtype="int16")
    audio[0] += 1
    sf.write(reference, audio, sr, subtype="PCM_16")
    old_hash = json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    new_hash = write_manifest("data", MANIFEST)["manifest_hash"]
    status, graph, _ = audit_json(capsys, "xumx")
    assert status == 1
    problems = {(p["file"], p["expected"], p["actual"]) for p in graph["problems"]}
    assert (MANIFEST, old_hash, new_hash) in problems  # the checkpoints were trained on old data
    assert (str(reference), scored, sha256(reference)) in problems  # changed since it was scored
    assert (str(reference), sha256(reference), scored) in problems  # differs from the new manifest


def test_manifest_edited_by_hand_is_caught(copy, capsys):
    doc = json.loads(Path(MANIFEST).read_text())
    doc["files"][0]["sha256"] = "0" * 64
    Path(MANIFEST).write_text(json.dumps(doc))
    status, graph, _ = audit_json(capsys, "demucs")
    assert status == 1 and any(p["file"] == MANIFEST and "manifest_hash" in p["message"]
                               for p in graph["problems"])


def test_an_edited_score_number_fails_the_audit_without_any_flag(copy, capsys):
    assert audit_json(capsys, "xumx", "vocals")[0] == 0
    path = score_path("xumx", TEST_NAMES[0])
    doc = json.loads(path.read_text())
    doc["targets"][3]["frames"][0]["metrics"]["SDR"] = 9.0
    path.write_text(json.dumps(doc))
    assert audit_json(capsys, "xumx", "vocals", "--no-rescore")[0] == 0  # hashes alone miss it
    status, graph, err = audit_json(capsys, "xumx", "vocals")
    assert status == 1 and [p["file"] for p in graph["problems"]] == [str(path)]
    assert "vocals SDR frames differ" in graph["problems"][0]["message"]
    assert "provenance check failed" in err
    # the workflow's provenance rule audits the same way (rescoring by default)
    assert run_audit("--systems", *SYSTEMS, "--folder", "test", "--out", "results/provenance.json") == 1
    assert json.loads(Path("results/provenance.json").read_text())["ok"] is False


def test_estimates_scored_against_another_tracks_references_fail(copy, capsys):
    a, b = TEST_NAMES[0], TEST_NAMES[1]
    run_cli("evaluate", "--estimates", f"results/separations/xumx/test/{a}", "--references", f"data/test/{b}",
            "--track", a, "--out", score_path("xumx", a), "--mode", "sdr", "--manifest", MANIFEST)
    status, graph, _ = audit_json(capsys, str(score_path("xumx", a)), "--no-rescore")
    assert status == 1
    assert any(p["file"] == f"data/test/{b}" and "mixes tracks" in p["message"] for p in graph["problems"])


def test_a_pointer_naming_another_dataset_fails(copy, capsys):
    pointer = Path("results/checkpoints/xumx.json")
    doc = json.loads(pointer.read_text())
    doc["manifest_hash"] = "0" * 64
    pointer.write_text(json.dumps(doc))
    status, graph, _ = audit_json(capsys, "xumx")
    assert status == 1 and any(p["file"] == str(pointer) and "manifest hash" in p["message"]
                               for p in graph["problems"])


def test_consistent_edits_that_reattribute_estimates_fail_a_reseparation(copy, capsys):
    """xumx's estimates of one track re-attributed to the demucs checkpoint: the separation record
    and the score's record of it edited together, so every hash agrees."""
    track = TEST_NAMES[0]
    folder = Path(f"results/separations/xumx/test/{track}")
    record = json.loads((folder / "provenance.json").read_text())
    demucs = json.loads(Path("results/checkpoints/demucs.json").read_text())
    record["checkpoint"] = {"path": demucs["checkpoint"], "sha256": demucs["sha256"],
                            "pointer": "results/checkpoints/demucs.json"}
    (folder / "provenance.json").write_text(json.dumps(record))
    score = score_path("xumx", track)
    doc = json.loads(score.read_text())
    doc["provenance"]["estimates"]["provenance"]["sha256"] = sha256(folder / "provenance.json")
    score.write_text(json.dumps(doc))
    assert audit_json(capsys, "xumx", "vocals")[0] == 0  # every hash and number agrees
    status, graph, _ = audit_json(capsys, "xumx", "vocals", "--reseparate", "1")
    assert status == 1
    assert any("separating" in p["message"] and "other estimates" in p["message"] for p in graph["problems"])
    # the untouched demucs estimates separate again to what is recorded
    status, graph, _ = audit_json(capsys, "demucs", "--reseparate", "2")
    assert status == 0 and sum("reseparated" in n for n in graph["nodes"].values()) == 2


def test_score_without_provenance_fails(copy, capsys):
    path = score_path("demucs", TEST_NAMES[1])
    doc = json.loads(path.read_text())
    del doc["provenance"]
    path.write_text(json.dumps(doc))
    status, graph, _ = audit_json(capsys, str(path))
    assert status == 1 and "re-run `dannasep evaluate`" in graph["problems"][0]["message"]


def test_moved_results_folder_still_audits(copy, tmp_path, capsys, monkeypatch):
    """Records hold paths relative to the run's directory: resolved against --results' parent."""
    monkeypatch.chdir(tmp_path)
    status, graph, _ = audit_json(capsys, BLEND, "--results", copy / "results")
    assert status == 0 and graph["ok"]


def test_checkpoint_moved_within_results_is_found_by_its_hash(copy, capsys):
    path = checkpoint_of("demucs")
    moved = Path("results/checkpoints/archive") / path.name
    moved.parent.mkdir()
    path.rename(moved)
    status, graph, _ = audit_json(capsys, "demucs")
    assert status == 0
    assert graph["nodes"][f"checkpoint:{sha256(moved)}"]["path"] == str(moved)
    moved.unlink()
    status, graph, _ = audit_json(capsys, "demucs")
    assert status == 1 and "checkpoint missing" in graph["problems"][0]["message"]
    assert graph["problems"][0]["file"] == str(path)


# --- the whole table ----------------------------------------------------------------------------

def _reachable(graph, start) -> set[str]:
    out, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in out:
            out.add(node)
            todo.extend(e["to"] for e in graph["edges"] if e["from"] == node)
    return out


def test_graph_of_the_table_is_written_atomically(copy, capsys):
    out = Path("results/provenance.json")
    capsys.readouterr()
    assert run_audit("--systems", *SYSTEMS, "--tracks", *TEST_NAMES, "--out", out) == 0
    graph = json.loads(out.read_text())
    assert graph["ok"] and sorted(graph["table"]) == sorted(SYSTEMS)
    manifest_hash = json.loads(Path(MANIFEST).read_text())["manifest_hash"]
    for system in SYSTEMS:
        for source in SOURCES + ("avg",):
            reachable = _reachable(graph, f"cell:{system}/{source}")
            kinds = {graph["nodes"][n]["kind"] for n in reachable}
            assert {"score", "estimates", "checkpoint", "config", "dataset", "commit"} <= kinds
            assert f"dataset:{manifest_hash}" in reachable
            models = COMPONENTS if system == BLEND else (system,)
            assert {n for n in reachable if n.startswith("checkpoint:")} == {
                f"checkpoint:{sha256(checkpoint_of(m))}" for m in models}
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_audit_usage_errors_name_the_fix(copy):
    from dannasep.errors import DannasepError

    with pytest.raises(DannasepError, match="results/scores/nosuch/test"):
        run_audit("nosuch")
    with pytest.raises(DannasepError, match="unknown source"):
        run_audit("xumx", "piano")
    with pytest.raises(DannasepError, match="no such score file"):
        run_audit("missing.json")


def test_malformed_records_give_one_line_errors(copy, capsys):
    path = score_path("xumx", TEST_NAMES[1])
    doc = json.loads(path.read_text())
    del doc["provenance"]["track"]
    path.write_text(json.dumps(doc))
    status, graph, _ = audit_json(capsys, str(path))
    assert status == 1 and "malformed record (missing field 'track')" in graph["problems"][0]["message"]
    broken = Path("results/checkpoints/broken.pt")
    record = torch.load(checkpoint_of("xumx"), weights_only=True)
    del record["state_dict"]
    torch.save(record, broken)
    assert cli.main(["inspect", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed checkpoint record" in err and "Traceback" not in err


def test_a_score_changed_after_the_tables_were_made_fails(copy, capsys):
    run_cli("report", "tables", "--scores", "results/scores", "--folder", "test", "--systems", *SYSTEMS,
            "--weights", "none", "--out-dir", "results/tables", "--metrics", "results/metrics.json")
    recorded = json.loads(Path("results/tables/inputs.json").read_text())["scores"]
    path = score_path("xumx", TEST_NAMES[0])
    assert recorded[str(path)] == sha256(path)
    assert audit_json(capsys, "xumx")[0] == 0
    path.write_text(path.read_text() + "\n")  # same numbers: only the tables' record can tell
    status, graph, _ = audit_json(capsys, "xumx")
    assert status == 1 and [p["file"] for p in graph["problems"]] == [str(path)]
    assert "tables were computed from another version" in graph["problems"][0]["message"]


def _searched_blend(system: str) -> None:
    """`blend stats` -> `blend search --stats` -> `blend apply` -> `evaluate`, as the workflow does."""
    run_cli("blend", "stats", "--models", *COMPONENTS, "--separations", "results/separations",
            "--references", "data", "--subset", "test", "--tracks", *TEST_NAMES,
            "--out-dir", "results/blend/stats/test")
    run_cli("blend", "search", "--models", *COMPONENTS, "--subset", "test", "--step", "0.1",
            "--stats", *(f"results/blend/stats/test/{t}.npz" for t in TEST_NAMES),
            "--out", "results/blend/searched.yaml", "--threads", "1")
    run_cli("blend", "apply", "--weights", "results/blend/searched.yaml", "--separations",
            "results/separations", "--system", system, "--subset", "test", "--tracks", *TEST_NAMES)
    for track in TEST_NAMES:
        run_cli("evaluate", "--estimates", f"results/separations/{system}/test/{track}",
                "--references", f"data/test/{track}", "--track", track,
                "--out", score_path(system, track), "--mode", "sdr", "--manifest", MANIFEST)


def test_searched_weights_trace_to_the_statistics_and_the_estimates_they_were_searched_on(copy, capsys):
    _searched_blend("searched")
    status, graph, _ = audit_json(capsys, "searched", "vocals", "--no-rescore")
    assert status == 0, graph["problems"]
    weights = "weights:results/blend/searched.yaml"
    stats = {f"stats:results/blend/stats/test/{t}.npz" for t in TEST_NAMES}
    assert stats <= {e["to"] for e in graph["edges"] if e["from"] == weights}
    # through the statistics, every component's estimates and checkpoint
    for sid in stats:
        reachable = _reachable(graph, sid)
        for model in COMPONENTS:
            assert f"checkpoint:{sha256(checkpoint_of(model))}" in reachable
        assert any(n.startswith("references:") for n in reachable)


def test_a_changed_statistics_file_fails_the_blend_naming_it(copy, capsys):
    _searched_blend("searched")
    path = Path(f"results/blend/stats/test/{TEST_NAMES[0]}.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["diff_gram"] = arrays["diff_gram"] * 1.01  # statistics that no longer match the estimates
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    status, graph, _ = audit_json(capsys, "searched", "vocals", "--no-rescore")
    assert status == 1
    assert any(p["file"] == str(path) and "blend statistics changed" in p["message"] for p in graph["problems"])


def test_hashes_recorded_at_write_are_reused_only_while_the_file_is_unchanged(copy, capsys, monkeypatch):
    from dannasep.provenance import records

    folder = Path(f"results/separations/xumx/test/{TEST_NAMES[0]}")
    # separated here: the copy gave the files new inodes, so no shortcut applies to them
    run_cli("separate", "--checkpoint", "results/checkpoints/xumx.json", "--mixture",
            f"data/test/{TEST_NAMES[0]}/mixture.wav", "--out-dir", folder)
    names = [f"{s}.wav" for s in SOURCES]
    hashed = []
    real = records.sha256_file
    monkeypatch.setattr(records, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    record = records.estimates_record(folder, names)
    assert hashed == ["provenance.json"]  # the estimates' hashes come from provenance.json
    assert record["files"] == {n: sha256(folder / n) for n in names}

    # an edit of the same size changes the time: hashed again, the new hash recorded
    path = folder / "vocals.wav"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    hashed.clear()
    record = records.estimates_record(folder, names)
    assert hashed == ["vocals.wav", "provenance.json"]
    assert record["files"]["vocals.wav"] == sha256(path)

    # an in-place edit whose time is reset on purpose fools the shortcut, never the audit
    prov = json.loads((folder / "provenance.json").read_text())
    stamp = prov["written"]["vocals.wav"]["mtime_ns"]
    os.utime(path, ns=(stamp, stamp))
    assert records.estimates_record(folder, names)["files"]["vocals.wav"] != sha256(path)
    capsys.readouterr()
    assert run_audit("xumx", "vocals") == 1
    out = capsys.readouterr()
    assert f"{folder}/vocals.wav" in out.out + out.err
