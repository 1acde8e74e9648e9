"""The file front end: any audio in, the models' 44.1 kHz stereo through, the input's format out.

Input: whatever libsndfile reads (wav, flac, ogg, mp3, aiff, ...) directly, anything else
(m4a/aac, opus, wma, video files) through ffmpeg; any sample rate, resampled to 44.1 kHz with
soxr (streamed, so a long file is never loaded whole); mono duplicated to stereo; more than
two channels refused. A 44.1 kHz file libsndfile reads is used in place, anything else is
first converted to a float32 wav in the scratch folder.

Output (`StemWriters`): one file per source at the input's sample rate (soxr back), channel
count (the two channels averaged for a mono input) and length, written to hidden temporary
files that are renamed into place together once all are complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from ..audio import open_wav_writer
from ..constants import CHANNELS, SAMPLE_RATE
from ..errors import DataError
from ..io import atomic_path
from .signal import Signal

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4",
                    ".aif", ".aiff", ".wma", ".webm", ".mka")
# --format: (extension, libsndfile format, subtype, clip to [-1, 1])
FORMATS = {"wav16": (".wav", "WAV", "PCM_16", True),
           "wav32": (".wav", "WAV", "FLOAT", False),
           "flac": (".flac", "FLAC", "PCM_24", True)}
_BLOCK = SAMPLE_RATE * 10  # samples converted at a time


@dataclass(frozen=True)
class AudioInfo:
    """What the stems must match: the input's sample rate, channel count and length."""

    path: Path
    samplerate: int
    channels: int
    frames: int
    decoder: str  # "libsndfile" or "ffmpeg"


