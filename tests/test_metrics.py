"""Metrics: the fast SDR against museval itself, nSDR by hand, museval-schema JSON round trips."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import museval
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from dannasep.evaluation import cli as evaluate_cli
from dannasep.evaluation.references import read_references
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.errors import DataError
from dannasep.evaluation.sdr import MDX_DELTA, frame_slices, framewise_sdr, nsdr
from dannasep.evaluation.scores import aggregate, aggregate_nsdr, evaluate_track, track_scores

SR = SAMPLE_RATE


def realistic_track(seconds: float = 4.3, seed: int = 0):
    """References and estimates as models get them wrong: filtered noise, a gain error, a delay,
    white noise; one silent reference window, one anti-phase (museval-silent) estimate window,
    an estimate shorter than the reference (museval zero-pads it)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    refs = (rng.standard_normal((4, n, 2)) * 0.1).astype(np.float32)
    refs[1, SR:2 * SR] = 0
    ests = refs.astype(np.float64)
    ests[0] += lfilter([1, 0.5], [1, -0.3], rng.standard_normal((n, 2)) * 0.03, axis=0)
    ests[1] *= 0.8
    ests[2] = 0.9 * np.roll(refs[2], 20, axis=0)
    ests[3] += 0.05 * rng.standard_normal((n, 2))
    ests[3, 3 * SR:4 * SR, 1] = -ests[3, 3 * SR:4 * SR, 0]
    return refs, ests[:, : n - 1000]


