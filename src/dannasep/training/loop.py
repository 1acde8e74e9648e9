"""The training loop shared by every model.

Adam with MultiStepLR or ReduceLROnPlateau from the config, mixed precision on GPU, gradient
accumulation and clipping, optional EMA of weights, validation with the fast exact SDR, a CSV of
losses and validation SDR per epoch, a progress bar, seeds, DDP (torchrun or srun). Resumable:
the resume state is written atomically every `checkpoint_every` optimizer steps and at each
epoch end; a killed job re-run with the same settings continues from it and reaches the same
weights as an uninterrupted run (on CPU, where kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..constants import SOURCES
from ..errors import ConfigError
from ..io import atomic_path
from ..training import distributed
from .objectives import compute_loss
from .sampler import ResumableSampler
from .state import config_fingerprint, load_state, save_state
from .validation import validate

log = logging.getLogger(__name__)


class _Preemption:
    """SIGUSR1 (SLURM's warning before the time limit / preemption) or SIGTERM: save and stop."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.signal = signum


def _device(gpus: int, info: distributed.DistInfo) -> torch.device:
    if gpus > 0 and torch.cuda.is_available():
        # SLURM may show each task only its own GPU: index modulo the visible devices.
        index = info.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _scheduler(optimizer, sched_cfg: dict):
    kind = sched_cfg["kind"]
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, sched_cfg["milestones"], sched_cfg["gamma"])
    if kind == "plateau":  # on the validation SDR: higher is better
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=sched_cfg["gamma"],
                                                          patience=sched_cfg["patience"])
    return None


def _write_curve(path: Path, history: list[dict]) -> None:
    """Write the whole training curve atomically from the history kept in the resume state."""
    fields = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def _init_weights(model, system_cfg: dict, pretrained: str | None) -> None:
    if system_cfg.get("init") != "official_xumx":
        return
    if not pretrained:
        raise ConfigError("init: official_xumx needs the official weights file (--pretrained)")
    from ..models.xumx_import import load_official_xumx

    official = load_official_xumx(pretrained)
    if official.kwargs != model.kwargs:
        raise ConfigError(f"{pretrained}: the official X-UMX has kwargs {official.kwargs}, the configured model "
                          f"{model.kwargs}; use the paper's X-UMX kwargs with init: official_xumx")
    model.load_state_dict(official.state_dict())
    log.info("initialised from the official X-UMX weights %s", pretrained)


