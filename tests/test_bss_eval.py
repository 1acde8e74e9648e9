"""Full BSS Eval v4 (dannasep.evaluation.bss_eval) against museval 0.4.1 itself.

museval is the reference throughout: `museval.evaluate` (what `eval_mus_track` runs: 512-tap
filters, 1 s windows and hop) on the same arrays, or `museval.metrics.bss_eval` with shorter
filters where many framings are tried. The building blocks are checked against museval's own
helpers (`_compute_reference_correlations`, `_reshape_G`, `_compute_projection_filters`) and
against direct numpy sums.

Test signals give every estimate artifacts of its own (noise, filtering), as real estimates
have: an estimate that lies exactly in the span of the delayed references makes museval's SAR
(and SIR) denominators pure rounding noise, a ~300 dB figure no two implementations share;
that case has its own test.
"""

from __future__ import annotations

import argparse
import json
import math

import museval
import numpy as np
import pytest
import yaml
from scipy.signal import lfilter

from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.evaluation import cli as evaluate_cli
from dannasep.evaluation.bss_eval import bss_eval_v4, fast_length
from dannasep.evaluation.bss_filters import correlations, gram_matrix, projection_filters
from dannasep.evaluation.scores import evaluate_track

SR = SAMPLE_RATE
METRICS = ("SDR", "ISR", "SIR", "SAR")


