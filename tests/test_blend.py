"""Blend-weight search: known optimum, brute force over the grid, museval on the blended files;
the per-track statistics against the per-window loop; branch and bound against the grid."""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import yaml

from dannasep.blend import cli as blend
from dannasep.blend.search import search_weights, simplex_grid
from dannasep.blend.stats import gram_stats
from dannasep.blend.weights import PAPER_WEIGHTS, blend_estimates, load_weights
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.errors import ConfigError, DataError
from dannasep.evaluation.sdr import framewise_sdr

MODELS = ("xumx", "unet", "demucs")
WIN = 4410  # 0.1 s windows keep the in-memory tests fast; the CLI test uses museval's 1 s


def synthetic_track(optimum: np.ndarray, n_windows: int, win: int, seed: int):
    """References and per-model estimates whose best blend is known.

    Model m's error lives only on samples with index % M == m, so the errors of different models
    are exactly orthogonal; in every window its energy is k_w / optimum[m, s]. The error energy of
    a blend is then k_w * sum_m a_m^2 / optimum[m, s], smallest at a = optimum[:, s] in EVERY
    window, hence also for the medians. A zero optimum weight gets a 1e4 times larger error.
    Returns refs [S, n, 2] and estimates [M, S, n, 2] (float32, like audio read from files).
    """
    rng = np.random.default_rng(seed)
    n_models, n_sources = optimum.shape
    n = n_windows * win + win // 3  # plus a partial window, which museval drops
    refs = rng.standard_normal((n_sources, n, 2)) * 0.1
    ests = np.empty((n_models, n_sources, n, 2))
    owner = np.arange(n) % n_models
    windows = [slice(w * win, min((w + 1) * win, n)) for w in range(n_windows + 1)]
    for s in range(n_sources):
        scale = [rng.uniform(0.02, 0.3) * np.sum(refs[s, sl] ** 2) for sl in windows]
        for m in range(n_models):
            noise = rng.standard_normal((n, 2)) * (owner == m)[:, None]
            for sl, k in zip(windows, scale):
                target = k / optimum[m, s] if optimum[m, s] > 0 else 1e4 * k
                noise[sl] *= math.sqrt(target / np.sum(noise[sl] ** 2))
            ests[m, s] = refs[s] + noise
    return refs.astype(np.float32), ests.astype(np.float32)


def as_dicts(refs, ests, models=MODELS):
    return (dict(zip(SOURCES, refs)),
            {m: dict(zip(SOURCES, ests[i])) for i, m in enumerate(models)})


def test_simplex_grid():
    grid = simplex_grid(3, 0.01)
    assert grid.shape == (math.comb(102, 2), 3) == (5151, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, atol=1e-12)
    assert (grid >= 0).all() and len(np.unique(np.round(grid * 100).astype(int), axis=0)) == 5151
    assert simplex_grid(2, 0.5).tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    with pytest.raises(ConfigError, match="0.03"):
        simplex_grid(3, 0.03)


def test_gram_stats_are_window_inner_products():
    optimum = np.full((3, 4), 1 / 3)
    refs, ests = synthetic_track(optimum, n_windows=2, win=WIN, seed=0)
    st = gram_stats(*as_dicts(refs, ests), win=WIN, hop=WIN)
    assert st.diff_gram.shape == (4, 2, 3, 3) and st.est_silent.shape == (3, 4, 2)
    d = (ests[:, 1, WIN:2 * WIN].astype(np.float64) - refs[1, WIN:2 * WIN]).reshape(3, -1)
    np.testing.assert_allclose(st.diff_gram[1, 1], d @ d.T, rtol=1e-12)
    energy = np.sum(refs[1, WIN:2 * WIN].astype(np.float64) ** 2)
    assert st.ref_energy[1, 1] == pytest.approx(energy, rel=1e-12)


def test_search_finds_known_optimum():
    optimum = np.array([[0.2, 0.1, 0.3, 0.2],
                        [0.2, 0.2, 0.5, 0.4],
                        [0.6, 0.7, 0.2, 0.4]])
    stats = [gram_stats(*as_dicts(*synthetic_track(optimum, 7, WIN, seed)), win=WIN, hop=WIN, name=str(seed))
             for seed in range(3)]
    result = search_weights(stats, step=0.01)
    np.testing.assert_allclose(result.weights, optimum, atol=1e-12)
    assert result.grid.scores.shape == (4, 5151)
    np.testing.assert_allclose(result.predicted, np.nanmax(result.grid.scores, axis=1))