def train(*, cfg: dict, system: str, root: str | Path, out_dir: str | Path, pointer: str | Path,
          curve_csv: str | Path, manifest_hash: str | None, pretrained: str | None = None,
          progress: bool = True) -> Path | None:
    """Train `system` as configured; return the final checkpoint path (None on non-main ranks)."""
    from ..data.dataset import MUSDBTrainDataset, MUSDBValidDataset
    from ..models import build_model

    system_cfg = cfg["models"][system]
    tcfg = system_cfg["train"]
    data_cfg = dict(cfg["data"])
    for key in ("segment_seconds", "samples_per_track"):
        if tcfg[key] is not None:
            data_cfg[key] = tcfg[key]
    out_dir, curve_csv = Path(out_dir), Path(curve_csv)
    out_dir.mkdir(parents=True, exist_ok=True)

    info = distributed.detect()
    device = _device(tcfg["gpus"], info)
    distributed.init(info, device)
    torch.set_num_threads(tcfg["threads"])
    seed = tcfg["seed"]
    torch.manual_seed(seed + info.rank)

    dataset = MUSDBTrainDataset.from_config(root, data_cfg, seed=seed)
    sampler = ResumableSampler(len(dataset), seed, info.rank, info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=tcfg["batch_size"], sampler=sampler, drop_last=True,
        num_workers=data_cfg["num_workers"], persistent_workers=False,
        pin_memory=device.type == "cuda",
        # Its own generator: the loader must not draw from the global RNG (dropout), or a resumed
        # run would see a shifted random stream.
        generator=torch.Generator().manual_seed(seed))
    valid_set = MUSDBValidDataset(root) if info.is_main else None

    model = build_model(system_cfg["arch"], **system_cfg["kwargs"])
    _init_weights(model, system_cfg, pretrained)
    model.to(device)
    if info.enabled and tcfg["sync_batchnorm"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    core = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(core.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"],
                                 betas=tuple(tcfg["adam_betas"]))
    scheduler = _scheduler(optimizer, tcfg["scheduler"])
    use_amp = tcfg["amp"] and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    ema = None
    if tcfg["ema_decay"]:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(tcfg["ema_decay"]), use_buffers=True)

    fingerprint = config_fingerprint(system_cfg, data_cfg)
    state_path = out_dir / "last.pt"
    start_epoch, start_batch, step, history = 0, 0, 0, []
    state = load_state(state_path, fingerprint, set_aside=info.is_main)
    distributed.barrier(info)
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, start_batch, step, history = (state["epoch"], state["batch_in_epoch"], state["step"],
                                                   state["history"])
        log.info("resuming %s from %s: epoch %d, batch %d, step %d", system, state_path, start_epoch,
                 start_batch, step)

    accum, max_steps = tcfg["accumulation"], tcfg["max_steps"]
    batches_per_epoch = len(dataset) // info.world_size // tcfg["batch_size"]
    if batches_per_epoch < accum:
        raise ConfigError(f"models.{system}.train: an epoch has {batches_per_epoch} batches, fewer than "
                          f"accumulation={accum}; lower batch_size/accumulation or raise samples_per_track")
    preempt = _Preemption()

    def snapshot(epoch, batch_in_epoch):
        if info.is_main:
            save_state(state_path, model=core, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       ema=ema, epoch=epoch, batch_in_epoch=batch_in_epoch, step=step, history=history,
                       fingerprint=fingerprint)

    finished = max_steps is not None and step >= max_steps
    epoch = start_epoch
    while epoch < tcfg["epochs"] and not finished:
        dataset.set_epoch(epoch)
        skip = start_batch * tcfg["batch_size"] if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip=skip)
        model.train()
        t0, losses = time.time(), []
        first_batch = start_batch if epoch == start_epoch else 0
        bar = tqdm(loader, total=batches_per_epoch - first_batch, disable=not (progress and info.is_main),
                   desc=f"{system} epoch {epoch + 1}/{tcfg['epochs']}", leave=False)
        batch_in_epoch = first_batch
        for mix, targets in bar:
            mix, targets = mix.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            boundary = (batch_in_epoch + 1) % accum == 0
            sync_ctx = model.no_sync() if info.enabled and not boundary else contextlib.nullcontext()
            with sync_ctx:
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss = compute_loss(system_cfg["loss"], model, core, mix, targets, tcfg["loss_precision"])
                scaled = loss / accum
                (scaler.scale(scaled) if scaler else scaled).backward()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"{system}: loss is {loss.item()} at step {step}; lower the lr")
            losses.append(loss.item())
            batch_in_epoch += 1
            if boundary:
                if scaler:
                    scaler.unscale_(optimizer)
                if tcfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(core.parameters(), tcfg["grad_clip"])
                (scaler.step(optimizer) if scaler else optimizer.step())
                if scaler:
                    scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update_parameters(core)
                step += 1
                bar.set_postfix(loss=f"{loss.item():.4f}", step=step)
                if step % tcfg["checkpoint_every"] == 0:
                    snapshot(epoch, batch_in_epoch)
                if max_steps is not None and step >= max_steps:
                    finished = True
            if distributed.any_flag(preempt.signal is not None, info):
                snapshot(epoch, batch_in_epoch)
                distributed.barrier(info)
                _requeue_or_exit(preempt.signal or signal.SIGUSR1, requeue=info.is_main)
            if finished:
                break
        bar.close()
        epoch_done = batch_in_epoch >= batches_per_epoch - batches_per_epoch % accum
        train_loss = distributed.all_reduce_mean(sum(losses) / max(len(losses), 1), info)
        row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)}
        if info.is_main and ((epoch + 1) % tcfg["valid_every"] == 0 or finished or epoch + 1 == tcfg["epochs"]):
            scores = validate(ema.module if ema is not None else core, valid_set, system_cfg, device,
                              max_tracks=tcfg["valid_tracks"])
            row.update({f"valid_sdr_{s}": scores[s] for s in SOURCES})
            row["valid_sdr_avg"] = scores["avg"]
            row["trivial_sdr_avg"] = scores["trivial_avg"]
            log.info("%s epoch %d: loss %.4f, valid SDR %.2f dB (mixture/4: %.2f dB)", system, epoch + 1,
                     train_loss, scores["avg"], scores["trivial_avg"])
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(scores["avg"] if math.isfinite(scores["avg"]) else -1e9)
        if info.is_main:
            history.append(row)
            _write_curve(curve_csv, history)
        if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
        if epoch_done:
            epoch, start_batch = epoch + 1, 0
            snapshot(epoch, 0)
        else:  # stopped by max_steps mid-epoch
            snapshot(epoch, batch_in_epoch)
        start_epoch = epoch

    final = None
    if info.is_main:
        weights = (ema.module if ema is not None else core).state_dict()
        last = history[-1] if history else {}
        scores = {k: v for k, v in last.items() if k.startswith(("valid_sdr", "trivial_sdr"))}
        record = ckpt.build_record(
            system=system, model_name=system_cfg["arch"], model_class=type(core).__name__,
            model_kwargs=system_cfg["kwargs"], state_dict=weights,
            train_config={"system": system_cfg, "data": data_cfg}, seed=seed, manifest_hash=manifest_hash,
            scores=scores, training={"epochs": epoch, "steps": step, "world_size": info.world_size,
                                     "device": device.type, "history": history})
        final = ckpt.save_final(record, out_dir, pointer)
        log.info("wrote %s", final)
    distributed.barrier(info)
    distributed.cleanup(info)
    return final


def _requeue_or_exit(signum: int, requeue: bool = True) -> None:
    """On SLURM, requeue this job (it resumes from the state just saved); otherwise exit.

    Under DDP only the main rank requeues, after every rank has seen the state saved.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if job and requeue and signum == signal.SIGUSR1:
        log.warning("preemption signal: state saved, requeueing SLURM job %s", job)
        subprocess.run(["scontrol", "requeue", job], check=False)
    raise SystemExit(143)
