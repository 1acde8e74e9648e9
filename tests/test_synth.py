"""The synthetic MUSDB18-HQ generator: names and split, layout, exactness, determinism, music.

Musical properties are measured from the written files with plain numpy (spectra, crest
factors, an autocorrelation pitch tracker), never read back from the generator's plan.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import musdb
import numpy as np
import pytest
import soundfile as sf
import yaml
from numpy.lib.stride_tricks import sliding_window_view

from dannasep import cli
from dannasep.constants import SAMPLE_RATE, SOURCES, STEMS
from dannasep.data import synth
from dannasep.data.tracks import TEST_TRACKS, TRAIN_SPLIT_TRACKS, TRAIN_TRACKS, VALID_TRACKS
from dannasep.errors import ConfigError

from conftest import TEST_NAMES, TRAIN_NAMES, VALID_NAMES

SR = SAMPLE_RATE
# Long enough that every track has a whole vocal rest (intro <= 1.2 s, first phrase <= 3.5 s).
SECONDS = 6.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "musdb18hq"
    synth.generate_dataset(root, seed=7, train_tracks=2, valid_tracks=2, test_tracks=2,
                           duration=SECONDS)
    return root


def all_tracks(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/"))


def read_int16(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def stems_of(folder: Path) -> dict[str, np.ndarray]:
    """Source stems as float mono (mean of the channels)."""
    return {s: read_int16(folder / f"{s}.wav").astype(float).mean(axis=1) for s in SOURCES}


# ------------------------------------------------------------------------------ track names


def test_track_lists_have_musdb18_sizes_and_split():
    sizes = len(TRAIN_TRACKS), len(TEST_TRACKS), len(VALID_TRACKS), len(TRAIN_SPLIT_TRACKS)
    assert sizes == (100, 50, 14, 86)
    assert len(set(TRAIN_TRACKS + TEST_TRACKS)) == 150
    assert set(VALID_TRACKS) <= set(TRAIN_TRACKS)
    assert set(TRAIN_SPLIT_TRACKS) == set(TRAIN_TRACKS) - set(VALID_TRACKS)
    assert TRAIN_TRACKS == tuple(sorted(TRAIN_TRACKS)) and TEST_TRACKS == tuple(sorted(TEST_TRACKS))
    # Folder spellings that differ from the sigsep track list or from English.
    assert "Al James - Schoolboy Facination" in TEST_TRACKS
    assert "Jokers, Jacks & Kings - Sea Of Leaves" in TRAIN_TRACKS
    assert "Patrick Talbot - Set Me Free" in TRAIN_TRACKS
    # The names the shared fixtures use are real and in the right subsets.
    assert set(TRAIN_NAMES + VALID_NAMES) <= set(TRAIN_TRACKS)
    assert set(TEST_NAMES) <= set(TEST_TRACKS)
    assert set(VALID_NAMES) <= set(VALID_TRACKS)


def test_validation_tracks_equal_musdb_package_config():
    setup = yaml.safe_load((Path(musdb.__path__[0]) / "configs" / "mus.yaml").read_text())
    assert VALID_TRACKS == tuple(setup["validation_tracks"])


# ------------------------------------------------------------------------------ layout + format


def test_layout_and_wav_format(dataset):
    expected = {("train", n) for n in TRAIN_SPLIT_TRACKS[:2] + VALID_TRACKS[:2]}
    expected |= {("test", n) for n in TEST_TRACKS[:2]}
    assert {(p.parent.name, p.name) for p in all_tracks(dataset)} == expected
    assert sorted(os.listdir(dataset)) == ["test", "train"]  # no temporary leftovers
    for folder in all_tracks(dataset):
        assert sorted(os.listdir(folder)) == sorted(f"{s}.wav" for s in STEMS)
        for stem in STEMS:
            info = sf.info(str(folder / f"{stem}.wav"))
            fmt = (info.samplerate, info.channels, info.subtype, info.format)
            assert fmt == (SR, 2, "PCM_16", "WAV")
            assert info.frames == round(SECONDS * SR)


def test_musdb_reads_the_official_split(dataset):
    valid = musdb.DB(str(dataset), is_wav=True, subsets="train", split="valid")
    train = musdb.DB(str(dataset), is_wav=True, subsets="train", split="train")
    test = musdb.DB(str(dataset), is_wav=True, subsets="test")
    assert [t.name for t in valid] == sorted(VALID_TRACKS[:2])
    assert [t.name for t in train] == sorted(TRAIN_SPLIT_TRACKS[:2])
    assert [t.name for t in test] == sorted(TEST_TRACKS[:2])
    # musdb 0.4 reads every wav through ffmpeg (~0.3 s a file): read one track, once.
    track = test[0]
    n = round(SECONDS * SR)
    assert set(SOURCES) <= set(track.targets) and track.rate == SR
    stems = track.stems  # mixture, drums, bass, other, vocals (musdb's stem ids)
    assert stems.shape == (5, n, 2)
    np.testing.assert_array_equal(stems[0], stems[1:].sum(axis=0))
    vocals = read_int16(dataset / "test" / track.name / "vocals.wav") / 32768
    np.testing.assert_array_equal(stems[4], vocals)


def test_mixture_is_exact_int16_sum_of_stems(dataset):
    for folder in all_tracks(dataset):
        sources = [read_int16(folder / f"{s}.wav").astype(np.int32) for s in SOURCES]
        mixture = read_int16(folder / "mixture.wav").astype(np.int32)
        np.testing.assert_array_equal(mixture, np.sum(sources, axis=0))
        assert all(np.abs(s).max() > 1000 for s in sources[:3])  # drums, bass, other are audible
        assert 0.4 * 32767 < np.abs(mixture).max() <= 32767


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_different_seed_different_audio(dataset, tmp_path):
    # Fewer tracks: each track depends only on (seed, subset, name), so these must match.
    again = tmp_path / "again"
    synth.generate_dataset(again, seed=7, train_tracks=1, valid_tracks=1, test_tracks=1,
                           duration=SECONDS)
    for folder in all_tracks(again):
        for stem in STEMS:
            assert (folder / f"{stem}.wav").read_bytes() == (
                dataset / folder.parent.name / folder.name / f"{stem}.wav").read_bytes()
    other = tmp_path / "other_seed"
    synth.generate_dataset(other, seed=8, train_tracks=1, valid_tracks=0, test_tracks=0,
                           duration=SECONDS)
    name = TRAIN_SPLIT_TRACKS[0]
    for stem in STEMS:
        a = read_int16(dataset / "train" / name / f"{stem}.wav").astype(float)
        b = read_int16(other / "train" / name / f"{stem}.wav").astype(float)
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.5


def test_songs_vary_between_tracks():
    names = TRAIN_SPLIT_TRACKS[:8]
    plans = [synth.plan_song(synth.track_rngs(1, "train", n)["song"], SR * 12) for n in names]
    assert len({round(p.beat, 6) for p in plans}) == len(names)
    assert len({p.tonic for p in plans}) > 2 and len({p.chords for p in plans}) > 2


# ------------------------------------------------------------------------------ music


def power_centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((np.fft.rfftfreq(len(x), 1 / SR) * power).sum() / power.sum())


def frame_rms(x: np.ndarray, seconds: float, hop_seconds: float) -> np.ndarray:
    frames = sliding_window_view(x, int(seconds * SR))[:: int(hop_seconds * SR)]
    return np.sqrt((frames**2).mean(axis=1))


def test_bass_is_low(dataset):
    for folder in all_tracks(dataset):
        stems = stems_of(folder)
        centroids = {s: power_centroid(x) for s, x in stems.items()}
        assert centroids["bass"] < 250, centroids
        for source in ("drums", "other", "vocals"):
            assert centroids["bass"] < 0.5 * centroids[source], centroids
        spectrum = np.abs(np.fft.rfft(stems["bass"]))
        # The strongest partial is a fundamental of the bass range (E1 = 41 Hz, minus the
        # width of a decaying note's spectral line) up to 200 Hz.
        assert 35 <= np.fft.rfftfreq(len(stems["bass"]), 1 / SR)[spectrum.argmax()] <= 200


def test_drums_are_impulsive_and_pads_sustained(dataset):
    for folder in all_tracks(dataset):
        stems = stems_of(folder)
        crest = {s: np.abs(x).max() / np.sqrt((x**2).mean()) for s, x in stems.items()}
        assert crest["drums"] > 1.5 * crest["other"] and crest["drums"] > 6, crest
        # Energy of 10 ms frames: drums are peaks over near-silence, pads a steady level.
        energy = {s: frame_rms(x, 0.01, 0.01) ** 2 for s, x in stems.items()}
        peakiness = {s: np.percentile(e, 95) / max(np.median(e), 1e-12) for s, e in energy.items()}
        assert peakiness["drums"] > 10 and peakiness["drums"] > 5 * peakiness["other"], peakiness


def test_vocals_rest_while_pads_never_stop(dataset):
    for folder in all_tracks(dataset):
        stems = stems_of(folder)
        vocal_windows = frame_rms(stems["vocals"], 0.5, 0.05)
        assert vocal_windows.min() == 0.0  # a silent stretch of at least 0.5 s
        assert (vocal_windows > 0).mean() > 0.4  # but the voice sings most of the time
        pads = frame_rms(stems["other"], 0.5, 0.05)
        assert pads.min() > 0.2 * np.sqrt((stems["other"] ** 2).mean())


def pitch_track(x: np.ndarray, frame=2048, hop=256) -> np.ndarray:
    """f0 in Hz per frame by autocorrelation (NaN where unvoiced or quiet).

    The frame's autocorrelation is divided by the window's (Boersma 1993), so that long lags
    are not penalised and frames half in silence do not jump an octave up.
    """
    low_lag, high_lag = SR // 900, SR // 90
    window = np.hanning(frame)
    frames = sliding_window_view(x, frame)[::hop] * window
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * frame)) ** 2)[:, :frame]
    window_autocorr = np.fft.irfft(np.abs(np.fft.rfft(window, 2 * frame)) ** 2)[:frame]
    loud = autocorr[:, 0] > 0.05 * np.median(autocorr[autocorr[:, 0] > 0, 0])
    f0 = np.full(len(frames), np.nan)
    for i in np.flatnonzero(loud):
        ac = autocorr[i] / window_autocorr / autocorr[i, 0] * window_autocorr[0]
        search = ac[low_lag - 1 : high_lag + 1]
        peaks = np.flatnonzero((search[1:-1] >= search[:-2]) & (search[1:-1] >= search[2:]))
        if len(peaks) == 0:
            continue
        # The shortest lag almost as periodic as the best one: multiples of the period are
        # just as periodic and would put f0 an octave down.
        best = search[1:-1][peaks].max()
        lag = low_lag + int(peaks[search[1:-1][peaks] > 0.97 * best][0])
        a, b, c = ac[lag - 1 : lag + 2]
        if b > 0.5:
            f0[i] = SR / (lag + 0.5 * (a - c) / (a - 2 * b + c))
    return f0


def test_vocals_are_pitched_with_vibrato(dataset):
    frame_rate = SR / 256
    for folder in all_tracks(dataset):
        f0 = pitch_track(stems_of(folder)["vocals"])
        voiced = ~np.isnan(f0)
        assert voiced.mean() > 0.3
        assert 100 < np.nanpercentile(f0, 1) and np.nanpercentile(f0, 99) < 800  # a singing voice
        semitones = 12 * np.log2(f0 / 440)
        # The vibrato: what is left after a running median over 0.35 s (about 2 periods).
        width = int(0.35 * frame_rate) | 1
        edges = np.flatnonzero(np.diff(np.r_[0, voiced.astype(int), 0]))
        power = 0.0
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start > frame_rate:
                run = semitones[start:stop]
                padded = np.pad(run, width // 2, mode="edge")
                median = np.median(sliding_window_view(padded, width), axis=1)
                residual = (run - median)[width:-width]
                residual[np.abs(residual) > 1.5] = 0  # note changes the median lags behind
                power = power + np.abs(np.fft.rfft(residual * np.hanning(len(residual)), 4096)) ** 2
                assert 0.03 < np.median(np.abs(residual)) < 0.5  # a fraction of a semitone
        freqs = np.fft.rfftfreq(4096, 1 / frame_rate)
        band = (freqs > 3.5) & (freqs < 15)  # above the rate of note changes
        assert 4.5 < freqs[band][np.argmax(power[band])] < 6.5


def test_stems_are_not_copies_of_each_other(dataset):
    for folder in all_tracks(dataset):
        stems = stems_of(folder)
        for a, b in itertools.combinations(SOURCES, 2):
            assert abs(np.corrcoef(stems[a], stems[b])[0, 1]) < 0.2, (folder.name, a, b)


def test_panning_differs_between_tracks(dataset):
    balance = []  # per track: left/right energy ratio in dB of each source
    for folder in all_tracks(dataset):
        stereo = [read_int16(folder / f"{s}.wav").astype(float) for s in SOURCES]
        balance.append([10 * np.log10((x[:, 0] ** 2).sum() / (x[:, 1] ** 2).sum()) for x in stereo])
    balance = np.array(balance)
    assert np.abs(balance).max() > 1.0  # something is panned off-centre
    for i, j in itertools.combinations(range(len(balance)), 2):
        assert np.abs(balance[i] - balance[j]).max() > 0.5


# ------------------------------------------------------------------------------ helpers


def test_harmonic_sum_matches_direct_sines():
    phase = np.linspace(0, 40, 5000)
    amps = np.array([1.0, 0.5, 0.0, 0.25, 0.1])
    direct = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amps))
    np.testing.assert_allclose(synth.harmonic_sum(phase, amps), direct, atol=1e-9)
    varying = np.outer(amps, np.linspace(0, 1, len(phase)))
    expected = direct * np.linspace(0, 1, len(phase))
    np.testing.assert_allclose(synth.harmonic_sum(phase, varying), expected, atol=1e-9)


def test_to_stereo_keeps_power_and_delays_one_channel():
    x = np.random.default_rng(0).standard_normal(1000)
    stereo = synth.to_stereo(x, 0.37, 0)
    np.testing.assert_allclose((stereo**2).sum(axis=1), x**2)
    delayed = synth.to_stereo(x, 0.0, 3)
    np.testing.assert_allclose(delayed[3:, 1], delayed[:-3, 0])


# ------------------------------------------------------------------------------ failures + CLI


def test_failed_generation_leaves_no_folder(tmp_path, monkeypatch):
    written = []

    def failing_writer(path, audio, sr):
        if len(written) == 7:
            raise RuntimeError("disk full")
        written.append(path)
        sf.write(str(path), audio, sr, subtype="PCM_16")

    monkeypatch.setattr(synth, "write_wav", failing_writer)
    out = tmp_path / "data"
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate_dataset(out, seed=1, train_tracks=2, valid_tracks=0, test_tracks=0,
                               duration=0.5)
    assert len(written) == 7 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("counts", [(87, 0, 0), (0, 15, 0), (0, 0, 51), (-1, 0, 0)])
def test_track_counts_beyond_musdb_are_config_errors(tmp_path, counts):
    with pytest.raises(ConfigError, match="MUSDB18 has"):
        synth.generate_dataset(tmp_path / "d", 1, *counts, duration=1.0)
    assert not (tmp_path / "d").exists()


def test_cli_writes_refuses_existing_and_overwrites(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["synth", "--out", str(out), "--seed", "3", "--train-tracks", "1", "--valid-tracks", "0",
            "--test-tracks", "0", "--duration", "0.5"]
    assert cli.main(args) == 0
    track = out / "train" / TRAIN_SPLIT_TRACKS[0]
    assert sorted(p.name for p in track.iterdir()) == sorted(f"{s}.wav" for s in STEMS)
    assert cli.main(args) == 1 and "already exists" in capsys.readouterr().err
    assert cli.main(args[:-2] + ["--duration", "0"]) == 1
    assert "--duration 0" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite", "--valid-tracks", "1"]) == 0
    assert (out / "train" / VALID_TRACKS[0] / "mixture.wav").is_file()


def test_an_empty_existing_folder_is_filled(tmp_path):
    out = tmp_path / "made_by_snakemake"
    out.mkdir()
    synth.generate_dataset(out, seed=1, train_tracks=0, valid_tracks=0, test_tracks=1, duration=0.2)
    assert (out / "test" / TEST_TRACKS[0] / "mixture.wav").is_file()
