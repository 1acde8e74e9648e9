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
        scores = evaluate_track(dict(zip(SOURCES, refs[name])), blended, mode="full")  # museval
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
