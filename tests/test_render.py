"""The rendered MUSDB18-HQ (`dannasep render`): layout, exactness, determinism, stem character.

Needs Debian's libfluidsynth3, fluid-soundfont-gm and espeak-ng (make test installs them).
The stems' character is measured from the written files with plain numpy and scipy (spectral
flux, energy below 250 Hz, spectral centroid and flatness, YIN f0, level gaps), never
read back from the renderer's plan.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import musdb
import numpy as np
import pytest
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from dannasep import cli
from dannasep.config import validate_config
from dannasep.constants import SAMPLE_RATE, SOURCES, STEMS
from dannasep.data.render import arrangement, rendering
from dannasep.data.render.cli import render_dataset
from dannasep.data.render.rendering import (
    FLUIDR3_GM_SHA256,
    SoundFontRenderer,
    check_soundfont,
)
from dannasep.data.render.track import render_track
from dannasep.data.tracks import TEST_TRACKS, TRAIN_SPLIT_TRACKS, VALID_TRACKS
from dannasep.data.validate import check_dataset
from dannasep.errors import DataError

pytestmark = pytest.mark.slow
SR = SAMPLE_RATE
SEED, SECONDS = 5, 12.0
COUNTS = dict(train_tracks=2, valid_tracks=1, test_tracks=1)
N_FFT, HOP = 2048, 512


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("render") / "musdb18hq"
    render_dataset(root, seed=SEED, duration=SECONDS, **COUNTS)
    return root


def track_folders(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/"))


def mono(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="float64")[0].mean(axis=1)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


# ------------------------------------------------------------------------------ layout + format


def test_rendered_dataset_validates(dataset):
    assert check_dataset(dataset) == []
    expected = {("train", n) for n in TRAIN_SPLIT_TRACKS[:2] + VALID_TRACKS[:1]} | {("test", TEST_TRACKS[0])}
    assert {(f.parent.name, f.name) for f in track_folders(dataset)} == expected
    for folder in track_folders(dataset):
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.wav" for s in STEMS)
        for stem in STEMS:
            info = sf.info(str(folder / f"{stem}.wav"))
            assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 2, "PCM_16", SECONDS * SR)


def test_musdb_reads_it_with_the_official_split(dataset):
    valid = musdb.DB(root=str(dataset), is_wav=True, subsets="train", split="valid")
    train = musdb.DB(root=str(dataset), is_wav=True, subsets="train", split="train")
    test = musdb.DB(root=str(dataset), is_wav=True, subsets="test")
    assert [t.name for t in valid.tracks] == list(VALID_TRACKS[:1])
    assert [t.name for t in train.tracks] == list(TRAIN_SPLIT_TRACKS[:2])
    track = test.tracks[0]
    assert track.name == TEST_TRACKS[0] and track.rate == SR
    total = sum(track.targets[s].audio for s in SOURCES)
    assert np.abs(track.audio - total).max() < 1e-9  # musdb reads the mixture as the stems' sum


def test_mixture_is_the_exact_int16_sum_of_the_stems(dataset):
    for folder in track_folders(dataset):
        stems = {s: sf.read(str(folder / f"{s}.wav"), dtype="int16")[0].astype(np.int32) for s in STEMS}
        assert np.array_equal(stems["mixture"], sum(stems[s] for s in SOURCES))
        assert np.abs(stems["mixture"]).max() > 8000  # produced at a record's level, not near silence


# ------------------------------------------------------------------------------ determinism


def test_a_second_render_in_another_process_is_byte_identical(dataset, tmp_path):
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "dannasep", "render", "--out", str(again), "--seed", str(SEED),
                    "--duration", str(SECONDS), "--train-tracks", "2", "--valid-tracks", "1",
                    "--test-tracks", "1"], check=True, capture_output=True)
    assert file_hashes(again) == file_hashes(dataset)


def test_a_track_does_not_depend_on_what_was_rendered_before(dataset):
    folder = dataset / "train" / TRAIN_SPLIT_TRACKS[1]  # rendered after another track in the fixture
    with SoundFontRenderer(rendering.DEFAULT_SOUNDFONT) as renderer:
        stems = render_track(renderer, SEED, "train", TRAIN_SPLIT_TRACKS[1], SECONDS)
    for stem in STEMS:
        assert np.array_equal(stems[stem], sf.read(str(folder / f"{stem}.wav"), dtype="int16")[0]), stem


def test_another_seed_gives_other_music(dataset):
    with SoundFontRenderer(rendering.DEFAULT_SOUNDFONT) as renderer:
        other = render_track(renderer, SEED + 1, "test", TEST_TRACKS[0], SECONDS)
    ours = sf.read(str(dataset / "test" / TEST_TRACKS[0] / "mixture.wav"), dtype="int16")[0]
    correlation = np.corrcoef(ours[:, 0].astype(float), other["mixture"][:, 0].astype(float))[0, 1]
    assert abs(correlation) < 0.2


# ------------------------------------------------------------------------------ the SoundFont pin


def test_a_missing_soundfont_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "FluidR3_GM.sf2"
    code = cli.main(["render", "--out", str(tmp_path / "ds"), "--soundfont", str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert str(missing) in err and "fluid-soundfont-gm" in err
    assert not (tmp_path / "ds").exists()


def test_a_soundfont_with_other_bytes_is_refused(tmp_path):
    other = tmp_path / "other.sf2"
    other.write_bytes(b"RIFF not the pinned SoundFont")
    with pytest.raises(DataError) as info:
        check_soundfont(other, FLUIDR3_GM_SHA256)
    message = str(info.value)
    assert str(other) in message and FLUIDR3_GM_SHA256 in message
    assert hashlib.sha256(other.read_bytes()).hexdigest() in message  # the value to pin it instead


def test_the_schema_pins_the_same_soundfont_as_the_code():
    rendered = validate_config({"dataset": {"kind": "rendered"}})["dataset"]["rendered"]
    assert rendered["soundfont_sha256"] == FLUIDR3_GM_SHA256
    assert rendered["soundfont"] == rendering.DEFAULT_SOUNDFONT
    assert check_soundfont(rendered["soundfont"], rendered["soundfont_sha256"]).is_file()


# ------------------------------------------------------------------------------ arrangements


def test_arrangements_vary_within_the_issues_ranges():
    songs = [arrangement.plan_song(np.random.default_rng(seed), 120.0) for seed in range(60)]
    assert all(70 <= s.tempo <= 160 for s in songs)
    assert len({s.style for s in songs}) == len(arrangement.STYLES)
    assert {s.mode for s in songs} == {"major", "minor"} and len({s.tonic for s in songs}) == 12
    assert all(32 <= s.programs["bass"] <= 39 for s in songs)
    assert {s.programs["vocals"] for s in songs} == set(arrangement.VOICE_PROGRAMS.values())
    assert {s.programs["drums"] for s in songs} <= set(arrangement.KITS.values())
    for song in songs:
        kinds = [section.kind for section in song.sections]
        assert kinds[:3] == ["intro", "verse", "chorus"] and "break" in kinds
        assert "vocals" not in song.sections[0].parts  # the voice enters after the intro
        # stems enter and leave: some part plays in one section and not in another
        assert any(a.parts != b.parts for a, b in zip(song.sections, song.sections[1:]))


# ------------------------------------------------------------------------------ stem character


def spectrogram(x: np.ndarray) -> np.ndarray:
    """Power, (bins, frames)."""
    frames = sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT)
    return (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).T


def active_frames(power: np.ndarray, below_db: float = 30.0) -> np.ndarray:
    level = 10 * np.log10(power.sum(axis=0) + 1e-20)
    return level > np.percentile(level, 95) - below_db


def onset_strength(power: np.ndarray) -> float:
    """Mean rise of the dB spectrum per frame (spectral flux) over the active frames."""
    db = 10 * np.log10(power + 1e-20)
    db = np.maximum(db, db.max() - 80)
    flux = np.maximum(np.diff(db, axis=1), 0).mean(axis=0)
    return float(flux[active_frames(power)[1:]].mean())


def flatness(power: np.ndarray) -> float:
    """Median over the loud frames of the spectral flatness (geometric / arithmetic mean of the
    power, 50 Hz-12 kHz): near 0 for harmonic spectra (peaks), larger for noise."""
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)
    band = power[(freqs > 50) & (freqs < 12000)][:, active_frames(power)] + 1e-20
    return float(np.median(np.exp(np.log(band).mean(axis=0)) / band.mean(axis=0)))


def centroid(power: np.ndarray) -> float:
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)
    return float((freqs[:, None] * power).sum() / power.sum())


def low_share(power: np.ndarray, cutoff: float = 250.0) -> float:
    freqs = np.fft.rfftfreq(N_FFT, 1 / SR)
    return float(power[freqs < cutoff].sum() / power.sum())


def longest_gap(power: np.ndarray, sounding: np.ndarray | None = None) -> float:
    """Seconds of the longest run of frames where the stem does not sound, between frames where
    it does: 30 dB below its loud level, or (given) not `sounding` (e.g. no f0: no sung note)."""
    active = active_frames(power)
    if sounding is not None:
        active[: len(sounding)] &= sounding
        active[len(sounding) :] = False
    frames = np.flatnonzero(active)
    return float(np.diff(frames).max() - 1) * HOP / SR if len(frames) > 1 else 0.0


def yin_f0(x: np.ndarray, w: int = 1024, fmin: float = 60.0, fmax: float = 1000.0,
           threshold: float = 0.15) -> np.ndarray:
    """f0 per frame (NaN when aperiodic): YIN's cumulative mean normalised difference, steps 1-4
    (de Cheveigné and Kawahara 2002). Frames of 2w samples, hop HOP."""
    frames = sliding_window_view(x, 2 * w)[::HOP]
    head = frames[:, :w]
    cross = np.fft.irfft(np.conj(np.fft.rfft(head, 2 * w)) * np.fft.rfft(frames, 2 * w), 2 * w)[:, :w]
    energy = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    diff = np.maximum(energy[:, w : w + 1] + energy[:, w : 2 * w] - energy[:, :w] - 2 * cross, 0)
    cmnd = diff[:, 1:] * np.arange(1, w) / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-20)
    low, high = int(SR / fmax) - 1, int(SR / fmin) - 1  # cmnd[:, k] is lag k + 1
    f0 = np.full(len(frames), np.nan)
    for i, row in enumerate(cmnd[:, low:high]):
        below = np.flatnonzero(row < threshold)
        if len(below):
            k = below[0]
            while k + 1 < len(row) and row[k + 1] < row[k]:
                k += 1
            f0[i] = SR / (low + k + 1)
    return f0


def test_yin_finds_the_f0_of_a_harmonic_tone():
    t = np.arange(SR) / SR
    tone = sum(np.sin(2 * np.pi * 196.0 * k * t) / k for k in range(1, 6))
    assert np.nanmedian(yin_f0(tone)) == pytest.approx(196.0, rel=0.01)
    assert np.isnan(yin_f0(np.random.default_rng(0).standard_normal(SR))).mean() > 0.9


def voiced_share_and_f0(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Share of the loud frames that are periodic, their f0, and the periodic-frame mask."""
    f0 = yin_f0(x)
    loud = active_frames(spectrogram(x)[:, : len(f0)])[: len(f0)]
    voiced = loud & ~np.isnan(f0)
    return voiced.sum() / max(loud.sum(), 1), f0[voiced], voiced