def _brute_force_grid(tracks, weights, points, source):
    """Median over tracks of museval-rule framewise SDR of actually blended audio."""
    scores = []
    for point in points:
        w = weights.copy()
        w[:, source] = point
        medians = []
        for refs, ests in tracks:
            blended = blend_estimates(as_dicts(refs, ests)[1], w)
            sdr = framewise_sdr(refs, np.stack([blended[s] for s in SOURCES]), WIN, WIN)
            medians.append(np.nan if np.isnan(sdr[source]).all() else np.nanmedian(sdr[source]))
        scores.append(np.nan if np.isnan(medians).all() else np.nanmedian(medians))
    return np.array(scores)


def test_grid_equals_brute_force_with_coupled_silent_windows():
    # bass is best from demucs alone; demucs' bass is silent in window 3 of track 0, so in the
    # final blend that window is NaN for every source (museval's rule), but not for blends that
    # also use xumx or unet for bass.
    optimum = np.array([[0.3, 0.0, 0.2, 0.5], [0.3, 0.0, 0.4, 0.1], [0.4, 1.0, 0.4, 0.4]])
    tracks = [synthetic_track(optimum, 6, WIN, seed) for seed in (5, 6)]
    tracks[0][1][2, 1, 3 * WIN:4 * WIN] = 0          # demucs bass silent
    tracks[0][1][:, 0, WIN:2 * WIN, 0] = 0           # every drums estimate silent on the left...
    tracks[0][0][2, 2 * WIN:3 * WIN] = 0             # a silent reference window (other)
    tracks[1][1][0, 3, 4 * WIN:5 * WIN, 1] = -tracks[1][1][0, 3, 4 * WIN:5 * WIN, 0]  # anti-phase xumx vocals
    stats = [gram_stats(*as_dicts(r, e), win=WIN, hop=WIN) for r, e in tracks]
    result = search_weights(stats, step=0.1)
    np.testing.assert_allclose(result.weights[:, 1], [0, 0, 1])
    for source in range(4):
        brute = _brute_force_grid(tracks, result.weights, result.grid.points, source)
        assert np.array_equal(np.isnan(brute), np.isnan(result.grid.scores[source]))
        np.testing.assert_allclose(result.grid.scores[source], brute, rtol=0, atol=1e-9, equal_nan=True)
    # the coupling is real: without demucs-only bass, window 3 of track 0 would count
    st = stats[0]
    assert st.est_silent[2, 1, 3] and not st.est_silent[:2, 1, 3].any()


def test_blend_estimates_weighted_sum_and_padding():
    a, b = np.ones((4, 2)), np.full((3, 2), 2.0)
    ests = {"m1": {"drums": a, "bass": a}, "m2": {"drums": b, "bass": b}}
    out = blend_estimates(ests, {"m1": {"drums": 0.25, "bass": 1.0}, "m2": {"drums": 0.75, "bass": 0.0}},
                          sources=("drums", "bass"))
    np.testing.assert_allclose(out["drums"], [[1.75] * 2] * 3 + [[0.25] * 2])
    np.testing.assert_allclose(out["bass"], a)


def test_load_weights(tmp_path):
    models, sources, w = load_weights("paper")
    assert models == list(MODELS) and sources == list(SOURCES)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    assert w[MODELS.index("unet"), SOURCES.index("bass")] == 0.17 == PAPER_WEIGHTS["unet"]["bass"]
    bad = tmp_path / "w.yaml"
    bad.write_text(yaml.safe_dump({"weights": {"a": {"drums": 0.5}, "b": {"drums": 0.2}}}))
    with pytest.raises(ConfigError, match="sum to 1"):
        load_weights(bad)


# --- CLI on files, checked with museval ---------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser()
    blend.add_arguments(parser)
    return blend.run(parser.parse_args(argv))


def _write_tree(root, optimum, names):
    """references/<subset>/<track>/<source>.wav and separations/<model>/test/<track>/<source>.wav"""
    tracks = {}
    for k, name in enumerate(names):
        refs, ests = synthetic_track(optimum, 3, SAMPLE_RATE, seed=20 + k)
        if k == 0:
            ests[2, 1, SAMPLE_RATE:2 * SAMPLE_RATE] = 0  # demucs bass silent in second 1
        (root / "refs" / "test" / name).mkdir(parents=True)
        for i, s in enumerate(SOURCES):
            sf.write(root / "refs" / "test" / name / f"{s}.wav", refs[i], SAMPLE_RATE, subtype="FLOAT")
            for m, model in enumerate(MODELS):
                folder = root / "seps" / model / "test" / name
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{s}.wav", ests[m, i], SAMPLE_RATE, subtype="FLOAT")
        tracks[name] = refs
    return tracks