def probe(path: str | Path) -> AudioInfo:
    """The input's rate, channels and length; DataError (one line) if nothing can read it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
        if info.frames > 0:
            return _checked(AudioInfo(path, info.samplerate, info.channels, info.frames, "libsndfile"))
        problem = "libsndfile: no samples"
    except (sf.LibsndfileError, RuntimeError) as exc:
        problem = f"libsndfile: {_first_line(exc)}"
    if shutil.which("ffprobe") is None:
        raise DataError(f"{path}: cannot read audio ({problem}; ffmpeg, which reads other formats, "
                        "is not installed: apt-get install ffmpeg)")
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                           "stream=sample_rate,channels", "-of", "json", str(path)],
                          capture_output=True, text=True)
    streams = json.loads(done.stdout or "{}").get("streams", []) if done.returncode == 0 else []
    if not streams:
        reason = _first_line(done.stderr) or "no audio stream"
        raise DataError(f"{path}: cannot read audio: not a format libsndfile or ffmpeg can decode "
                        f"({problem}; ffmpeg: {reason})")
    stream = streams[0]
    # ffmpeg gives the length only by decoding; `open_input` fills it in.
    return _checked(AudioInfo(path, int(stream["sample_rate"]), int(stream["channels"]), -1, "ffmpeg"))


def _checked(info: AudioInfo) -> AudioInfo:
    if info.channels > CHANNELS:
        raise DataError(f"{info.path}: {info.channels} channels; only mono and stereo can be "
                        f"separated (down-mix it first, e.g. ffmpeg -i IN -ac 2 OUT.wav)")
    return info


def _first_line(text) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def open_input(info: AudioInfo, scratch: Path) -> Iterator[tuple[Signal, AudioInfo]]:
    """The input as a 44.1 kHz stereo `Signal` (and its info, with the length filled in)."""
    if info.decoder == "libsndfile" and info.samplerate == SAMPLE_RATE and _seekable(info.path):
        with sf.SoundFile(str(info.path)) as handle:
            yield _stereo(Signal.from_soundfile(handle)), info
        return
    converted = scratch / "input.wav"
    frames = _convert(info, converted)
    info = AudioInfo(info.path, info.samplerate, info.channels, frames, info.decoder)
    if frames == 0:
        raise DataError(f"{info.path}: no audio samples decoded")
    with sf.SoundFile(str(converted)) as handle:
        yield _stereo(Signal.from_soundfile(handle)), info


def _seekable(path: Path) -> bool:
    """Formats read in place (sample-exact seeks); compressed ones are converted first."""
    return sf.info(str(path)).format in ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF")


def _stereo(signal: Signal) -> Signal:
    if signal.channels == CHANNELS:
        return signal
    return Signal(lambda a, b: np.repeat(signal.read(a, b), CHANNELS, axis=1), signal.length, CHANNELS)


def _decoded_blocks(info: AudioInfo) -> Iterator[np.ndarray]:
    """The input's samples, float32 [n, channels], block by block, at its own rate."""
    if info.decoder == "libsndfile":
        with sf.SoundFile(str(info.path)) as handle:
            while True:
                block = handle.read(_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
    # A MUSDB18 .stem.mp4: its first stream (the mixture) as musdb reads it (stempeg: 16-bit
    # PCM / 2^15), so estimates are of exactly the audio the paper's evaluation separated.
    stem = str(info.path).endswith(".stem.mp4")
    sample, width = ("s16le", 2) if stem else ("f32le", 4)
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(info.path), "-map", "0:a:0",
               "-f", sample, "-acodec", f"pcm_{sample}", "-"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        frame_bytes, leftover = width * info.channels, b""
        while data := proc.stdout.read(_BLOCK * frame_bytes):
            data = leftover + data  # a pipe read may end inside a frame
            usable = len(data) // frame_bytes * frame_bytes
            leftover = data[usable:]
            if usable and stem:
                pcm = np.frombuffer(data[:usable], dtype=np.int16).reshape(-1, info.channels)
                yield pcm.astype(np.float32) / np.float32(2**15)
            elif usable:
                yield np.frombuffer(data[:usable], dtype=np.float32).reshape(-1, info.channels)
        error = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise DataError(f"{info.path}: ffmpeg could not decode it ({_first_line(error)})")


def _convert(info: AudioInfo, target: Path) -> int:
    """Decode and resample to a float32 wav at 44.1 kHz (channels kept); return the input's
    length in frames at its own rate."""
    import soxr

    resampler = (soxr.ResampleStream(info.samplerate, SAMPLE_RATE, info.channels, dtype="float32")
                 if info.samplerate != SAMPLE_RATE else None)
    frames = 0
    with open_wav_writer(target, SAMPLE_RATE, info.channels, subtype="FLOAT") as out:
        for block in _decoded_blocks(info):
            frames += len(block)
            out.write(resampler.resample_chunk(block) if resampler else block)
        if resampler:
            out.write(resampler.resample_chunk(np.zeros((0, info.channels), np.float32), last=True))
    return frames


class StemWriters:
    """One output file per source, converted back to the input's rate, channels and length.

    Use as a context manager: the files are renamed into place only if the block completes.
    """

    def __init__(self, out_dir: Path, sources, info: AudioInfo, fmt: str = "wav32"):
        if fmt not in FORMATS:
            raise DataError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.extension, self._format, self._subtype, self._clip = FORMATS[fmt]
        self.info, self.sources = info, tuple(sources)
        self.paths = [Path(out_dir) / f"{s}{self.extension}" for s in self.sources]
        self._written = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        import soxr

        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.paths)
        stack = self._stack.__enter__()
        temps = [stack.enter_context(atomic_path(p)) for p in self.paths]
        self._files = [stack.enter_context(self._open(t)) for t in temps]
        rate = self.info.samplerate
        self._resamplers = ([soxr.ResampleStream(SAMPLE_RATE, rate, self.info.channels, dtype="float32")
                             for _ in self.sources] if rate != SAMPLE_RATE else None)
        return self

    def _open(self, path: Path) -> sf.SoundFile:
        if self._format == "WAV":
            return open_wav_writer(path, self.info.samplerate, self.info.channels, self._subtype)
        return sf.SoundFile(str(path), "w", self.info.samplerate, self.info.channels,
                            subtype=self._subtype, format=self._format)

    def write(self, block: np.ndarray, last: bool = False) -> None:
        """block: [sources, samples, 2] at 44.1 kHz, the next samples of every source."""
        if self.info.channels == 1:
            block = block.mean(axis=2, keepdims=True, dtype=np.float32)
        outputs = [np.ascontiguousarray(audio) for audio in block]
        if self._resamplers is not None:
            outputs = [r.resample_chunk(a, last=last) for r, a in zip(self._resamplers, outputs)]
        keep = max(min(len(outputs[0]), self.info.frames - self._written), 0)
        for handle, audio in zip(self._files, outputs):
            handle.write(np.clip(audio[:keep], -1.0, 1.0) if self._clip else audio[:keep])
        self._written += keep

    def _finish(self) -> None:
        if self._resamplers is not None:
            self.write(np.zeros((len(self.sources), 0, CHANNELS), np.float32), last=True)
        missing = self.info.frames - self._written  # resampling may end a sample or two short
        if missing > 0:
            self.write_silence(missing)

    def write_silence(self, frames: int) -> None:
        for handle in self._files:
            handle.write(np.zeros((frames, self.info.channels), np.float32))
        self._written += frames

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._finish()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
        return self._stack.__exit__(exc_type, exc, tb)


def remove_stale_temporaries(paths) -> None:
    """Delete what a killed run left of these files' temporaries (`.<name>.*.tmp<ext>`, and
    `.<name>.tmp<ext>` of earlier versions)."""
    for path in paths:
        for pattern in (f".{path.name}.*.tmp{path.suffix}", f".{path.name}.tmp{path.suffix}"):
            for stale in path.parent.glob(pattern):
                stale.unlink(missing_ok=True)