@pytest.fixture(scope="module")
def museval_run():
    """One museval run through evaluate_track(mode="museval"), keeping museval's raw arrays."""
    refs, ests = realistic_track()
    captured = {}
    original = museval.evaluate

    def spy(*args, **kwargs):
        captured["raw"] = original(*args, **kwargs)
        return captured["raw"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(museval, "evaluate", spy)
        scores = evaluate_track(dict(zip(SOURCES, refs)), dict(zip(SOURCES, ests)), mode="museval")
    sdr, isr, sir, sar = captured["raw"]
    return refs, ests, scores, {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}


# --- framing and the fast SDR -------------------------------------------------------------------

@pytest.mark.parametrize("length,win,hop", [(10, 3, 3), (9, 3, 3), (3, 3, 3), (2, 3, 3), (10, 4, 2),
                                            (SR * 3 + 17, SR, SR), (SR * 5, SR * 2, SR)])
def test_frame_slices_are_museval_framing(length, win, hop):
    assert frame_slices(length, win, hop) == list(museval.metrics.Framing(win, hop, length))


def test_framewise_sdr_hand_values_and_nan_rule():
    rng = np.random.default_rng(1)
    refs = rng.standard_normal((2, 3 * 100 + 40, 2))  # three windows of 100, the 40 tail dropped
    ests = refs.copy()
    ests[0] *= 0.5                    # error energy 1/4 of the signal: 10 log10(4) dB
    ests[1] += refs[1] * 0.1          # 10 log10(100) = 20 dB
    refs[1, 100:200] = 0              # a silent reference window: NaN for both sources
    ests[1, 100:200] = 0
    ests[0, 200:300, 1] = -ests[0, 200:300, 0]  # channels cancel: museval calls it silent
    sdr = framewise_sdr(refs, ests, win=100, hop=100)
    assert sdr.shape == (2, 3)
    np.testing.assert_allclose(sdr[:, 0], [10 * math.log10(4), 20.0], rtol=0, atol=1e-12)
    assert np.isnan(sdr[:, 1:]).all()


def test_framewise_sdr_perfect_estimate_is_inf_like_museval():
    refs = np.random.default_rng(2).standard_normal((2, 300, 2))
    assert np.isinf(framewise_sdr(refs, refs.copy(), 100, 100)).all()


@pytest.mark.slow
def test_framewise_sdr_matches_museval(museval_run):
    refs, ests, _, raw = museval_run
    fast = framewise_sdr(refs, ests)
    assert fast.shape == raw["SDR"].shape == (4, 4)
    assert np.array_equal(np.isnan(fast), np.isnan(raw["SDR"]))
    assert np.isnan(fast[:, 1]).all() and np.isnan(fast[:, 3]).all()  # the two silent windows
    np.testing.assert_allclose(fast[:, [0, 2]], raw["SDR"][:, [0, 2]], rtol=0, atol=1e-9)


@pytest.mark.slow
def test_full_mode_json_is_museval_output(museval_run):
    _, _, scores, raw = museval_run
    assert [t["name"] for t in scores["targets"]] == list(SOURCES)
    for i, target in enumerate(scores["targets"]):
        assert [f["time"] for f in target["frames"]] == [0.0, 1.0, 2.0, 3.0]
        for metric, values in raw.items():
            got = np.array([f["metrics"][metric] for f in target["frames"]], dtype=float)
            np.testing.assert_allclose(got, np.round(values[i], 5), atol=1e-12)


def test_track_json_is_museval_trackstores():
    """The per-track JSON written without importing museval equals museval's TrackStore's, for
    values on quantisation ties, infinities and NaN."""
    import museval
    import simplejson

    from dannasep.evaluation.scores import museval_track_json

    rng = np.random.default_rng(0)
    values = {m: rng.normal(0, 20, (2, 40)) for m in ("SDR", "ISR", "SIR", "SAR")}
    values["SDR"][0, :6] = [np.inf, -np.inf, np.nan, 1.000005, 2.000015, -3.123455]
    values["SIR"][1, :3] = [0.0, -0.0, 1e-9]
    store = museval.TrackStore(track_name="t", win=1.0, hop=1.0)
    for i, name in enumerate(("drums", "bass")):
        store.add_target(target_name=name, values={m: values[m][i].tolist() for m in values})
    expected = simplejson.loads(store.json, allow_nan=True)
    got = museval_track_json(("drums", "bass"), values)
    # NaN != NaN: compare the JSON texts
    assert simplejson.dumps(got, allow_nan=True) == simplejson.dumps(expected, allow_nan=True)
    assert got["museval_version"] == expected["museval_version"]


def test_sdr_mode_json_matches_fast_sdr_rounded():
    refs, ests = realistic_track(seconds=3.2, seed=3)
    scores = evaluate_track(dict(zip(SOURCES, refs)), dict(zip(SOURCES, ests)), mode="sdr")
    fast = framewise_sdr(refs, ests)
    for i, target in enumerate(scores["targets"]):
        sdr = np.array([f["metrics"]["SDR"] for f in target["frames"]], dtype=float)
        np.testing.assert_allclose(sdr, np.round(fast[i], 5), atol=1e-12)
        for metric in ("SIR", "SAR", "ISR"):
            assert all(math.isnan(f["metrics"][metric]) for f in target["frames"])


def test_whole_silent_source_gives_nan_frames_in_both_modes():
    refs, ests = realistic_track(seconds=2.1, seed=4)
    ests[2] = 0
    for mode in ("sdr", "full", "museval"):  # museval would raise; no museval call is made
        scores = evaluate_track(dict(zip(SOURCES, refs)), dict(zip(SOURCES, ests)), mode=mode)
        values = [f["metrics"][m] for t in scores["targets"] for f in t["frames"] for m in f["metrics"]]
        assert len(values) == 4 * 2 * 4 and all(math.isnan(v) for v in values)


# --- nSDR ---------------------------------------------------------------------------------------

def test_nsdr_hand_computed():
    reference = np.array([[3.0, 4.0]])           # energy 25
    estimate = np.array([[3.0, 0.0]])            # error energy 16
    assert nsdr(reference, estimate) == pytest.approx(10 * math.log10((25 + 1e-7) / (16 + 1e-7)), abs=1e-12)
    assert MDX_DELTA == 1e-7
    # silence against silence scores 0 dB (the delta), not NaN
    assert nsdr(np.zeros((5, 2)), np.zeros((5, 2))) == 0.0
    # stacked sources give one value each; a short estimate is zero-padded
    both = nsdr(np.stack([reference, reference]), np.stack([estimate, np.zeros((1, 2))]))
    np.testing.assert_allclose(both, [10 * math.log10((25 + 1e-7) / (16 + 1e-7)), 0.0])
    assert nsdr(np.ones((4, 1)), np.ones((2, 1))) == pytest.approx(10 * math.log10((4 + 1e-7) / (2 + 1e-7)))


# --- JSON files and aggregation through museval's classes ---------------------------------------

def _write_scores(folder, n_tracks=3):
    paths, per_track = [], {}
    for k in range(n_tracks):
        refs, ests = realistic_track(seconds=3.5 + k, seed=10 + k)
        scores = evaluate_track(dict(zip(SOURCES, refs)), dict(zip(SOURCES, ests)), mode="sdr",
                                with_nsdr=True)
        path = folder / "test" / f"Track {k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores))
        paths.append(path)
        per_track[f"Track {k}"] = (scores, nsdr(refs, ests))
    return paths, per_track


def test_json_loads_and_aggregates_like_museval(tmp_path):
    paths, per_track = _write_scores(tmp_path)
    table = aggregate(paths)
    # museval's own directory loader and aggregation on the same files
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path)
    reference = store.agg_frames_tracks_scores().unstack("metric")
    assert list(table.index) == list(SOURCES)
    np.testing.assert_allclose(table["SDR"].to_numpy(), reference.loc[list(SOURCES), "SDR"].to_numpy())
    methods = museval.MethodStore()
    methods.add_eval_dir(tmp_path)
    by_method = methods.agg_frames_tracks_scores().loc[tmp_path.stem].unstack("metric")
    np.testing.assert_allclose(by_method.loc[list(SOURCES), "SDR"].to_numpy(), table["SDR"].to_numpy())
    # independent computation: nanmedian over frames, then median over tracks
    for source in SOURCES:
        medians = []
        for scores, _ in per_track.values():
            target = next(t for t in scores["targets"] if t["name"] == source)
            medians.append(np.nanmedian([f["metrics"]["SDR"] for f in target["frames"]]))
        assert table.loc[source, "SDR"] == pytest.approx(np.median(medians), abs=1e-12)
    assert table[["SIR", "SAR", "ISR"]].isna().all().all()
    assert track_scores(paths).loc[("Track 0", "vocals"), "SDR"] == pytest.approx(
        np.nanmedian([f["metrics"]["SDR"] for f in per_track["Track 0"][0]["targets"][3]["frames"]]))