@pytest.mark.slow
def test_cli_search_then_apply_matches_museval(tmp_path):
    from dannasep.io import write_json
    from dannasep.evaluation.scores import aggregate, evaluate_track

    optimum = np.array([[0.3, 0.0, 0.2, 0.5], [0.3, 0.0, 0.4, 0.1], [0.4, 1.0, 0.4, 0.4]])
    names = ["Track A", "Track B"]
    refs = _write_tree(tmp_path, optimum, names)
    out = tmp_path / "blend" / "weights.yaml"
    assert _cli(["--models", *MODELS, "--separations", str(tmp_path / "seps"), "--references",
                 str(tmp_path / "refs"), "--subset", "test", "--step", "0.1", "--out", str(out),
                 "--grid-out", str(tmp_path / "blend" / "grid.npz")]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["tracks"] == names and doc["models"] == list(MODELS)
    np.testing.assert_allclose([[doc["weights"][m][s] for s in SOURCES] for m in MODELS], optimum)
    grid = np.load(tmp_path / "blend" / "grid.npz")
    assert grid["scores"].shape == (4, 66)

    assert _cli(["apply", "--weights", str(out), "--separations", str(tmp_path / "seps"),
                 "--system", "dannasep", "--subset", "test", "--track", *names]) == 0
    score_files = []
    for name in names:
        folder = tmp_path / "seps" / "dannasep" / "test" / name
        blended = {s: sf.read(folder / f"{s}.wav")[0] for s in SOURCES}
        scores = evaluate_track(dict(zip(SOURCES, refs[name])), blended, mode="museval")
        path = tmp_path / "scores" / f"{name}.json"
        write_json(path, scores)
        score_files.append(path)
    museval_median = aggregate(score_files)["SDR"].to_numpy()
    predicted = np.array([doc["predicted_sdr"][s] for s in SOURCES])
    # museval's JSON keeps 1e-5 dB; the float32 blend file moves the SDR by < 1e-5 dB
    np.testing.assert_allclose(museval_median, predicted, atol=3e-5)


def test_apply_reports_missing_estimate(tmp_path):
    with pytest.raises(DataError, match=r"xumx/test/Nope/drums.wav"):
        _cli(["apply", "--weights", "paper", "--separations", str(tmp_path), "--track", "Nope"])
    with pytest.raises(Exception, match="--models"):
        _cli(["--separations", str(tmp_path)])


def test_kernel_median_equals_numpy():
    """The compiled median (quickselect) against np.nanmedian: NaN, +inf, ties, all-NaN."""
    from dannasep.blend.kernels import _nanmedian

    rng = np.random.default_rng(1)
    for n in list(range(1, 30)) + [240, 241]:
        for rep in range(12):
            x = rng.standard_normal(n)
            if rep % 3 == 0:
                x = np.round(x, 1)                       # ties
            if rep % 4 == 1:
                x[rng.random(n) < 0.3] = np.nan
            if rep % 4 == 2:
                x[rng.random(n) < 0.2] = np.inf
            if rep == 11:
                x[:] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expect = np.nanmedian(x)
            got = _nanmedian(x.copy())
            assert (np.isnan(expect) and np.isnan(got)) or got == expect, (n, rep, got, expect)


# --- per-track statistics --------------------------------------------------------------------------

def _loop_stats(refs, ests, win, hop):
    """The statistics as the first implementation computed them: one window at a time
    (museval's frames, float64 differences, channel sums in the arrays' dtype)."""
    from dannasep.evaluation.sdr import frame_slices, pad_or_cut

    n_models, n_sources = ests.shape[:2]
    slices = frame_slices(refs.shape[1], win, hop)
    gram = np.empty((n_sources, len(slices), n_models, n_models))
    energy = np.empty((n_sources, len(slices)))
    ref_silent = np.empty((n_sources, len(slices)), dtype=bool)
    est_silent = np.empty((n_models, n_sources, len(slices)), dtype=bool)
    for s in range(n_sources):
        e = pad_or_cut(ests[:, s], refs.shape[1])
        for t, sl in enumerate(slices):
            r = refs[s, sl].astype(np.float64)
            d = (e[:, sl] - r).reshape(n_models, -1)
            gram[s, t] = d @ d.T
            energy[s, t] = np.sum(r * r)
            ref_silent[s, t] = np.all(refs[s, sl, 0] + refs[s, sl, 1] == 0)
            est_silent[:, s, t] = np.all(e[:, sl, 0] + e[:, sl, 1] == 0, axis=1)
    return gram, energy, ref_silent, est_silent


@pytest.mark.parametrize("n, win, hop", [(7 * WIN + 123, WIN, WIN),      # partial last window
                                         (WIN - 10, WIN, WIN),           # one short window
                                         (5 * WIN, WIN, WIN // 2)])       # overlapping windows
def test_gram_stats_equal_the_window_loop(n, win, hop):
    rng = np.random.default_rng(n)
    refs = (rng.standard_normal((4, n, 2)) * 0.1).astype(np.float32)
    ests = (refs[None] + rng.standard_normal((3, 4, n, 2)) * 0.05).astype(np.float32)
    refs[1, :win] = 0                                   # a silent reference window
    ests[0, 2, win:2 * win, 1] = -ests[0, 2, win:2 * win, 0]   # anti-phase: silent to museval
    ests = ests[:, :, :n - 7]                           # estimates shorter than the references
    st = gram_stats(*as_dicts(refs, ests), win=win, hop=hop)
    gram, energy, ref_silent, est_silent = _loop_stats(refs, ests, win, hop)
    np.testing.assert_allclose(st.diff_gram, gram, rtol=1e-12, atol=1e-12 * np.abs(gram).max())
    np.testing.assert_allclose(st.ref_energy, energy, rtol=1e-12)
    assert np.array_equal(st.ref_silent, ref_silent) and np.array_equal(st.est_silent, est_silent)
    assert st.ref_silent.any() and st.est_silent.any() or n < win


def test_streamed_statistics_equal_gram_stats(tmp_path, monkeypatch):
    """`read_track_stats` reads blocks of windows: several blocks, a short and a long estimate,
    a silent window and a track shorter than one window give what gram_stats gives."""
    from dannasep.blend import stats as stats_module

    monkeypatch.setattr(stats_module, "STREAM_WINDOWS", 2)
    rng = np.random.default_rng(4)
    for name, n in (("long", 5 * WIN + 100), ("short", WIN - 5)):
        refs = (rng.standard_normal((4, n, 2)) * 0.1).astype(np.float32)
        refs[0, WIN:2 * WIN] = 0
        lengths = {"xumx": n - min(WIN + 7, n // 2), "unet": n, "demucs": n + 300}
        (tmp_path / "refs" / "test" / name).mkdir(parents=True)
        for i, source in enumerate(SOURCES):
            sf.write(tmp_path / "refs" / "test" / name / f"{source}.wav", refs[i], SAMPLE_RATE, subtype="FLOAT")
            for model, length in lengths.items():
                folder = tmp_path / "seps" / model / "test" / name
                folder.mkdir(parents=True, exist_ok=True)
                est = refs[i, :min(length, n)] + rng.standard_normal((min(length, n), 2)).astype(np.float32) * 0.05
                est = np.concatenate([est, np.ones((max(length - n, 0), 2), np.float32)])
                sf.write(folder / f"{source}.wav", est, SAMPLE_RATE, subtype="FLOAT")
        streamed = stats_module.read_track_stats(tmp_path / "refs", tmp_path / "seps", "test", name,
                                                 list(MODELS), win=WIN)
        whole = gram_stats(stats_module.WavFolder(tmp_path / "refs" / "test" / name),
                           {m: stats_module.WavFolder(tmp_path / "seps" / m / "test" / name) for m in MODELS},
                           win=WIN, hop=WIN)
        for field in ("diff_gram", "ref_energy", "ref_silent", "est_silent"):
            np.testing.assert_array_equal(getattr(streamed, field), getattr(whole, field))
        assert streamed.ref_energy.shape[1] == (5 if name == "long" else 1)
    assert streamed.provenance["estimates"]["unet"]["files"]["bass.wav"]


def test_stats_file_round_trip_and_bad_file(tmp_path):
    from dannasep.blend.stats import load_stats, save_stats

    refs, ests = synthetic_track(np.full((3, 4), 1 / 3), 3, WIN, seed=2)
    st = gram_stats(*as_dicts(refs, ests), win=WIN, hop=WIN, name="A track")
    st.provenance = {"format": "x", "files": {"a.wav": "00"}}
    save_stats(tmp_path / "a.npz", st)
    back = load_stats(tmp_path / "a.npz")
    assert (back.name, back.models, back.sources, back.provenance) == ("A track", MODELS, SOURCES, st.provenance)
    for field in ("diff_gram", "ref_energy", "ref_silent", "est_silent"):
        assert np.array_equal(getattr(back, field), getattr(st, field))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz: not a blend statistics file.*blend stats"):
        load_stats(tmp_path / "bad.npz")


# --- compiled scoring and branch and bound ----------------------------------------------------------

def _numpy_scores(stats, source, points, supports):
    """The first implementation's scores: one matrix product per track, log10, np.nanmedian."""
    out = []
    for st in stats:
        nan = st.ref_silent.any(axis=0)
        for s, u in enumerate(supports):
            if s != source:
                nan = nan | np.all(st.est_silent[[m for m in range(len(st.models)) if u >> m & 1], s], axis=0)
        quad = (points[:, :, None] * points[:, None, :]).reshape(len(points), -1)
        err = quad @ st.diff_gram[source].reshape(len(nan), -1).T
        with np.errstate(divide="ignore", invalid="ignore"):
            sdr = 10 * np.log10(st.ref_energy[source] / err)
        silent = np.array([np.all(st.est_silent[p > 0, source], axis=0) for p in points])
        sdr[(err <= 0) | nan | silent] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(np.nanmedian(sdr, axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.array(out), axis=0)


def _silent_tracks(optimum, seeds, n_windows=6):
    """Tracks whose silences make the supports matter: model 2's bass silent in a window, every
    drums estimate silent on the left in another, a silent reference, an anti-phase estimate."""
    tracks = [synthetic_track(optimum, n_windows, WIN, seed) for seed in seeds]
    tracks[0][1][2, 1, 3 * WIN:4 * WIN] = 0
    tracks[0][1][:, 0, WIN:2 * WIN, 0] = 0
    tracks[0][0][2, 2 * WIN:3 * WIN] = 0
    tracks[1][1][0, 3, 4 * WIN:5 * WIN, 1] = -tracks[1][1][0, 3, 4 * WIN:5 * WIN, 0]
    return tracks


def test_compiled_scores_equal_numpy():
    from dannasep.blend.search import Problem, SourceView

    optimum = np.array([[0.3, 0.0, 0.2, 0.5], [0.3, 0.0, 0.4, 0.1], [0.4, 1.0, 0.4, 0.4]])
    tracks = _silent_tracks(optimum, (5, 6, 7))
    stats = [gram_stats(*as_dicts(r, e), win=WIN, hop=WIN) for r, e in tracks]
    points = simplex_grid(3, 0.1)
    problem = Problem(stats)
    for source in range(4):
        for supports in ([7, 7, 7, 7], [7, 4, 7, 3]):
            got = SourceView(problem, source, supports).scores(points)[0]
            expect = _numpy_scores(stats, source, points, supports)
            assert np.array_equal(np.isnan(got), np.isnan(expect))
            np.testing.assert_allclose(got, expect, rtol=0, atol=1e-9, equal_nan=True)


def _five_model_stats(n_tracks=4, n_windows=9, seed=0):
    """Five models with correlated errors (a shared part plus each model's own), different
    qualities per track, and silent estimates, so supports and the coupling of sources matter."""
    models = ("a", "b", "c", "d", "e")
    optimum = np.array([[0.1, 0.0, 0.3, 0.2], [0.2, 0.0, 0.1, 0.3], [0.3, 0.5, 0.2, 0.1],
                        [0.2, 0.5, 0.3, 0.1], [0.2, 0.0, 0.1, 0.3]])
    rng = np.random.default_rng(seed)
    stats = []
    for t in range(n_tracks):
        refs, ests = synthetic_track(optimum, n_windows, WIN, seed=seed * 10 + t)
        shared = rng.standard_normal(refs.shape).astype(np.float32) * 0.02
        ests = ests + shared[None] * rng.uniform(0.5, 1.5, size=(5, 1, 1, 1)).astype(np.float32)
        if t == 0:
            ests[2, 1, 2 * WIN:3 * WIN] = 0          # model c's bass silent in window 2
            ests[3, 1, 2 * WIN:3 * WIN] = 0          # and model d's: a c+d bass blend is silent
        if t == 1:
            ests[:, 0, 4 * WIN:5 * WIN, 0] = 0       # every drums estimate silent on the left
            ests[0, 3, WIN:2 * WIN] = 0              # model a's vocals silent
        stats.append(gram_stats(*as_dicts(refs, ests, models), win=WIN, hop=WIN, name=f"t{t}"))
    return stats


def test_branch_and_bound_equals_the_grid_with_five_models():
    stats = _five_model_stats()
    grid = search_weights(stats, step=0.1, method="grid")             # every one of 1001 points
    bnb = search_weights(stats, step=0.1, method="bnb")
    assert grid.method == "grid" and bnb.method == "branch-and-bound"
    np.testing.assert_array_equal(bnb.weights, grid.weights)
    np.testing.assert_allclose(bnb.predicted, grid.predicted, rtol=0, atol=1e-9)
    assert (bnb.certificate == 0).all() and bnb.rounds == grid.rounds
    np.testing.assert_allclose(grid.weights[:, 1], [0, 0, 0.5, 0.5, 0])  # the silent c+d bass blend
    # with the final masks every grid point scores below the result, for every source
    assert np.all(np.nanmax(grid.grid.scores, axis=1) == grid.predicted)


@pytest.mark.slow
def test_branch_and_bound_equals_the_grid_at_step_005():
    stats = _five_model_stats(n_tracks=3, n_windows=7, seed=1)
    grid = search_weights(stats, step=0.05, method="grid")            # 10,626 points
    bnb = search_weights(stats, step=0.05, method="bnb")
    np.testing.assert_array_equal(bnb.weights, grid.weights)
    np.testing.assert_allclose(bnb.predicted, grid.predicted, rtol=0, atol=1e-9)


def test_five_models_equal_museval_rule_brute_force_on_audio():
    """The search's choice for 5 models against scoring every grid point's blended audio with
    museval's framewise rule (dannasep.evaluation.sdr, itself tested against museval)."""
    models = ("a", "b", "c", "d", "e")
    optimum = np.array([[0.2, 0.0, 0.5, 0.2], [0.0, 0.0, 0.5, 0.2], [0.4, 1.0, 0.0, 0.2],
                        [0.2, 0.0, 0.0, 0.2], [0.2, 0.0, 0.0, 0.2]])
    tracks = [synthetic_track(optimum, 4, WIN, seed) for seed in (8, 9)]
    tracks[0][1][2, 1, WIN:2 * WIN] = 0                 # the bass optimum is silent there
    stats = [gram_stats(*as_dicts(r, e, models), win=WIN, hop=WIN) for r, e in tracks]
    result = search_weights(stats, step=0.25, method="bnb")
    points = simplex_grid(5, 0.25)
    for source in range(4):
        scores = []
        for point in points:
            w = result.weights.copy()
            w[:, source] = point
            medians = []
            for refs, ests in tracks:
                blended = blend_estimates(as_dicts(refs, ests, models)[1], w)
                sdr = framewise_sdr(refs, np.stack([blended[s] for s in SOURCES]), WIN, WIN)[source]
                medians.append(np.nan if np.isnan(sdr).all() else np.nanmedian(sdr))
            scores.append(np.nan if np.isnan(medians).all() else np.nanmedian(medians))
        best = int(np.nanargmax(scores))
        np.testing.assert_array_equal(result.weights[:, source], points[best])
        assert result.predicted[source] == pytest.approx(scores[best], abs=1e-9)


def test_bound_holds_over_every_point_of_random_boxes():
    from dannasep.blend.bnb import BranchAndBound, points_in, tighten
    from dannasep.blend.search import Problem, SourceView

    stats = _five_model_stats(n_tracks=3, n_windows=6)
    problem = Problem(stats)
    rng = np.random.default_rng(3)
    for source, supports in ((1, [31] * 4), (3, [31, 12, 31, 30])):
        bb = BranchAndBound(SourceView(problem, source, supports), n_steps=20)
        assert bb.view.silence.shape[0] > 0               # the silent-window states are exercised
        lo = rng.integers(0, 8, size=(40, 5))
        hi = lo + rng.integers(0, 10, size=(40, 5))
        lo, hi = tighten(lo, hi, 20)
        bounds = bb.bound(lo, hi)
        grid = np.rint(simplex_grid(5, 0.05) * 20).astype(int)
        for box in range(len(lo)):
            inside = grid[np.all((grid >= lo[box]) & (grid <= hi[box]), axis=1)]
            points = points_in(lo[box], hi[box], 20)
            assert sorted(map(tuple, points)) == sorted(map(tuple, inside)) and len(points)
            scores = bb.score(points)
            if not np.all(np.isnan(scores)):
                assert bounds[box] >= np.nanmax(scores) - 1e-9
        assert len(lo) > 20


def test_branch_and_bound_budget_certifies_the_gap():
    stats = _five_model_stats()
    exact = search_weights(stats, step=0.1, method="grid")
    cut = search_weights(stats, step=0.1, method="bnb", max_boxes=1)
    assert (cut.certificate >= 0).all()
    assert np.all(cut.predicted <= exact.predicted + 1e-12)
    assert np.all(exact.predicted <= cut.predicted + cut.certificate + 1e-9)


def test_weights_figure_with_five_models(tmp_path):
    from dannasep.report import figures

    result = search_weights(_five_model_stats(), step=0.1, method="bnb")
    grid = {"points": result.grid.points, "scores": result.grid.scores, "weights": result.weights,
            "models": np.array(["a", "b", "c", "d", "e"]), "sources": np.array(SOURCES)}
    paths = figures.plot_blend_simplex(grid, tmp_path / "five")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_cli_stats_then_search_equals_search_from_wavs(tmp_path):
    from dannasep.io import sha256_file

    optimum = np.array([[0.3, 0.0, 0.2, 0.5], [0.3, 0.0, 0.4, 0.1], [0.4, 1.0, 0.4, 0.4]])
    names = ["Track A", "Track B"]
    _write_tree(tmp_path, optimum, names)
    common = ["--models", *MODELS, "--separations", str(tmp_path / "seps"), "--references",
              str(tmp_path / "refs"), "--subset", "test"]
    assert _cli(["stats", *common, "--tracks", *names, "--out-dir", str(tmp_path / "stats")]) == 0
    files = [tmp_path / "stats" / f"{n}.npz" for n in names]
    assert _cli(["search", "--models", *MODELS, "--stats", *map(str, files), "--step", "0.1",
                 "--out", str(tmp_path / "from_stats.yaml"), "--threads", "1"]) == 0
    assert _cli([*common, "--step", "0.1", "--out", str(tmp_path / "from_wavs.yaml")]) == 0
    from_stats = yaml.safe_load((tmp_path / "from_stats.yaml").read_text())
    from_wavs = yaml.safe_load((tmp_path / "from_wavs.yaml").read_text())
    for key in ("models", "sources", "weights", "predicted_sdr", "tracks", "method"):
        assert from_stats[key] == from_wavs[key]
    assert from_stats["certificate_db"] == {s: 0.0 for s in SOURCES}
    # provenance: the search names each statistics file's hash, each file every wav's hash
    assert from_stats["statistics"]["Track A"]["sha256"] == sha256_file(files[0])
    from dannasep.blend.stats import load_stats

    # the streamed statistics equal gram_stats on the whole arrays
    from dannasep.blend.stats import WavFolder

    streamed = load_stats(files[0])
    whole = gram_stats(WavFolder(tmp_path / "refs" / "test" / "Track A"),
                       {m: WavFolder(tmp_path / "seps" / m / "test" / "Track A") for m in MODELS})
    for field in ("diff_gram", "ref_energy", "ref_silent", "est_silent"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(whole, field))
    assert streamed.est_silent[2, 1, 1]                 # demucs' silent bass second survived
    record = load_stats(files[1]).provenance
    wav = tmp_path / "seps" / "unet" / "test" / "Track B" / "vocals.wav"
    assert record["estimates"]["unet"]["files"]["vocals.wav"] == sha256_file(wav)
    ref = tmp_path / "refs" / "test" / "Track B" / "bass.wav"
    assert record["references"]["files"][str(ref)] == sha256_file(ref)
    # statistics of other models are refused, naming the file and the fix
    with pytest.raises(DataError, match=r"Track A\.npz: statistics of models .* blend stats"):
        _cli(["--models", "xumx", "demucs", "--stats", str(files[0]), "--out", str(tmp_path / "x.yaml")])
