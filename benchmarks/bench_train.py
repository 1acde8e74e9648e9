"""Training throughput of the three Danna-Sep models at paper size: optimizer steps per second.

Each system of the paper config (`config/paper.yaml`: arch, kwargs, loss, batch_size, lr,
weight_decay, segment_seconds) is built and trained for a few steps the way
`dannasep.training.loop` does: its loss through `dannasep.training.objectives.compute_loss`
(X-UMX `multidomain_complex_mwf`, U-Net `multidomain_complex`, Demucs `l1`), backward, a real
Adam step, and on CUDA autocast float16 with a GradScaler (as the trainer's `amp`). Batches are
segments of a synthetic track (the data loader has its own benchmark, bench_dataloader.py), so
only the model, loss, backward and optimizer are timed.

Segments default to 1 s so the CPU run takes minutes; `--segment paper` uses the config's
(X-UMX 6 s, U-Net 11.88 s = 512 frames, Demucs 10 s). Batches are the config's per-GPU batch
(X-UMX 4, U-Net 4, Demucs 3) unless `--batch` is given. In the same run, each model's forward pass
alone (no_grad, eval mode, same batch) is timed as an in-run reference: the step/forward ratio
shows what the loss (e.g. the differentiable Wiener filter), backward and Adam add.

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_train.py --help
Writes benchmarks/out/bench_train.{json,md} (or bench_train_<device>.* with --device cuda).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import (OUT_DIR, best_time, context_line, finish_context, markdown_table,
                    max_rss_mib, run_context, save_results, stack_sources, synthetic_stems)
from dannasep.constants import SAMPLE_RATE
from dannasep.config import load_config
from dannasep.models import build_model, count_parameters
from dannasep.training.objectives import compute_loss

FORWARD_REPEATS = 3  # the forward is cheap next to a step: keep the fastest of a few

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
SYSTEMS = ("xumx", "unet", "demucs")  # the Danna-Sep models (baselines: --models)


def training_settings(cfg: dict, system: str) -> dict:
    """What a step needs from the validated config for `system`."""
    model, train = cfg["models"][system], cfg["models"][system]["train"]
    return {"arch": model["arch"], "kwargs": model["kwargs"], "loss": model["loss"],
            "batch": train["batch_size"], "lr": train["lr"], "weight_decay": train["weight_decay"],
            "segment": model["data"]["segment_seconds"],
            "amp": train["amp"]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(batch: int, segment: float, seed: int, device: torch.device):
    """(mix [batch, 2, samples], targets [batch, 4, 2, samples]) cut from a synthetic track."""
    samples = int(round(segment * SAMPLE_RATE))
    sources = stack_sources(synthetic_stems(batch * segment + 0.1, seed=seed))  # [4, n, 2]
    segments = [sources[:, i * samples:(i + 1) * samples].transpose(0, 2, 1) for i in range(batch)]
    targets = torch.from_numpy(np.stack(segments)).to(device)
    return targets.sum(dim=1), targets


def loss_kwargs(precision: str | None) -> dict:
    """Pass the Wiener-filter precision only if given and the trainer's compute_loss takes it."""
    if precision is None:
        return {}
    if "precision" not in inspect.signature(compute_loss).parameters:
        raise SystemExit("--loss-precision: this version of compute_loss has no precision option")
    return {"precision": precision}