def test_nsdr_aggregation_is_mean_over_songs(tmp_path):
    paths, per_track = _write_scores(tmp_path, n_tracks=2)
    per_source, overall = aggregate_nsdr(paths)
    values = np.array([v for _, v in per_track.values()])  # [songs, sources]
    np.testing.assert_allclose(per_source[list(SOURCES)].to_numpy(), values.mean(axis=0))
    assert overall == pytest.approx(values.mean(axis=1).mean())


# --- CLI ----------------------------------------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    return evaluate_cli.run(parser.parse_args(argv))


def _write_estimates(folder, reference_folder, sr=SR, gain=0.9):
    folder.mkdir(parents=True)
    for s in SOURCES:
        audio, _ = sf.read(reference_folder / f"{s}.wav", dtype="float32")
        sf.write(folder / f"{s}.wav", audio * gain, sr, subtype="FLOAT")


def test_evaluate_cli_writes_museval_json(musdb_tree, tmp_path):
    track = musdb_tree / "test" / "BKS - Bulldozer"
    _write_estimates(tmp_path / "est", track)
    out = tmp_path / "scores" / "test" / "BKS - Bulldozer.json"
    assert _cli(["--estimates", str(tmp_path / "est"), "--references", str(track), "--out", str(out),
                 "--mode", "sdr", "--nsdr"]) == 0
    scores = json.loads(out.read_text())
    # estimate = 0.9 * reference: SDR = 10 log10(1 / 0.01) = 20 dB in both 1 s frames
    for target in scores["targets"]:
        assert [f["metrics"]["SDR"] for f in target["frames"]] == pytest.approx([20.0, 20.0], abs=1e-4)
        assert target["nSDR"] == pytest.approx(20.0, abs=1e-4)
    assert aggregate([out]).loc["bass", "SDR"] == pytest.approx(20.0, abs=1e-4)
    assert list(out.parent.iterdir()) == [out]  # atomic write left no temporary behind