def noisy_track(n_sources: int, n_samples: int, n_channels: int = 2, seed: int = 0):
    """Random references and estimates with every kind of error museval separates: gain and a
    delay (spatial distortion), leakage of the other sources (interference), coloured and white
    noise (artifacts), on every source."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((n_sources, n_samples, n_channels)) * 0.1
    ests = np.empty_like(refs)
    for j in range(n_sources):
        others = refs.sum(axis=0) - refs[j]
        noise = lfilter([1, 0.5], [1, -0.3], rng.standard_normal((n_samples, n_channels)), axis=0)
        ests[j] = (rng.uniform(0.7, 1.1) * np.roll(refs[j], int(rng.integers(0, 30)), axis=0)
                   + rng.uniform(0, 0.2) * others + rng.uniform(0.005, 0.03) * noise)
    return refs, ests


def assert_equal_to_museval(ours, theirs, atol):
    for metric, a, b in zip(METRICS, ours, theirs):
        assert a.shape == b.shape, metric
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{metric}: NaN windows differ"
        assert np.array_equal(np.isposinf(a), np.isposinf(b)), f"{metric}: +inf windows differ"
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=0, atol=atol, err_msg=metric)


# --- building blocks ----------------------------------------------------------------------------

def test_fast_length_is_the_smallest_even_5_smooth_length():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 300)) + [44611, 65536 + 1]:
        want = next(m for m in range(max(n, 2), 4 * n + 4) if m % 2 == 0 and smooth(m))
        assert fast_length(n) == want, n


@pytest.mark.parametrize("fft_size,group", [(16, 1), (16, 3), (64, 2), (4096, 16)])
def test_correlations_are_the_lagged_inner_products(fft_size, group):
    """Several blocks and groups, a partial last block, float32 input: direct sums in numpy."""
    rng = np.random.default_rng(0)
    n, lags = 1003, 8
    refs = rng.standard_normal((2, n, 2)).astype(np.float32)
    ests = rng.standard_normal((2, n, 2))
    x = refs.transpose(0, 2, 1).reshape(4, n).astype(np.float64)
    y = ests.transpose(0, 2, 1).reshape(4, n)

    def lagged(a, b):  # sum_n a[n - k] b[n]
        return np.array([np.dot(a[: n - k], b[k:]) for k in range(lags)])

    refs_refs, refs_ests = correlations(refs, ests, lags, "cpu", fft_size=fft_size, group=group)
    np.testing.assert_allclose(refs_refs.numpy(), [[lagged(a, b) for b in x] for a in x], atol=1e-11)
    np.testing.assert_allclose(refs_ests.numpy(), [[lagged(a, b) for b in y] for a in x], atol=1e-11)


def test_gram_matrix_and_filters_are_museval_s():
    refs, ests = noisy_track(3, 3000, seed=1)
    lags = 16
    g, sf = museval.metrics._compute_reference_correlations(refs, lags)
    refs_refs, _ = correlations(refs, ests, lags, "cpu", fft_size=256)
    np.testing.assert_allclose(gram_matrix(refs_refs).numpy(), museval.metrics._reshape_G(g),
                               rtol=0, atol=1e-12 * np.abs(g).max())
    all_sources, own_source = projection_filters(refs, ests, lags, "cpu")
    for j in range(3):
        c_all = museval.metrics._compute_projection_filters(g, sf, ests[j])
        c_own = museval.metrics._compute_projection_filters(g[j, j], sf[j], ests[j])
        np.testing.assert_allclose(all_sources[..., j, :].numpy(), c_all, atol=1e-10)
        np.testing.assert_allclose(own_source[j].numpy(), c_own, atol=1e-10)


# --- the metrics against museval ----------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_setting():
    """museval.evaluate with its defaults (512 taps, 1 s windows and hop) on 4 stereo sources of
    4.3 s: a silent reference window, an anti-phase (museval-silent) estimate window, an estimate
    shorter than the references (museval zero-pads it), a partial last window (dropped)."""
    refs, ests = noisy_track(4, int(4.3 * SR), seed=2)
    refs[1, SR:2 * SR] = 0
    ests[3, 3 * SR:4 * SR, 1] = -ests[3, 3 * SR:4 * SR, 0]
    ests = ests[:, :-1000]
    return refs, ests, museval.evaluate(refs, ests, win=SR, hop=SR)


@pytest.mark.slow
def test_equals_museval_with_the_paper_setting(paper_setting):
    refs, ests, theirs = paper_setting
    ours = bss_eval_v4(refs, ests, win=SR, hop=SR, device="cpu")
    assert theirs[0].shape == (4, 4)
    assert np.isnan(theirs[0][:, [1, 3]]).all() and not np.isnan(theirs[0][:, [0, 2]]).any()
    assert_equal_to_museval(ours, theirs, atol=1e-9)  # measured: ~1e-13 dB


@pytest.mark.parametrize("n_sources,n_samples,n_channels,win,hop", [
    (3, 2000, 2, 500, 500),     # museval's non-overlapping windows, a partial window dropped
    (2, 2100, 2, 600, 300),     # overlapping windows
    (2, 2100, 1, 400, 700),     # gaps between windows, mono
    (3, 900, 2, 1000, 1000),    # one window over the whole signal (win >= length)
    (1, 1500, 3, 500, 500),     # one source, three channels: no interference, SIR = +inf
])
def test_framings_equal_museval(n_sources, n_samples, n_channels, win, hop):
    """museval.metrics.bss_eval as museval.evaluate calls it, with 24-tap filters for speed."""
    refs, ests = noisy_track(n_sources, n_samples, n_channels, seed=n_samples + win)
    refs[0, 700:1200] = 0  # silent in some framings' windows
    theirs = museval.metrics.bss_eval(refs, ests, window=win, hop=hop, filters_len=24,
                                      compute_permutation=False, framewise_filters=False,
                                      bsseval_sources_version=False)[:4]
    ours = bss_eval_v4(refs, ests, win=win, hop=hop, filters_len=24, device="cpu", windows_per_block=2)
    assert_equal_to_museval(ours, theirs, atol=1e-9)


def test_mono_sources_take_museval_s_own_solve(monkeypatch):
    """Identical left and right channels (mono stems, common in MUSDB18) make G singular: the
    Cholesky factorisation fails and museval's LU (np.linalg.solve) takes over; the windowed
    projections are unaffected by G's null space (it cancels exactly in every window)."""
    from dannasep.evaluation import bss_filters

    calls = []
    museval_solve = bss_filters._museval_solve
    monkeypatch.setattr(bss_filters, "_museval_solve",
                        lambda m, r: calls.append(m.shape) or museval_solve(m, r))
    refs, ests = noisy_track(3, 4000, seed=11)
    refs[:, :, 1] = refs[:, :, 0]
    ests[0, :, 1] = ests[0, :, 0]
    theirs = museval.metrics.bss_eval(refs, ests, window=1000, hop=1000, filters_len=24)[:4]
    ours = bss_eval_v4(refs, ests, win=1000, hop=1000, filters_len=24, device="cpu")
    assert calls == [(144, 144), (48, 48), (48, 48), (48, 48)]  # all sources, then each one
    assert_equal_to_museval(ours, theirs, atol=1e-9)