def time_training(name: str, settings: dict, segment: float, batch: int, steps: int, warmup: int,
                  device: torch.device, amp: bool, precision: str | None, seed: int,
                  channels_last: bool = False) -> dict:
    """Seconds per optimizer step (mean over `steps` after `warmup`) and forward-only seconds
    (fastest of FORWARD_REPEATS). channels_last: 2-D convolutions in NHWC (faster on tensor cores)."""
    torch.manual_seed(seed)
    model = build_model(settings["arch"], **settings["kwargs"]).to(device)
    channels_last = channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"],
                                 weight_decay=settings["weight_decay"])
    scaler = torch.amp.GradScaler("cuda") if amp else None
    mix, targets = make_batch(batch, segment, seed, device)
    extra = loss_kwargs(precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = compute_loss(settings["loss"], model, model, mix, targets, **extra)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # a host sync, as the trainer's finiteness check

    model.train()
    for _ in range(warmup):
        step()
    losses, step_times = [], []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        losses.append(step())
        synchronize(device)
        step_times.append(time.perf_counter() - start)
    step_seconds = sum(step_times) / steps

    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        def forward():
            return model(mix if model.domain == "t" else mix_magnitude(model, mix))

        def timed_forward():
            forward()
            synchronize(device)

        forward()  # warm-up
        synchronize(device)
        forward_seconds, _ = best_time(timed_forward, FORWARD_REPEATS)

    row = {"model": name, "loss": settings["loss"], "parameters": count_parameters(model),
           "segment_s": segment, "batch": batch, "steps": steps, "warmup": warmup,
           "step_s": step_seconds, "step_times_s": step_times, "steps_per_s": 1 / step_seconds,
           "samples_per_s": batch / step_seconds, "amp": amp,
           "audio_s_per_s": batch * segment / step_seconds,
           "forward_s": forward_seconds, "step_to_forward": step_seconds / forward_seconds,
           "losses": losses, "max_rss_mib": max_rss_mib()}
    if device.type == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def mix_magnitude(model, mix: torch.Tensor) -> torch.Tensor:
    """The TF models' input: |STFT| of the mixture [batch, channels, bins, frames]."""
    from dannasep import dsp

    return dsp.magnitude(dsp.stft(mix, model.n_fft, model.hop_length))


def markdown(result: dict) -> str:
    cuda = result["context"]["device"].startswith("cuda")
    headers = ["model", "loss", "params (M)", "segment (s)", "batch", "s/step", "steps/s",
               "samples/s", "audio s/s", "step / forward"]
    headers += ["peak GPU MiB"] if cuda else ["peak RSS MiB (process)"]
    rows = []
    for r in result["rows"]:
        memory = f"{r['peak_gpu_mib']:.0f}" if cuda else f"{r['max_rss_mib']:.0f}"
        rows.append([r["model"], r["loss"], f"{r['parameters'] / 1e6:.2f}", r["segment_s"],
                     r["batch"], f"{r['step_s']:.2f}", f"{r['steps_per_s']:.3f}",
                     f"{r['samples_per_s']:.2f}", f"{r['audio_s_per_s']:.2f}",
                     f"{r['step_to_forward']:.1f}x", memory])
    align = [False, False] + [True] * (len(headers) - 2)
    lines = [f"# Training throughput of the systems in {Path(result['config']).name}", "",
             context_line(result["context"]),
             f"AMP (float16 autocast + GradScaler, where the system's train.amp is true): "
             f"{result['amp']}; Wiener-filter precision: "
             f"{result['loss_precision'] or 'trainer default'}; {result['rows'][0]['warmup']} "
             f"warm-up step(s), then the mean of {result['rows'][0]['steps']} timed steps. "
             "step / forward: the mean training step over the fastest of "
             f"{FORWARD_REPEATS} no-grad forwards of the bare model (in-run reference). "
             "Peak RSS is the process high-water mark so far (monotonic across rows).", ""]
    lines += markdown_table(headers, rows, align)
    return "\n".join(lines) + "\n"


def parse_segment(value: str) -> str | float:
    if value == "paper":
        return value
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--segment must be positive seconds or 'paper'")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG,
                        help="pipeline config with the systems' settings (default: config/paper.yaml)")
    parser.add_argument("--models", nargs="+", default=list(SYSTEMS),
                        help="systems of the config (default: xumx unet demucs)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--channels-last", action="store_true",
                        help="2-D convolution models (the U-Net) in channels-last memory format")
    parser.add_argument("--segment", type=parse_segment, default=1.0,
                        help="seconds, or 'paper' for each system's configured segment (default 1)")
    parser.add_argument("--batch", type=int,
                        help="segments a step (default: the system's configured batch_size)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: torch's default)")
    parser.add_argument("--no-amp", action="store_true",
                        help="CUDA: float32 even for systems configured with amp: true")
    parser.add_argument("--loss-precision", choices=("float32", "float64"),
                        help="Wiener-filter precision in the TF losses, if the trainer supports it "
                             "(default: the trainer's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        parser.error("--steps and --batch must be >= 1, --warmup >= 0")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    from dannasep.config import effective_config

    cfg = effective_config([str(args.config)])  # as Snakemake merges it
    unknown = [m for m in args.models if m not in cfg["models"]]
    if unknown:
        parser.error(f"--models {unknown}: not in {args.config} ({', '.join(cfg['models'])})")
    torch.set_num_threads(args.threads)
    amp = device.type == "cuda" and not args.no_amp

    context = run_context(args.threads, str(device))
    print(f"device {device}, threads {args.threads}, amp {amp}, segment {args.segment}, "
          f"batch {args.batch or 'as configured'}, {args.warmup} warm-up + {args.steps} timed steps",
          flush=True)
    rows = []
    for name in args.models:
        settings = training_settings(cfg, name)
        segment = settings["segment"] if args.segment == "paper" else args.segment
        batch = args.batch or settings["batch"]
        print(f"{name}: loss {settings['loss']}, segment {segment} s, batch {batch} ...", flush=True)
        row = time_training(name, settings, segment, batch, args.steps, args.warmup, device,
                            amp and settings["amp"], args.loss_precision, args.seed,
                            channels_last=args.channels_last and device.type == "cuda")
        rows.append(row)
        print(f"  {row['step_s']:.2f} s/step = {row['steps_per_s']:.3f} steps/s, "
              f"{row['samples_per_s']:.2f} samples/s; forward alone {row['forward_s']:.2f} s",
              flush=True)

    result = {"context": finish_context(context), "config": str(args.config), "amp": amp,
              "loss_precision": args.loss_precision, "rows": rows}
    table = markdown(result)
    print(table)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    save_results(args.out, f"bench_train{suffix}", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
