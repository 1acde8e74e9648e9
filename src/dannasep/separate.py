"""Full-track separation in overlapping chunks with a cross-fade, at bounded memory.

The mixture is read from disk chunk by chunk and the estimates are written as they become
final, so peak memory depends on the chunk length, not on the track length. Spectrogram models
run through `Separator` (STFT -> model -> multichannel Wiener filter -> ISTFT) on each chunk;
waveform models (Demucs) run directly, optionally with the random-shift trick.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import torch

from .constants import SAMPLE_RATE, SOURCES
from .errors import DataError

log = logging.getLogger(__name__)


def crossfade_window(length: int, fade: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Weights of one chunk: linear ramps of `fade` samples where neighbours overlap."""
    w = np.ones(length, dtype=np.float64)
    if fade > 0:
        ramp = (np.arange(fade, dtype=np.float64) + 0.5) / fade
        if fade_in:
            w[:fade] = ramp
        if fade_out:
            w[-fade:] = ramp[::-1]
    return w


def overlap_add(read: Callable[[int, int], np.ndarray], n_samples: int, infer: Callable[[np.ndarray], np.ndarray],
                chunk: int, overlap: int) -> Iterator[np.ndarray]:
    """Yield the separated signal in consecutive final blocks.

    read(start, stop) -> mixture [samples, channels] (zero-padded past the end);
    infer(mix [samples, channels]) -> estimates [sources, samples, channels].
    Each yielded block is [sources, block_samples, channels]; blocks concatenate to n_samples.
    """
    chunk = min(chunk, max(n_samples, 1))
    overlap = min(overlap, chunk // 2)
    hop = chunk - overlap
    acc = norm = None
    start = 0
    while start < n_samples:
        stop = min(start + chunk, n_samples)
        est = infer(read(start, stop))
        length = stop - start
        w = crossfade_window(length, overlap, fade_in=start > 0, fade_out=stop < n_samples)
        if acc is None:
            acc = np.zeros((est.shape[0], chunk, est.shape[2]), dtype=np.float64)
            norm = np.zeros(chunk, dtype=np.float64)
        acc[:, :length] += est[:, :length] * w[None, :, None]
        norm[:length] += w
        final = length if stop >= n_samples else hop
        yield (acc[:, :final] / norm[None, :final, None]).astype(np.float32)
        acc = np.concatenate([acc[:, final:], np.zeros_like(acc[:, :final])], axis=1)
        norm = np.concatenate([norm[final:], np.zeros(final)])
        start += hop if stop < n_samples else length


class ChunkInference:
    """Calls the model on one chunk: [samples, channels] numpy -> [sources, samples, channels]."""

    def __init__(self, model: torch.nn.Module, sep_cfg: dict, device: torch.device | str = "cpu", seed: int = 0):
        from .separator import Separator

        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.is_tf = getattr(model, "domain", "t") == "tf"
        self.separator = Separator(model, wiener_iterations=sep_cfg.get("wiener_iterations", 1)) if self.is_tf else model
        self.shifts = 0 if self.is_tf else sep_cfg.get("shifts", 0)
        self.clamp = sep_cfg.get("clamp")
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, mix: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(mix.T)).float().unsqueeze(0).to(self.device)
        if self.shifts:
            est = self._with_shifts(x)
        else:
            est = self.separator(x)
        est = est[0].float()
        if self.clamp:
            est = est.clamp(-self.clamp, self.clamp)
        return est.permute(0, 2, 1).cpu().numpy()

    def _with_shifts(self, x: torch.Tensor) -> torch.Tensor:
        """Demucs's shift trick: average over random sub-second shifts of the input."""
        max_shift = SAMPLE_RATE // 2
        padded = torch.nn.functional.pad(x, (max_shift, max_shift))
        out = 0
        for _ in range(self.shifts):
            offset = int(self.rng.integers(0, max_shift))
            shifted = padded[..., offset: offset + x.shape[-1] + max_shift]
            est = self.separator(shifted)
            out = out + est[..., max_shift - offset: max_shift - offset + x.shape[-1]]
        return out / self.shifts


def separate_array(model: torch.nn.Module, mix: np.ndarray, sep_cfg: dict, device="cpu") -> np.ndarray:
    """Separate an in-memory mixture [samples, channels] -> [sources, samples, channels]."""
    infer = ChunkInference(model, sep_cfg, device)
    chunk = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    overlap = int(chunk * sep_cfg.get("overlap", 0.25))

    def read(start, stop):
        return mix[start:stop]

    return np.concatenate(list(overlap_add(read, len(mix), infer, chunk, overlap)), axis=1)


def separate_file(model: torch.nn.Module, mixture: str | Path, out_dir: str | Path, sep_cfg: dict,
                  device="cpu", sources=SOURCES, progress=None) -> list[Path]:
    """Stream `mixture` through the model and write `<out_dir>/<source>.wav` (float32 wav).

    Each output is written to a temporary file and renamed only when complete.
    """
    from .io import atomic_path

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
        from .audio import open_wav_writer

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


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt, or the <system>.json pointer naming it")
    p.add_argument("--mixture", required=True, help="mixture.wav of one track (any length)")
    p.add_argument("--out-dir", required=True, help="folder for <source>.wav estimates and provenance.json")
    p.add_argument("--config", help="pipeline config: separation settings of --system (else the defaults)")
    p.add_argument("--system", help="system name under models: (default: the checkpoint's)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _cuda() -> bool:
    return torch.cuda.is_available()


def run(args) -> int:
    from tqdm import tqdm

    from .checkpoint import load_checkpoint, load_model, resolve_pointer, sha256_file
    from .config import load_config, validate_config
    from .io import write_json
    from .provenance_info import code_state, package_versions

    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint)
    pointer = path if path.suffix == ".json" else None
    if pointer is not None:
        path = resolve_pointer(pointer)
    record = load_checkpoint(path)
    system = args.system or record["system"]
    if args.config:
        cfg = load_config(args.config)
        sep_cfg = cfg["models"][system]["separate"]
    else:
        sep_cfg = validate_config({"models": {system: {"arch": record["model"]["name"], "loss": "l1"}}})[
            "models"][system]["separate"]
    model = load_model(record, args.device)
    n_frames = sf.info(str(args.mixture)).frames
    with tqdm(total=n_frames, unit="sample", unit_scale=True, desc=f"{system}: {Path(args.mixture).parent.name}",
              mininterval=5) as bar:
        outputs = separate_file(model, args.mixture, args.out_dir, sep_cfg, device=args.device, progress=bar)
    write_json(Path(args.out_dir) / "provenance.json", {
        "system": system,
        "checkpoint": {"path": str(path), "sha256": sha256_file(path), "pointer": str(pointer) if pointer else None},
        "mixture": {"path": str(args.mixture), "sha256": sha256_file(args.mixture)},
        "separation": sep_cfg,
        "estimates": {p.name: sha256_file(p) for p in outputs},
        "code": code_state(),
        "versions": package_versions(),
    })
    return 0