@pytest.fixture(scope="module")
def character(dataset) -> dict[str, dict[str, dict[str, float]]]:
    """track -> stem -> statistic."""
    out = {}
    for folder in track_folders(dataset):
        out[folder.name] = {}
        for stem in SOURCES:
            x = mono(folder / f"{stem}.wav")
            power = spectrogram(x)
            voiced, f0, periodic = voiced_share_and_f0(x)
            out[folder.name][stem] = dict(
                onset=onset_strength(power), flatness=flatness(power), low=low_share(power),
                centroid=centroid(power), active=float(active_frames(power).mean()), gap=longest_gap(power),
                sung_gap=longest_gap(power, periodic), voiced=voiced,
                f0_median=float(np.median(f0)) if len(f0) else np.nan,
                f0_in_range=float(np.mean((f0 >= 100) & (f0 <= 1000))) if len(f0) else 0.0)
    return out


def test_drums_are_transient(character):
    for track, stats in character.items():
        drums = stats["drums"]
        assert drums["onset"] > 1.5, (track, drums)
        for stem in ("bass", "other", "vocals"):
            assert drums["onset"] > 1.3 * stats[stem]["onset"], (track, stem, stats)
            assert drums["flatness"] > 3 * stats[stem]["flatness"], (track, stem, stats)  # noisy hits


