"""Pitch and tempo augmentation (dannasep.data.augment) against hand-derived frequencies and
times, and its place in the training dataset: deterministic, lengths kept, probabilities kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dannasep.constants import SAMPLE_RATE
from dannasep.data.augment import PitchTempo, pitch_ratio, pitch_shift, repitch, speed_perturb
from dannasep.data.dataset import MUSDBTrainDataset

SR = SAMPLE_RATE


def _tone(freq: float, seconds: float = 1.0, channels: int = 2) -> torch.Tensor:
    t = np.arange(int(seconds * SR)) / SR
    return torch.from_numpy(np.tile(np.sin(2 * np.pi * freq * t), (channels, 1)).astype(np.float32))


def _peak_hz(x: torch.Tensor) -> float:
    """Frequency of the strongest bin of the first channel's middle half (parabolic refinement)."""
    sig = x[0].numpy().astype(np.float64)
    sig = sig[len(sig) // 4: 3 * len(sig) // 4]
    spec = np.abs(np.fft.rfft(sig * np.hanning(len(sig)), n=8 * len(sig)))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1: k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (8 * len(sig))


def test_the_authors_pitch_rounding():
    # transform.py: rr = (100 * 2^(s/12)).long(), odd values made even; rate = 100 / rr
    assert [pitch_ratio(s)[0] for s in (-2, -1, 0, 1, 2)] == [90, 94, 100, 106, 112]


@pytest.mark.parametrize("semitones", [-2, -1, 1, 2])
def test_pitch_shift_moves_a_tone_by_the_authors_ratio_and_keeps_its_length(semitones):
    tone = _tone(440.0)
    out = pitch_shift(tone, semitones)
    assert out.shape == tone.shape
    expected = 440.0 * pitch_ratio(semitones)[0] / 100
    assert _peak_hz(out) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("percent", [90, 110])
def test_speed_perturbation_resamples_to_percent_of_the_rate(percent):
    tone = _tone(440.0)
    out = speed_perturb(tone, percent)
    assert out.shape == tone.shape
    # 44100 Hz audio resampled to 44100 * p / 100 samples a second, played at 44100 Hz
    assert _peak_hz(out) == pytest.approx(440.0 * 100 / percent, rel=1e-3)
    if percent == 110:  # longer: cut; 90: shorter, zero-padded at the end (the authors' rule)
        assert out[:, -100:].abs().max() > 0
    else:
        tail = int(len(tone[0]) * (1 - 0.9)) - 200
        assert out[:, -tail:].abs().max() == 0


def test_repitch_changes_tempo_without_pitch_and_pitch_without_tempo():
    # a 660 Hz tone gated on for 0.2 s every 0.5 s
    n = int(4.0 * SR)
    t = np.arange(n) / SR
    gate = ((t % 0.5) < 0.2).astype(np.float64)
    x = torch.from_numpy(np.tile(np.sin(2 * np.pi * 660 * t) * gate, (2, 1)).astype(np.float32))

    def period(y):  # lag of the envelope's autocorrelation peak, 0.3 to 0.7 s
        env = np.convolve(np.abs(y[0].numpy()[: int(3.0 * SR)]), np.ones(441) / 441, mode="same")
        env = env[::100] - env[::100].mean()
        ac = np.correlate(env, env, mode="full")[len(env) - 1:]
        lo, hi = int(0.3 * SR / 100), int(0.7 * SR / 100)
        return (lo + int(np.argmax(ac[lo:hi]))) * 100 / SR

    def pitch(y):  # inside the first gate
        return _peak_hz(y[:, int(0.04 * SR): int(0.16 * SR)].repeat(1, 10))

    faster = repitch(x, 0, 10.0)  # 110 % tempo
    assert faster.shape == x.shape
    assert period(faster) == pytest.approx(0.5 / 1.1, abs=0.005)
    assert pitch(faster) == pytest.approx(660, rel=0.01)
    higher = repitch(x, 2, 0.0)
    assert period(higher) == pytest.approx(0.5, abs=0.005)
    assert pitch(higher) == pytest.approx(660 * 1.12, rel=0.01)


def test_draw_probabilities_hold_over_many_items():
    settings = PitchTempo(pitch_p=0.2, speed_p=0.2, repitch_p=0.3)
    rng = np.random.default_rng(0)
    pitches, speeds, items, tempos = [], [], [], []
    for _ in range(5000):
        s, p, item = settings.draw(rng, 4)
        pitches += s
        speeds += p
        items.append(item)
        if item is not None:
            tempos.append(item[1])
    n = len(pitches)  # 20000 stems: binomial sd of the fraction is 0.0028
    assert abs(sum(x is not None for x in pitches) / n - 0.2) < 0.012
    assert abs(sum(x is not None for x in speeds) / n - 0.2) < 0.012
    assert abs(sum(x is not None for x in items) / 5000 - 0.3) < 0.025
    assert set(x for x in pitches if x is not None) == {-2, -1, 0, 1, 2}
    assert set(x for x in speeds if x is not None) == {90, 100, 110}
    assert max(abs(t) for t in tempos) <= 12.0 and 4.0 < np.std(tempos) < 5.5


def test_other_draws_do_not_move_when_a_probability_changes():
    a = PitchTempo(pitch_p=0.2).draw(np.random.default_rng(5), 4)
    b = PitchTempo(pitch_p=0.2, speed_p=1.0).draw(np.random.default_rng(5), 4)
    assert a[0] == b[0] and all(s is not None for s in b[1])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from conftest import make_musdb_tree

    return make_musdb_tree(tmp_path_factory.mktemp("aug") / "musdb", seconds=2.0)


def test_augmented_items_are_deterministic_keep_length_and_sum_to_the_mixture(tree):
    kwargs = dict(segment_seconds=0.5, samples_per_track=2, seed=11,
                  pitch_tempo=PitchTempo(pitch_p=0.5, speed_p=0.5, repitch_p=0.5))
    ds1, ds2 = MUSDBTrainDataset(tree, **kwargs), MUSDBTrainDataset(tree, **kwargs)
    plain = MUSDBTrainDataset(tree, **{**kwargs, "pitch_tempo": None})
    items = [ds1[i] for i in range(len(ds1))]
    changed = 0
    for i, (mix, targets) in enumerate(items):
        mix2, targets2 = ds2[i]
        assert torch.equal(mix, mix2) and torch.equal(targets, targets2)
        assert targets.shape == (4, 2, int(0.5 * SR))
        assert torch.allclose(mix, targets.sum(0), atol=1e-6)
        reference = plain[i][1]
        for k, d in enumerate(ds1.draw(i)):
            if d.semitones in (None, 0) and d.speed in (None, 100) and d.repitch is None:
                assert torch.equal(targets[k], reference[k])  # untouched stems stay as read
            else:
                changed += not torch.equal(targets[k], reference[k])
    assert changed > 0
    # a DataLoader with workers gives the same items
    loader = torch.utils.data.DataLoader(ds1, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat([b[1] for b in loader]), torch.stack([t for _, t in items]))
