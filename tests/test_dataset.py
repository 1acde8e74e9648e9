"""Training/validation datasets: checked against the wav files themselves.

Returned segments are located in the stem files by an independent FFT cross-correlation search,
then compared sample by sample with the file content, so the tests do not trust the dataset's
own account of where a segment came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TRAIN_NAMES, VALID_NAMES, make_musdb_tree, write_track
from dannasep.config import validate_config
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.data.dataset import MUSDBTrainDataset, MUSDBValidationDataset, make_loader
from dannasep.errors import ConfigError, DataError

MORE_TRAIN_NAMES = ["Angela Thomas Wade - Milk Cow Blues", "Atlantis Bound - It Was My Fault For Waiting"]


def load_stems(root: Path, names) -> dict[str, dict[str, np.ndarray]]:
    """name -> stem -> float64 (samples, channels), the values soundfile decodes to float."""
    return {n: {s: sf.read(root / "train" / n / f"{s}.wav", dtype="float64")[0]
                for s in SOURCES + ("mixture",)} for n in names}


def locate(segment: np.ndarray, candidates: dict[str, np.ndarray]):
    """Find `segment` (channels, n) as gain * (maybe swapped) excerpt of one candidate file.

    Returns (name, offset, swapped, signed_gain); fails the test if no exact match exists.
    """
    seg = segment.astype(np.float64)
    n = seg.shape[1]
    best = None
    for name, audio in candidates.items():
        total = len(audio)
        size = 1 << int(np.ceil(np.log2(total + n)))
        spec_seg = np.conj(np.fft.rfft(seg[0], size))
        for channel in range(audio.shape[1]):
            x = audio[:, channel]
            corr = np.fft.irfft(np.fft.rfft(x, size) * spec_seg, size)[: total - n + 1]
            cum = np.concatenate([[0.0], np.cumsum(x ** 2)])
            window_energy = cum[n:] - cum[:-n]
            ncc = np.abs(corr) / np.sqrt(window_energy * np.sum(seg[0] ** 2) + 1e-30)
            offset = int(np.argmax(ncc))
            if best is None or ncc[offset] > best[0]:
                best = (ncc[offset], name, offset, channel == 1)
    _, name, offset, swapped = best
    excerpt = candidates[name][offset: offset + n].T
    if swapped:
        excerpt = excerpt[::-1]
    gain = scaled_copy_gain(seg, excerpt)
    assert gain is not None, "segment is no scaled excerpt of any candidate file"
    return name, offset, swapped, gain


def scaled_copy_gain(segment: np.ndarray, reference: np.ndarray) -> float | None:
    """The gain g with segment == g * reference sample for sample, or None if there is none."""
    seg = segment.astype(np.float64)
    gain = float(np.sum(seg * reference) / np.sum(reference * reference))
    return gain if np.allclose(seg, gain * reference, atol=1e-6, rtol=1e-5) else None


@pytest.fixture
def four_track_tree(tmp_path) -> Path:
    return make_musdb_tree(tmp_path / "m4", train=TRAIN_NAMES + MORE_TRAIN_NAMES + VALID_NAMES,
                           test=[], seconds=2.0)


def test_shapes_length_and_mixture_is_sum_of_targets(musdb_tree):
    ds = MUSDBTrainDataset(musdb_tree, segment_seconds=0.5, samples_per_track=3)
    assert [t.name for t in ds.tracks] == sorted(TRAIN_NAMES)
    assert len(ds) == 2 * 3
    for index in range(len(ds)):
        mixture, targets = ds[index]
        assert mixture.dtype == targets.dtype == torch.float32
        assert mixture.shape == (2, 22050)
        assert targets.shape == (4, 2, 22050)
        np.testing.assert_allclose(mixture.numpy(), targets.numpy().astype(np.float64).sum(0),
                                   atol=1e-6)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_segments_are_real_excerpts_with_gain_in_range(musdb_tree):
    """random_mix off, no swap/flip: every source is gain * the same excerpt of one track."""
    ds = MUSDBTrainDataset(musdb_tree, segment_seconds=0.25, samples_per_track=3,
                           random_mix=False, channel_swap_p=0.0, sign_flip_p=0.0, seed=7)
    stems = load_stems(musdb_tree, TRAIN_NAMES)
    gains = []
    for index in range(len(ds)):
        _, targets = ds[index]
        expected_track = ds.tracks[index // 3].name
        found = []
        for k, source in enumerate(SOURCES):
            name, offset, swapped, gain = locate(targets[k].numpy(),
                                                 {n: stems[n][source] for n in stems})
            assert name == expected_track and not swapped
            assert 0.25 <= gain <= 1.25
            gains.append(gain)
            found.append(offset)
        assert len(set(found)) == 1, "all sources must come from the same offset"
    assert max(gains) - min(gains) > 0.3  # gains do vary


def test_random_mix_takes_sources_from_different_tracks(four_track_tree):
    names = TRAIN_NAMES + MORE_TRAIN_NAMES
    stems = load_stems(four_track_tree, names)
    ds = MUSDBTrainDataset(four_track_tree, segment_seconds=0.25, samples_per_track=2, seed=3)
    origins = []
    for index in range(len(ds)):
        _, targets = ds[index]
        item = []
        for k, source in enumerate(SOURCES):
            name, offset, _, gain = locate(targets[k].numpy(), {n: stems[n][source] for n in names})
            assert 0.25 <= abs(gain) <= 1.25
            item.append((name, offset))
        origins.append(item)
    assert any(len({name for name, _ in item}) > 1 for item in origins)
    assert all(len({offset for _, offset in item}) == 4 for item in origins)
    assert {name for item in origins for name, _ in item} == set(names)


def test_swap_and_flip_rates_and_gain_distribution(tmp_path):
    # Segment as long as the track: offset is 0, so each draw is read off by direct comparison.
    root = make_musdb_tree(tmp_path / "short", train=TRAIN_NAMES, test=[], seconds=0.02)
    stems = load_stems(root, TRAIN_NAMES)
    ds = MUSDBTrainDataset(root, segment_seconds=0.02, samples_per_track=150, random_mix=False,
                           gain_range=(0.4, 0.9), channel_swap_p=0.3, sign_flip_p=0.8, seed=11)
    swaps, flips, gains = [], [], []
    for index in range(len(ds)):
        _, targets = ds[index]
        track = ds.tracks[index // 150].name
        for k, source in enumerate(SOURCES):
            file = stems[track][source].T
            seg = targets[k].numpy()
            straight, crossed = scaled_copy_gain(seg, file), scaled_copy_gain(seg, file[::-1])
            assert (straight is None) != (crossed is None), "exactly one channel order must fit"
            gain = straight if crossed is None else crossed
            swaps.append(crossed is not None)
            flips.append(gain < 0)
            gains.append(abs(gain))
    n = len(swaps)
    assert n == 1200
    for observed, p in ((np.mean(swaps), 0.3), (np.mean(flips), 0.8)):
        assert abs(observed - p) < 4.5 * np.sqrt(p * (1 - p) / n)
    gains = np.array(gains)
    assert gains.min() >= 0.4 - 1e-6 and gains.max() <= 0.9 + 1e-6
    assert abs(gains.mean() - 0.65) < 4.5 * (0.5 / np.sqrt(12)) / np.sqrt(n)


def test_short_tracks_are_zero_padded(musdb_tree):
    ds = MUSDBTrainDataset(musdb_tree, segment_seconds=2.5, samples_per_track=1,
                           random_mix=False, channel_swap_p=0.0, sign_flip_p=0.0)
    stems = load_stems(musdb_tree, TRAIN_NAMES)
    _, targets = ds[0]
    frames = 2 * SAMPLE_RATE
    assert targets.shape[-1] == int(2.5 * SAMPLE_RATE)
    assert torch.all(targets[..., frames:] == 0)
    drums = stems[ds.tracks[0].name]["drums"].T
    assert 0.25 <= scaled_copy_gain(targets[0, :, :frames].numpy(), drums) <= 1.25


def test_same_seed_same_items_other_seed_or_epoch_differs(musdb_tree):
    kwargs = dict(segment_seconds=0.1, samples_per_track=2)
    a = MUSDBTrainDataset(musdb_tree, seed=5, **kwargs)
    b = MUSDBTrainDataset(musdb_tree, seed=5, **kwargs)
    c = MUSDBTrainDataset(musdb_tree, seed=6, **kwargs)
    for index in range(len(a)):
        assert torch.equal(a[index][1], b[index][1])
        assert not torch.equal(a[index][1], c[index][1])
    first = a[1][1]
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(a[1][1], first)
    a.set_epoch(0)
    assert torch.equal(a[1][1], first)


def test_loader_batches_do_not_depend_on_workers(musdb_tree):
    def run(num_workers, epochs=(0, 1)):
        ds = MUSDBTrainDataset(musdb_tree, segment_seconds=0.1, samples_per_track=4, seed=2)
        loader = make_loader(ds, batch_size=3, num_workers=num_workers, seed=9, shuffle=True)
        batches = []
        for epoch in epochs:  # persistent workers must see set_epoch
            ds.set_epoch(epoch)
            batches.append([b for b in loader])
        return batches

    def assert_same(epoch_a, epoch_b):
        assert len(epoch_a) == len(epoch_b) == 3  # 8 items, batch 3
        for (mix_a, tgt_a), (mix_b, tgt_b) in zip(epoch_a, epoch_b):
            assert torch.equal(mix_a, mix_b) and torch.equal(tgt_a, tgt_b)

    serial, parallel, resumed = run(0), run(2), run(0, epochs=(1,))
    for epoch_serial, epoch_parallel in zip(serial, parallel):
        assert_same(epoch_serial, epoch_parallel)
    assert_same(resumed[0], serial[1])  # starting at epoch 1 replays epoch 1
    assert not torch.equal(serial[0][0][1], serial[1][0][1])


def test_unshuffled_loader_follows_item_order(musdb_tree):
    ds = MUSDBTrainDataset(musdb_tree, segment_seconds=0.1, samples_per_track=2)
    batch = next(iter(make_loader(ds, batch_size=4, num_workers=0, shuffle=False)))
    assert torch.equal(batch[1], torch.stack([ds[i][1] for i in range(4)]))


def test_validation_items_are_whole_valid_tracks(musdb_tree):
    ds = MUSDBValidationDataset(musdb_tree)
    assert len(ds) == 2
    stems = load_stems(musdb_tree, VALID_NAMES)
    for index in range(len(ds)):
        mixture, targets, name = ds[index]
        assert name in VALID_NAMES and name == sorted(VALID_NAMES)[index]
        assert mixture.shape == (2, 2 * SAMPLE_RATE) and targets.shape == (4, 2, 2 * SAMPLE_RATE)
        np.testing.assert_array_equal(mixture.numpy(), stems[name]["mixture"].T.astype(np.float32))
        for k, source in enumerate(SOURCES):
            np.testing.assert_array_equal(targets[k].numpy(), stems[name][source].T.astype(np.float32))


def test_from_config_reads_data_section(musdb_tree):
    cfg = validate_config({"data": {"segment_seconds": 0.5, "samples_per_track": 5,
                                    "random_mix": False, "gain_min": 0.5, "gain_max": 0.7,
                                    "channel_swap_p": 0.1, "sign_flip_p": 0.2}})
    ds = MUSDBTrainDataset.from_config(musdb_tree, cfg["data"], seed=4)
    assert (ds.segment_frames, len(ds), ds.random_mix) == (22050, 10, False)
    assert ds.gain_range == (0.5, 0.7) and (ds.channel_swap_p, ds.sign_flip_p) == (0.1, 0.2)
    assert ds.seed == 4 and ds.split == "train"
    with pytest.raises(ConfigError, match="gain_min"):
        MUSDBTrainDataset.from_config(musdb_tree, {"gain_min": 2.0, "gain_max": 1.0}, seed=0)


def test_missing_tracks_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="dannasep synth") as info:
        MUSDBTrainDataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    only_valid = make_musdb_tree(tmp_path / "v", train=VALID_NAMES, test=[], seconds=0.1)
    with pytest.raises(DataError, match="dataset.root"):
        MUSDBTrainDataset(only_valid, split="train")
    with pytest.raises(DataError):
        MUSDBValidationDataset(make_musdb_tree(tmp_path / "t", train=TRAIN_NAMES, test=[], seconds=0.1))


def test_bad_stem_format_names_the_file(tmp_path):
    root = make_musdb_tree(tmp_path / "m", train=TRAIN_NAMES, test=[], seconds=0.1)
    bad = root / "train" / TRAIN_NAMES[0] / "bass.wav"
    sf.write(bad, np.zeros((100, 1), dtype=np.int16), SAMPLE_RATE)
    with pytest.raises(DataError, match="bass.wav"):
        MUSDBTrainDataset(root)
    write_track(root / "train" / TRAIN_NAMES[0], seconds=0.1)
    (root / "train" / TRAIN_NAMES[0] / "vocals.wav").unlink()
    with pytest.raises(DataError, match="vocals.wav"):
        MUSDBTrainDataset(root)