def test_estimate_in_the_span_of_the_references():
    """est = 0.8 ref: museval's SIR and SAR denominators are rounding noise (~300 dB); both
    implementations must call it far above any real figure. SDR and ISR stay exact."""
    refs, _ = noisy_track(2, 3000, seed=5)
    ests = 0.8 * refs
    theirs = museval.metrics.bss_eval(refs, ests, window=1000, hop=1000, filters_len=16)[:4]
    ours = bss_eval_v4(refs, ests, win=1000, hop=1000, filters_len=16, device="cpu")
    for k in (0, 1):  # SDR = ISR = 20 log10(1 / 0.2)
        np.testing.assert_allclose(ours[k], 20 * math.log10(5), atol=1e-9)
        np.testing.assert_allclose(theirs[k], 20 * math.log10(5), atol=1e-9)
    for k in (2, 3):
        assert (theirs[k] > 200).all() and (ours[k] > 200).all()


def test_silent_sources_and_bad_shapes():
    refs, ests = noisy_track(2, 3000, seed=6)
    ests[1] = 0
    with pytest.raises(ValueError, match="silent"):
        museval.evaluate(refs, ests, win=1000, hop=1000)
    # museval refuses the track; its per-window rule makes every window NaN, and so do we
    assert all(np.isnan(m).all() and m.shape == (2, 3) for m in bss_eval_v4(refs, ests, 1000, 1000))
    with pytest.raises(ValueError, match="shape mismatch"):
        bss_eval_v4(refs, ests[:1], 1000, 1000)
    with pytest.raises(ValueError, match="sources, samples, channels"):
        bss_eval_v4(refs[0], ests[0], 1000, 1000)


def test_full_mode_json_equals_museval_mode():
    """evaluate_track: "full" (ours) and "museval" write the same quantised JSON (2 sources:
    museval's 2048-row system stays quick)."""
    refs, ests = noisy_track(2, int(2.5 * SR), seed=7)
    names = SOURCES[:2]
    scores = {mode: evaluate_track(dict(zip(names, refs)), dict(zip(names, ests)), mode=mode)
              for mode in ("full", "museval")}
    ours = bss_eval_v4(refs, ests, device="cpu")
    for i, (a, b) in enumerate(zip(scores["full"]["targets"], scores["museval"]["targets"])):
        assert a["name"] == b["name"] == names[i]
        for m_index, metric in enumerate(METRICS):
            got = np.array([f["metrics"][metric] for f in a["frames"]], dtype=float)
            want = np.array([f["metrics"][metric] for f in b["frames"]], dtype=float)
            assert len(got) == 2
            np.testing.assert_allclose(got, np.round(ours[m_index][i], 5), atol=1e-12)
            np.testing.assert_allclose(got, want, atol=1.1e-5)  # one quantisation step at most


def test_evaluate_cli_full_mode(musdb_tree, tmp_path):
    import soundfile as sf

    track = musdb_tree / "test" / "BKS - Bulldozer"
    est = tmp_path / "est"
    est.mkdir()
    rng = np.random.default_rng(8)
    for s in SOURCES:
        audio, _ = sf.read(track / f"{s}.wav", dtype="float32")
        sf.write(est / f"{s}.wav", 0.9 * audio + 0.01 * rng.standard_normal(audio.shape), SR,
                 subtype="FLOAT")
    out = tmp_path / "scores.json"
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    assert evaluate_cli.run(parser.parse_args(["--estimates", str(est), "--references", str(track),
                                               "--out", str(out), "--threads", "2"])) == 0
    scores = json.loads(out.read_text())
    assert scores["provenance"]["mode"] == "full"
    values = {m: [f["metrics"][m] for t in scores["targets"] for f in t["frames"]] for m in METRICS}
    assert all(len(v) == 8 and np.isfinite(v).all() for v in values.values())


