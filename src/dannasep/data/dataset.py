"""Training and validation datasets over a MUSDB18-HQ folder.

Tracks are listed with `musdb.DB` (so the official train/valid split is the package's own),
but audio is read straight from the stem wav files with soundfile start/stop: a 6 s segment
costs its own bytes, not the decoding of a whole track as musdb's Track API does.

Randomness: every item draws from its own numpy Generator seeded by (seed, epoch, index), so an
item is the same whatever the number of DataLoader workers or the order they run in, and
`set_epoch` gives a fresh draw. The epoch lives in a shared-memory tensor so that persistent
workers (forked once) see `set_epoch` calls made later in the main process.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..audio import read_wav
from ..constants import CHANNELS, SAMPLE_RATE, SOURCES
from ..errors import ConfigError, DataError
from .augment import PitchTempo

SPLITS = ("train", "valid", "train+valid")  # train+valid: all 100 training tracks (musdb split=None)


@dataclass(frozen=True)
class TrackFiles:
    """One track: its name, the wav file of each requested source, and its length in frames."""

    name: str
    folder: str
    source_paths: tuple[str, ...]
    frames: int  # shortest stem, so every source can be read at any offset below it


@dataclass(frozen=True)
class SourceDraw:
    """Where one source of a training item comes from and how it is augmented."""

    track: int  # index into the dataset's `tracks`
    offset: int  # first frame read from the stem file
    gain: float
    swap: bool  # left/right exchanged
    flip: bool  # sign inverted
    semitones: int | None = None  # Danna-Sep pitch shift, None: not applied
    speed: int | None = None  # Danna-Sep speed perturbation in percent, None: not applied
    repitch: tuple[int, float] | None = None  # demucs v2 (semitones, tempo %) of the whole item


def _missing_tracks_error(root: Path, split: str) -> DataError:
    return DataError(
        f"{root / 'train'}: no MUSDB18-HQ tracks of the '{split}' split found (expected "
        "train/<track>/{mixture,drums,bass,other,vocals}.wav with official MUSDB track names); "
        "run `dannasep synth` or `dannasep fetch`, or fix dataset.root in the config"
    )


def list_tracks(root: str | os.PathLike, split: str = "train",
                sources: Sequence[str] = SOURCES) -> list[TrackFiles]:
    """Tracks of `split` ("train", "valid" or "train+valid") of MUSDB18-HQ's train subset.

    Checks each stem's existence, sample rate and channel count (DataError naming the file).
    """
    import musdb  # imports stempeg; only needed while listing

    root = Path(root)
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if not (root / "train").is_dir():
        raise _missing_tracks_error(root, split)
    try:
        db = musdb.DB(root=str(root), is_wav=True, subsets="train",
                      split=None if split == "train+valid" else split)
    except OSError as exc:  # musdb runs ffprobe on every mixture.wav
        raise DataError(f"{root}: musdb could not list the tracks ({exc}); musdb needs ffprobe "
                        "(ffmpeg) on PATH, and readable track folders") from None
    if not db.tracks:
        raise _missing_tracks_error(root, split)
    tracks = []
    for track in db.tracks:
        folder = Path(track.path).parent
        paths = tuple(str(folder / f"{source}.wav") for source in sources)
        frames = min(_check_stem(Path(p)) for p in paths)
        tracks.append(TrackFiles(track.name, str(folder), paths, frames))
    return tracks


def _check_stem(path: Path) -> int:
    """Frames of a stem wav file after checking its format."""
    if not path.is_file():
        raise DataError(f"{path}: stem file missing; re-create or re-download the dataset")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); re-create or re-download it") from None
    if info.samplerate != SAMPLE_RATE or info.channels != CHANNELS:
        raise DataError(
            f"{path}: {info.samplerate} Hz, {info.channels} channel(s); expected {SAMPLE_RATE} Hz "
            f"with {CHANNELS} channels (MUSDB18-HQ format); convert or re-create it"
        )
    return info.frames


def read_segment(path: str, offset: int, frames: int) -> np.ndarray:
    """Read `frames` frames from `offset` as float32 (channels, frames), zero-padded at the end."""
    try:
        audio = sf.read(path, frames=frames, start=offset, dtype="float32", always_2d=True,
                        fill_value=0.0)[0]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); re-create or re-download it") from None
    return audio.T


class MUSDBTrainDataset(Dataset):
    """Random, augmented training segments.

    Item -> (mixture float32 [channels, samples], targets float32 [sources, channels, samples]),
    where mixture == targets.sum(0) after augmentation.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        segment_seconds: float = 6.0,
        samples_per_track: int = 64,
        random_mix: bool = True,
        gain_range: tuple[float, float] = (0.25, 1.25),
        channel_swap_p: float = 0.5,
        sign_flip_p: float = 0.5,
        seed: int = 0,
        sources: Sequence[str] = SOURCES,
        pitch_tempo: PitchTempo | None = None,
        normalize_per_track: bool = False,
    ) -> None:
        _check_settings(segment_seconds, samples_per_track, gain_range, channel_swap_p,
                        sign_flip_p, seed, sources)
        self.root = Path(root)
        self.split = split
        self.sources = tuple(sources)
        self.segment_frames = max(1, int(round(segment_seconds * SAMPLE_RATE)))
        self.samples_per_track = int(samples_per_track)
        self.random_mix = bool(random_mix)
        self.gain_range = (float(gain_range[0]), float(gain_range[1]))
        self.channel_swap_p = float(channel_swap_p)
        self.sign_flip_p = float(sign_flip_p)
        self.seed = int(seed)
        self.tracks = list_tracks(self.root, split, self.sources)
        self.pitch_tempo = pitch_tempo or PitchTempo()
        # demucs v2 (norm_wav): each track standardised by its mono mixture's mean and std
        self.track_stats = [_mixture_stats(t) for t in self.tracks] if normalize_per_track else None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @classmethod
    def from_config(cls, root: str | os.PathLike, data_cfg: dict, seed: int,
                    split: str = "train") -> "MUSDBTrainDataset":
        """Build from the `data:` section of the validated config."""
        return cls(
            root,
            split=split,
            segment_seconds=data_cfg.get("segment_seconds", 6.0),
            samples_per_track=data_cfg.get("samples_per_track", 64),
            random_mix=data_cfg.get("random_mix", True),
            gain_range=(data_cfg.get("gain_min", 0.25), data_cfg.get("gain_max", 1.25)),
            channel_swap_p=data_cfg.get("channel_swap_p", 0.5),
            sign_flip_p=data_cfg.get("sign_flip_p", 0.5),
            seed=seed,
            pitch_tempo=PitchTempo.from_config(data_cfg),
            normalize_per_track=data_cfg.get("normalize_per_track", False),
        )

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of `epoch`; call before iterating the loader for that epoch."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.tracks) * self.samples_per_track

    def draw(self, index: int) -> tuple[SourceDraw, ...]:
        """The random choices of item `index` in the current epoch, one per source.

        Every draw is made whatever the settings, so that e.g. turning off random_mix leaves
        the gains of an item unchanged.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
        n = len(self.sources)
        random_tracks = rng.integers(len(self.tracks), size=n)
        offset_fractions = rng.random(n)
        gains = rng.uniform(*self.gain_range, size=n)
        swaps = rng.random(n) < self.channel_swap_p
        flips = rng.random(n) < self.sign_flip_p
        semitones, speeds, item = self.pitch_tempo.draw(rng, n)
        if self.random_mix:
            tracks, fractions = random_tracks, offset_fractions
        else:  # one real excerpt: same track and offset for every source
            tracks = np.full(n, index // self.samples_per_track)
            fractions = np.full(n, offset_fractions[0])
        draws = []
        for k in range(n):
            span = max(0, self.tracks[tracks[k]].frames - self.segment_frames)
            offset = min(int(fractions[k] * (span + 1)), span)
            draws.append(SourceDraw(int(tracks[k]), offset, float(gains[k]), bool(swaps[k]),
                                    bool(flips[k]), semitones[k], speeds[k], item))
        return tuple(draws)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        targets = np.empty((len(self.sources), CHANNELS, self.segment_frames), dtype=np.float32)
        mixture = np.zeros((CHANNELS, self.segment_frames), dtype=np.float32)
        for k, d in enumerate(self.draw(index)):
            audio = read_segment(self.tracks[d.track].source_paths[k], d.offset,
                                 self.segment_frames)
            if self.track_stats is not None:
                mean, std = self.track_stats[d.track]
                audio = (audio - np.float32(mean)) / np.float32(std)
            if d.swap:
                audio = audio[::-1]
            audio = self.pitch_tempo.apply(audio, d.semitones, d.speed, d.repitch)
            np.multiply(audio, np.float32(-d.gain if d.flip else d.gain), out=targets[k])
            # numpy, not torch.sum: torch's threaded reduction is 10x slower on a busy CPU
            mixture += targets[k]
        return torch.from_numpy(mixture), torch.from_numpy(targets)


def _mixture_stats(track: TrackFiles) -> tuple[float, float]:
    """Mean and std of a track's mono mixture (demucs v2's per-track normalisation)."""
    mono = read_wav(Path(track.folder) / "mixture.wav", SAMPLE_RATE)[0].mean(axis=1, dtype=np.float64)
    return float(mono.mean()), float(mono.std(ddof=1)) or 1.0


def _check_settings(segment_seconds, samples_per_track, gain_range, channel_swap_p, sign_flip_p,
                    seed, sources) -> None:
    problems = []
    if not segment_seconds > 0:
        problems.append(f"segment_seconds must be > 0 (got {segment_seconds})")
    if samples_per_track < 1:
        problems.append(f"samples_per_track must be >= 1 (got {samples_per_track})")
    if not 0 <= gain_range[0] <= gain_range[1]:
        problems.append(f"need 0 <= gain_min <= gain_max (got {gain_range[0]}, {gain_range[1]})")
    for name, p in (("channel_swap_p", channel_swap_p), ("sign_flip_p", sign_flip_p)):
        if not 0 <= p <= 1:
            problems.append(f"{name} must lie in [0, 1] (got {p})")
    if seed < 0:
        problems.append(f"seed must be >= 0 (got {seed})")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources or len(set(sources)) != len(sources):
        problems.append(f"sources must be distinct names among {', '.join(SOURCES)} (got {list(sources)})")
    if problems:
        raise ConfigError("data settings: " + "; ".join(problems) + " (fix the data: section)")


class MUSDBValidationDataset(Dataset):
    """Whole tracks, no augmentation.

    Item -> (mixture float32 [channels, samples] read from mixture.wav,
             targets float32 [sources, channels, samples], track name).
    """

    def __init__(self, root: str | os.PathLike, split: str = "valid",
                 sources: Sequence[str] = SOURCES) -> None:
        self.root = Path(root)
        self.split = split
        self.sources = tuple(sources)
        self.tracks = list_tracks(self.root, split, self.sources)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        track = self.tracks[index]
        mixture = read_wav(Path(track.folder) / "mixture.wav", SAMPLE_RATE)[0]
        stems = [read_wav(p, SAMPLE_RATE)[0] for p in track.source_paths]
        frames = min([len(mixture)] + [len(s) for s in stems])  # stems may differ by a few frames
        targets = np.stack([s[:frames].T for s in stems])
        return (torch.from_numpy(np.ascontiguousarray(mixture[:frames].T)),
                torch.from_numpy(targets), track.name)


MUSDBValidDataset = MUSDBValidationDataset  # short name used by dannasep.training.loop


def seed_worker(worker_id: int) -> None:
    """Seed global RNGs per worker; items use their own RNG, this only guards other code."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class EpochShuffleSampler(Sampler[int]):
    """Item order drawn from (seed, dataset.epoch) alone.

    torch's RandomSampler advances a generator shared with the DataLoader's worker seeding, so
    its order would depend on the number of workers and on how many epochs ran before (a resumed
    run would see other orders). Datasets without `epoch` count as epoch 0.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.shuffle = shuffle

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        epoch = int(getattr(self.dataset, "epoch", 0))
        # spawn_key keeps these streams apart from the per-item ones seeded by (seed, epoch, i)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch], spawn_key=(1,)))
        return iter(rng.permutation(n).tolist())


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, seed: int = 0,
                shuffle: bool = True, drop_last: bool = False) -> DataLoader:
    """DataLoader whose batches depend only on `seed` and the dataset's epoch.

    Call `dataset.set_epoch(e)` before iterating epoch e (persistent workers see it).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed, shuffle),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),  # only seeds the workers' torch RNG
        drop_last=drop_last,
    )
