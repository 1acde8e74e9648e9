"""The training loop shared by every model.

Adam with the configured schedule (schedule.py), optional mixed precision on GPU (opt-in, as
the authors used it for Demucs only), gradient accumulation and clipping, optional EMA of
weights, validation with the fast exact SDR and, where a rule needs it, the validation loss; the
checkpoint keeps the weights its selection rule picks (selection.py); a CSV of losses and
validation scores per epoch, a progress bar, seeds, DDP (torchrun or srun).

Accumulation counts micro-batches over the whole run, as the authors' trainer does (ignite's
global iteration): an optimizer step follows every `accumulation`-th micro-batch, also across an
epoch's end. The resume state is written only at optimizer-step boundaries (every
`checkpoint_every` steps, at the first boundary after each epoch, on preemption, and at the
end), where no gradient is pending, so a killed job re-run with the same settings reaches the
same weights as an uninterrupted run for any accumulation (on CPU, where kernels are
deterministic).
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
from ..provenance.code_deps import files_hash, system_code
from ..provenance.code_state import code_state
from ..training import distributed
from .init import init_weights
from .objectives import compute_loss
from .params import build_optimizer, freeze, init_from_checkpoint, keep_frozen
from .sampler import ResumableSampler
from .schedule import build_scheduler, is_plateau, plateau_value
from .selection import BestWeights
from .state import config_fingerprint, load_state, save_state
from .validation import validate, validation_loss

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


def _write_curve(path: Path, history: list[dict]) -> None:
    """Write the whole training curve atomically from the history kept in the resume state."""
    fields = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def _needs_valid_loss(tcfg: dict) -> bool:
    sched = tcfg["scheduler"]
    return tcfg["select"] == "best_valid_loss" or (sched["kind"] == "plateau" and sched.get("monitor") == "valid_loss")


def train(*, cfg: dict, system: str, root: str | Path, out_dir: str | Path, pointer: str | Path,
          curve_csv: str | Path, manifest_hash: str | None, pretrained: str | None = None,
          init_checkpoint: str | None = None, progress: bool = True) -> Path | None:
    """Train `system` as configured; return the final checkpoint path (None on non-main ranks).

    `init_checkpoint`: the final checkpoint (or pointer) of the system `init_system` names.
    """
    from ..data.dataset import MUSDBTrainDataset, MUSDBValidDataset
    from ..models import build_model

    started_code = code_state()  # before anything runs: a `git pull` during training is not this run
    system_cfg = cfg["models"][system]
    tcfg = system_cfg["train"]
    data_cfg = system_cfg["data"]  # the shared data: with this system's keys on top (config.py)
    out_dir, curve_csv = Path(out_dir), Path(curve_csv)
    out_dir.mkdir(parents=True, exist_ok=True)

    info = distributed.detect()
    device = _device(tcfg["gpus"], info)
    distributed.init(info, device)
    torch.set_num_threads(tcfg["threads"])
    seed = tcfg["seed"]
    torch.manual_seed(seed + info.rank)

    dataset = MUSDBTrainDataset.from_config(root, data_cfg, seed=seed, split=data_cfg["tracks"])
    sampler = ResumableSampler(len(dataset), seed, info.rank, info.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=tcfg["batch_size"], sampler=sampler, drop_last=True,
        num_workers=data_cfg["num_workers"], persistent_workers=False,
        pin_memory=device.type == "cuda",
        # Its own generator: the loader must not draw from the global RNG (dropout), or a resumed
        # run would see a shifted random stream.
        generator=torch.Generator().manual_seed(seed))
    valid_set = MUSDBValidDataset(root) if info.is_main else None
    saw_valid = data_cfg["tracks"] == "train+valid"  # validation tracks were training data too

    model = build_model(system_cfg["arch"], **system_cfg["kwargs"])
    init_record = init_weights(model, system_cfg, pretrained, dataset.tracks)
    if bool(system_cfg.get("init_system")) != bool(init_checkpoint):
        raise ConfigError(f"models.{system}.init_system is {system_cfg.get('init_system')!r}: pass its "
                          f"checkpoint with --init-checkpoint exactly when it is set")
    if init_checkpoint:
        init_record = init_from_checkpoint(model, init_checkpoint, tcfg["freeze"])
    frozen = freeze(model, tcfg["freeze"])
    model.to(device)
    if info.enabled and tcfg["sync_batchnorm"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    core = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(core, tcfg)
    scheduler = build_scheduler(optimizer, tcfg["scheduler"])
    use_amp = tcfg["amp"] and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    ema = None
    if tcfg["ema_decay"]:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(tcfg["ema_decay"]), use_buffers=True)
    best = BestWeights(tcfg["select"])

    code_hash = files_hash(system_code(cfg, system, with_workflow=False))
    fingerprint = config_fingerprint(system_cfg, data_cfg, {"manifest": manifest_hash, "code": code_hash,
                                                            "init": (init_record or {}).get("sha256")})
    state_path = out_dir / "last.pt"
    start_epoch, start_batch, step, history, runs = 0, 0, 0, [], []
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
        best.load_state_dict(state.get("best"))
        torch.set_rng_state(state["torch_rng"])
        start_epoch, start_batch, step, history = (state["epoch"], state["batch_in_epoch"], state["step"],
                                                   state["history"])
        runs = state.get("runs", [])
        init_record = state.get("init", init_record)
        log.info("resuming %s from %s: epoch %d, batch %d, step %d", system, state_path, start_epoch,
                 start_batch, step)
    # The code state of every process that worked on these weights (start and each resume).
    runs = runs + [{"step": step, "epoch": start_epoch, "code": started_code,
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]

    accum, max_steps = tcfg["accumulation"], tcfg["max_steps"]
    batches_per_epoch = len(dataset) // info.world_size // tcfg["batch_size"]
    if batches_per_epoch < 1:
        raise ConfigError(f"models.{system}: an epoch has no full batch ({len(dataset)} segments for "
                          f"batch_size={tcfg['batch_size']}); raise data.samples_per_track")
    preempt = _Preemption()

    def snapshot(epoch, batch_in_epoch):
        if info.is_main:
            save_state(state_path, model=core, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       ema=ema, epoch=epoch, batch_in_epoch=batch_in_epoch, step=step, history=history,
                       fingerprint=fingerprint, extra={"best": best.state_dict(), "runs": runs,
                                                        "init": init_record})

    def micro_index(epoch, batch_in_epoch):  # global micro-batch count (ignite's iteration - 1)
        return epoch * batches_per_epoch + batch_in_epoch

    finished = max_steps is not None and step >= max_steps
    epoch = start_epoch
    pending_snapshot = False  # an epoch ended between two optimizer steps: save at the next one
    while epoch < tcfg["epochs"] and not finished:
        dataset.set_epoch(epoch)
        first_batch = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip=first_batch * tcfg["batch_size"])
        model.train()
        keep_frozen(frozen)
        t0, losses = time.time(), []
        bar = tqdm(loader, total=batches_per_epoch - first_batch, disable=not (progress and info.is_main),
                   desc=f"{system} epoch {epoch + 1}/{tcfg['epochs']}", leave=False)
        batch_in_epoch = first_batch
        for mix, targets in bar:
            mix, targets = mix.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            boundary = (micro_index(epoch, batch_in_epoch) + 1) % accum == 0
            sync_ctx = model.no_sync() if info.enabled and not boundary else contextlib.nullcontext()
            with sync_ctx:
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss = compute_loss(system_cfg["loss"], model, core, mix, targets, tcfg["loss_precision"],
                                        margin=tcfg["loss_margin"])
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
                if max_steps is not None and step >= max_steps:
                    finished = True
                if (step % tcfg["checkpoint_every"] == 0 or pending_snapshot) and not finished:
                    snapshot(epoch, batch_in_epoch)
                    pending_snapshot = False
                if distributed.any_flag(preempt.signal is not None, info):
                    snapshot(epoch, batch_in_epoch)
                    distributed.barrier(info)
                    _requeue_or_exit(preempt.signal or signal.SIGUSR1, requeue=info.is_main)
            if finished:
                break
        bar.close()
        train_loss = distributed.all_reduce_mean(sum(losses) / max(len(losses), 1), info)
        row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)}
        if info.is_main and ((epoch + 1) % tcfg["valid_every"] == 0 or finished or epoch + 1 == tcfg["epochs"]):
            weights = ema.module if ema is not None else core
            scores = validate(weights, valid_set, system_cfg, device, max_tracks=tcfg["valid_tracks"])
            row.update({f"valid_sdr_{s}": scores[s] for s in SOURCES})
            row["valid_sdr_avg"] = scores["avg"]
            row["trivial_sdr_avg"] = scores["trivial_avg"]
            if _needs_valid_loss(tcfg):
                row["valid_loss"] = validation_loss(weights, valid_set, system_cfg, device,
                                                    max_tracks=tcfg["valid_tracks"])
            row["valid_in_training"] = saw_valid
            best.update(epoch + 1, row, weights)
            log.info("%s epoch %d: loss %.4f, valid SDR %.2f dB (mixture/4: %.2f dB)%s", system, epoch + 1,
                     train_loss, scores["avg"], scores["trivial_avg"],
                     " [the validation tracks were training tracks too]" if saw_valid else "")
        if is_plateau(scheduler):
            value = distributed.broadcast_value(plateau_value(tcfg["scheduler"], row), info)
            if value is not None:
                scheduler.step(value)
        elif scheduler is not None:
            scheduler.step()
        if info.is_main:
            history.append(row)
            _write_curve(curve_csv, history)
        if finished:  # by max_steps, at an optimizer step: nothing pending
            snapshot(epoch, batch_in_epoch)
        else:
            epoch, start_batch = epoch + 1, 0
            # Saved now if no gradient is pending, else at the next optimizer step.
            if micro_index(epoch, 0) % accum == 0:
                snapshot(epoch, 0)
            else:
                pending_snapshot = True
        start_epoch = epoch
    if pending_snapshot:  # the end: micro-batches after the last optimizer step are dropped
        snapshot(epoch, 0)

    final = None
    if info.is_main:
        last_weights = (ema.module if ema is not None else core).state_dict()
        weights, selected = best.chosen(last_weights, len(history))
        last = next((r for r in reversed(history) if r.get("epoch") == selected["epoch"]), history[-1] if history else {})
        scores = {k: v for k, v in last.items() if k.startswith(("valid_sdr", "trivial_sdr", "valid_loss"))}
        record = ckpt.build_record(
            system=system, model_name=system_cfg["arch"], model_class=type(core).__name__,
            model_kwargs=system_cfg["kwargs"], state_dict=weights,
            train_config={"system": system_cfg, "data": data_cfg}, seed=seed, manifest_hash=manifest_hash,
            scores=scores, training={"epochs": epoch, "steps": step, "world_size": info.world_size,
                                     "device": device.type, "history": history, "selected": selected,
                                     "valid_in_training": saw_valid, "init": init_record,
                                     "code_sha256": code_hash, "runs": runs},
            code=started_code)
        final = ckpt.save_final(record, out_dir, pointer)
        log.info("wrote %s (epoch %s: %s)", final, selected["epoch"], selected["reason"])
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