# --- estimates of a trained model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_estimates(tmp_path_factory):
    """A small Demucs trained for two epochs on a synthetic MUSDB18-HQ-shaped set, then one test
    track separated by `dannasep separate` (float32 wav files), read as `dannasep evaluate` does."""
    from dannasep.cli import main as cli_main
    from dannasep.config import validate_config
    from dannasep.data.synth import generate_dataset
    from dannasep.evaluation.references import read_estimates, read_references
    from dannasep.evaluation.scores import _stack_track

    tmp = tmp_path_factory.mktemp("trained")
    root = tmp / "synth"
    generate_dataset(root, seed=1, train_tracks=2, valid_tracks=1, test_tracks=1, duration=3.0)
    system = {"arch": "demucs", "loss": "l1",
              "kwargs": {"channels": 4, "depth": 2, "lstm_layers": 1, "decoders": "per_source",
                         "normalize": True},
              "data": {"segment_seconds": 0.5, "samples_per_track": 6},
              "train": {"epochs": 2, "batch_size": 2, "lr": 0.001, "seed": 3, "checkpoint_every": 1,
                        "valid_tracks": 1}}
    cfg = {"dataset": {"kind": "synthetic", "root": str(root)}, "data": {"segment_seconds": 0.5},
           "models": {"demucs": system}}
    validate_config(cfg)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", "--config", str(tmp / "cfg.yaml"), "--system", "demucs",
                     "--out-dir", str(tmp / "ckpt"), "--pointer", str(tmp / "demucs.json"),
                     "--curve", str(tmp / "curve.csv"), "--no-progress"]) == 0
    track = next((root / "test").iterdir())
    assert cli_main(["separate", "--checkpoint", str(tmp / "demucs.json"),
                     "--mixture", str(track / "mixture.wav"), "--out-dir", str(tmp / "est")]) == 0
    _, refs, ests = _stack_track(read_references(track), read_estimates(tmp / "est"))
    return refs, ests


@pytest.mark.slow
def test_equals_museval_on_trained_model_estimates(trained_estimates):
    """museval.evaluate vs ours on the float32 files of a trained separator.

    The synthetic stems make museval's normal equations ill-conditioned (each stem's right
    channel is a delayed, scaled copy of its left, up to int16 rounding; condition ~1e10), and
    the whole-signal filters are applied to windowed references, where that near-null space
    shows. museval's own figures then move by ~1e-6 dB with the rounding of its FFTs: run with
    numpy.fft in place of scipy.fftpack it changed SIR by up to 1.3e-6 dB on this track, while
    ours differed from it by up to 8.6e-7 dB (measured 2026-11-30). A tolerance below museval's
    own spread would test rounding luck, hence 1e-5 dB here, the issue's tolerance for float32
    estimate files; on well-conditioned signals the agreement is ~1e-13 dB
    (test_equals_museval_with_the_paper_setting).
    """
    refs, ests = trained_estimates
    assert refs.dtype == ests.dtype == np.float32
    theirs = museval.evaluate(refs, ests, win=SR, hop=SR)
    ours = bss_eval_v4(refs, ests, win=SR, hop=SR, device="cpu")
    assert_equal_to_museval(ours, theirs, atol=1e-5)
    ours64 = bss_eval_v4(refs.astype(np.float64), ests.astype(np.float64), device="cpu")
    for a, b in zip(ours, ours64):
        np.testing.assert_array_equal(a, b)


# --- GPU ----------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_equals_museval_and_cpu(paper_setting):
    refs, ests, theirs = paper_setting
    ours = bss_eval_v4(refs, ests, device="cuda")
    assert_equal_to_museval(ours, theirs, atol=1e-9)
    cpu = bss_eval_v4(refs, ests, device="cpu")
    assert_equal_to_museval(ours, cpu, atol=1e-9)