def test_evaluate_cli_errors_name_the_file(musdb_tree, tmp_path):
    track = musdb_tree / "test" / "BKS - Bulldozer"
    _write_estimates(tmp_path / "est", track)
    (tmp_path / "est" / "vocals.wav").unlink()
    with pytest.raises(DataError, match="vocals.wav"):
        _cli(["--estimates", str(tmp_path / "est"), "--references", str(track),
              "--out", str(tmp_path / "o.json")])
    _write_estimates(tmp_path / "est22k", track, sr=22050)
    with pytest.raises(DataError, match=r"est22k/drums.wav.*22050"):
        _cli(["--estimates", str(tmp_path / "est22k"), "--references", str(track),
              "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


def _rewrite(path: Path, change) -> None:
    audio, sr = sf.read(path, dtype="float32")
    sf.write(path, change(audio), sr, subtype="FLOAT")


@pytest.mark.parametrize("change, words", [
    (lambda a: a[: len(a) // 2], r"samples, the reference has .*truncated"),
    (lambda a: np.full_like(a, np.nan), "NaN or infinite sample"),
    (lambda a: np.where((np.arange(len(a))[:, None] == 10) & (np.arange(2) == 0), np.inf, a),
     "^1 NaN or infinite sample"),
], ids=["truncated", "all-nan", "one-inf"])
def test_bad_estimates_are_refused_naming_the_file(musdb_tree, tmp_path, change, words):
    track = musdb_tree / "test" / "BKS - Bulldozer"
    _write_estimates(tmp_path / "est", track)
    _rewrite(tmp_path / "est" / "other.wav", change)
    with pytest.raises(DataError, match=r"est/other.wav: " + (words[1:] if words[0] == "^" else ".*" + words)):
        _cli(["--estimates", str(tmp_path / "est"), "--references", str(track), "--mode", "sdr",
              "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_stem_mp4_references_read_as_musdb_reads_them(tmp_path):
    import musdb
    import stempeg

    rng = np.random.default_rng(7)
    stems = (rng.standard_normal((5, SR, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "test" / "Some Artist - Song.stem.mp4"
    path.parent.mkdir()
    stempeg.write_stems(str(path), stems, sample_rate=SR, writer=stempeg.StreamsWriter(codec="aac"))
    track = musdb.DB(root=str(tmp_path), subsets="test").tracks[0]
    references = read_references(path)
    for s in SOURCES:
        np.testing.assert_array_equal(references[s], track.targets[s].audio)
    est = tmp_path / "est"
    est.mkdir()
    for i, s in enumerate(SOURCES):
        sf.write(est / f"{s}.wav", stems[i + 1], SR, subtype="FLOAT")
    out = tmp_path / "scores.json"
    # the AAC decoder adds up to a frame (1024 samples) of padding to these references
    with pytest.raises(DataError, match="the reference has"):
        _cli(["--estimates", str(est), "--references", str(path), "--out", str(out), "--mode", "sdr"])
    assert _cli(["--estimates", str(est), "--references", str(path), "--out", str(out), "--mode", "sdr",
                 "--length-tolerance", "1024"]) == 0
    assert len(json.loads(out.read_text())["targets"]) == 4
    with pytest.raises(DataError, match="Missing.stem.mp4"):
        read_references(tmp_path / "Missing.stem.mp4")