def test_bass_energy_is_mostly_below_250_hz(character):
    for track, stats in character.items():
        assert stats["bass"]["low"] > 0.6, (track, stats["bass"])
        assert stats["bass"]["centroid"] < min(stats[s]["centroid"] for s in ("drums", "other", "vocals"))


def test_vocals_have_a_sung_f0_and_phrase_gaps(character):
    for track, stats in character.items():
        vocals = stats["vocals"]
        assert vocals["voiced"] > 0.4, (track, vocals)
        assert 100 <= vocals["f0_median"] <= 1000 and vocals["f0_in_range"] > 0.9, (track, vocals)
        assert vocals["sung_gap"] >= 0.25, (track, vocals)  # the singer breathes between phrases
        assert vocals["voiced"] > 2 * stats["drums"]["voiced"]


def test_other_is_sustained_and_harmonic(character):
    for track, stats in character.items():
        other = stats["other"]
        assert other["active"] > 0.9 and other["gap"] < 0.25, (track, other)
        assert other["flatness"] < 0.01, (track, other)  # peaks at the notes' harmonics


def test_the_stems_of_a_track_differ_in_these_statistics(character):
    for track, stats in character.items():
        def by(key, stats=stats):
            return {s: stats[s][key] for s in SOURCES}

        assert max(by("onset"), key=by("onset").get) == "drums", (track, by("onset"))
        assert min(by("centroid"), key=by("centroid").get) == "bass", (track, by("centroid"))
        assert max(by("active"), key=by("active").get) == "other", (track, by("active"))
        assert max(by("flatness"), key=by("flatness").get) == "drums", (track, by("flatness"))
        assert max(by("voiced"), key=by("voiced").get) == "vocals", (track, by("voiced"))
        assert stats["vocals"]["f0_median"] > 1.5 * stats["bass"]["f0_median"], track


