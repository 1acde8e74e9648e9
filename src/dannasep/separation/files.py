"""Whole-track separation from a mixture file to one wav per source, streamed chunk by chunk;
every output is written to a temporary file and renamed only when all are complete.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError
from .chunking import overlap_add
from .inference import ChunkInference


def separate_file(model: torch.nn.Module, mixture: str | Path, out_dir: str | Path, sep_cfg: dict,
                  device="cpu", sources=SOURCES, progress=None) -> list[Path]:
    """Stream `mixture` through the model and write `<out_dir>/<source>.wav` (float32 wav).

    Each output is written to a temporary file and renamed only when complete.
    """

    mixture, out_dir = Path(mixture), Path(out_dir)
    try:
        info = sf.info(str(mixture))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{mixture}: cannot read the mixture ({exc})") from None
    if info.samplerate != SAMPLE_RATE:
        raise DataError(f"{mixture}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE} Hz")
    infer = ChunkInference(model, sep_cfg, device)
    chunk = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    overlap = int(chunk * sep_cfg.get("overlap", 0.25))
    out_dir.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(mixture)) as src, _AtomicWriters(out_dir, sources, info.channels) as writers:
        def read(start, stop):
            src.seek(start)
            return src.read(stop - start, dtype="float32", always_2d=True)

        for block in overlap_add(read, info.frames, infer, chunk, overlap):
            for i, writer in enumerate(writers.files):
                writer.write(block[i])
            if progress is not None:
                progress.update(block.shape[1])
    return [out_dir / f"{s}.wav" for s in sources]


class _AtomicWriters:
    """One open temp wav per source; all renamed into place only if every write succeeded."""

    def __init__(self, out_dir: Path, sources, channels: int):
        self.targets = [out_dir / f"{s}.wav" for s in sources]
        self.temps = [out_dir / f".{s}.wav.tmp.wav" for s in sources]
        from ..audio import open_wav_writer

        self.files = [open_wav_writer(t, SAMPLE_RATE, channels, subtype="FLOAT") for t in self.temps]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        for f in self.files:
            f.close()
        for tmp, target in zip(self.temps, self.targets):
            if exc_type is None:
                tmp.replace(target)
            else:
                tmp.unlink(missing_ok=True)
        return False