# ------------------------------------------------------------------------------ the report figure


def test_spectrogram_figure_of_a_rendered_track(dataset, tmp_path, capsys):
    folder = dataset / "test" / TEST_TRACKS[0]
    assert cli.main(["spectrograms", str(folder), "--out-stem", str(tmp_path / "fig")]) == 0
    png = tmp_path / "fig.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "fig.pdf").stat().st_size > 10_000
    image = __import__("matplotlib.image").image.imread(str(png))
    assert image.shape[0] > image.shape[1] > 500  # five stacked panels
    (tmp_path / "broken").mkdir()
    assert cli.main(["spectrograms", str(tmp_path / "broken"), "--out-stem", str(tmp_path / "x")]) == 1
    assert str(tmp_path / "broken" / "mixture.wav") in capsys.readouterr().err


def test_loudness_follows_the_drawn_spread(dataset):
    """Mixtures between the clip limits (or quieter, when the peak ceiling lowered the mix);
    each stem within four standard deviations of its drawn level relative to the mixture."""
    from dannasep.data.render.production import LOUDNESS, loudness

    for folder in track_folders(dataset):
        mixture = loudness(sf.read(str(folder / "mixture.wav"), dtype="float64")[0])
        _, _, low, high = LOUDNESS["mixture"]
        assert low - 8 <= mixture <= high + 0.5, (folder.name, mixture)
        for source in SOURCES:
            level = loudness(sf.read(str(folder / f"{source}.wav"), dtype="float64")[0]) - mixture
            mean, sd = LOUDNESS[source]
            assert abs(level - mean) < 4 * sd + 1.0, (folder.name, source, level)


# ------------------------------------------------------------------------------ the workflow


def _dry_run(*configs: str) -> str:
    root = Path(__file__).resolve().parents[1]
    snakemake = str(Path(sys.executable).parent / "snakemake")
    out = subprocess.run([snakemake, "-n", "-p", "--cores", "2", "--forceall", "--configfile", *configs],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def test_the_embedded_default_renders_its_dataset():
    """config/config.yaml: the dataset comes from `dannasep render`."""
    out = _dry_run("config/config.yaml")
    assert "render_dataset" in out and "synth_dataset" not in out
    assert "dannasep render --out resources/musdb18hq-rendered --seed 2021" in out
    assert f"--soundfont-sha256 {FLUIDR3_GM_SHA256}" in out
    assert "dannasep spectrograms 'resources/musdb18hq-rendered/test/" in out


def test_the_synthetic_overlay_plans_the_synth_rule():
    """config/synthetic.yaml over the embedded default: the additive synthetic dataset."""
    out = _dry_run("config/synthetic.yaml")
    assert "synth_dataset" in out and "render_dataset" not in out
    assert "dannasep spectrograms 'resources/musdb18hq-synthetic/test/" in out
