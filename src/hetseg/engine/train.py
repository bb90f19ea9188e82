"""Run one training stage with Lightning: same command single-process or under torchrun (DDP).

Run-directory layout (one per experiment)::

    RUN/config.json                 the resolved Config (saved before anything trains)
    RUN/<stage>/metrics.csv         CSV log (Lightning CSVLogger); metrics.partN.csv before a resume
    RUN/<stage>/checkpoints/last.ckpt   for resuming only (optimizer, step, RNG)
    RUN/<stage>/done.json           written when the stage finished: wall time, steps, metrics
    RUN/model.safetensors + model.json  the weights after the latest finished stage

Resuming: a stage with ``last.ckpt`` but no ``done.json`` auto-resumes from it; ``resume=PATH``
names a checkpoint explicitly; ``init_from=PATH`` loads *weights only* (safetensors) and starts the
step count at 0. A stage with ``done.json`` is skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hetseg.config import Config, StageConfig
from hetseg.engine.stages import ClsStage, DeconvStage, PretrainStage, SegStage

STAGES = {"pre": PretrainStage, "cls": ClsStage, "seg": SegStage, "deconv": DeconvStage}


def stage_done(run_dir: str | Path, stage: str) -> dict | None:
    p = Path(run_dir) / stage / "done.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _keep_old_log(stage_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; keep it as metrics.partN.csv instead."""
    old = stage_dir / "metrics.csv"
    if old.is_file():
        n = 1
        while (stage_dir / f"metrics.part{n}.csv").exists():
            n += 1
        old.rename(stage_dir / f"metrics.part{n}.csv")


def _launch_topology() -> dict:
    """Devices/nodes for the Trainer. Under torchrun, take them from its environment so that the
    same command works on CPUs too (Lightning's ``devices="auto"`` means 1 device on a CPU, which
    would not match a 2-process launch); otherwise let Lightning pick (all visible GPUs, or 1 CPU)."""
    import os

    local = os.environ.get("LOCAL_WORLD_SIZE")
    world = os.environ.get("WORLD_SIZE")
    if local and world:
        return {"devices": int(local), "num_nodes": max(1, int(world) // int(local)),
                "strategy": "ddp" if int(world) > 1 else "auto"}
    return {"devices": "auto"}


def _loader(ds: Dataset, batch_size: int, workers: int, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, num_workers=workers,
                      generator=g, persistent_workers=False, pin_memory=torch.cuda.is_available())


def run_stage(stage: str, net: nn.Module, cfg: Config, sc: StageConfig, train_ds: Dataset,
              val_ds: Dataset | None = None, resume: str | None = None, callbacks: Sequence = (),
              progress: bool = True, num_labels: int | None = None, module: L.LightningModule | None = None
              ) -> dict:
    """Train ``net`` in place for ``sc.steps`` optimizer steps; return the stage summary.

    ``stage`` is ``pre``, ``cls``, ``seg`` or ``deconv`` (or any name, with a ready ``module`` wrapping
    ``net``, e.g. TransferNet's stages). Under torchrun, Lightning picks up the process
    group from the environment; the effective batch is batch_size x accumulate x world size.
    """
    run_dir = Path(cfg.run_dir)
    stage_dir = run_dir / stage
    done = stage_done(run_dir, stage)
    if done is not None:
        return done
    ckpt_dir = stage_dir / "checkpoints"
    ckpt_path = resume
    if ckpt_path is None and (ckpt_dir / "last.ckpt").is_file():
        ckpt_path = str(ckpt_dir / "last.ckpt")

    if ckpt_path is not None:
        _keep_old_log(stage_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if module is None:
        module = ClsStage(net, sc, num_labels) if stage == "cls" else STAGES[stage](net, sc)
    ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=sc.checkpoint_every, save_last=True,
                              save_top_k=0, save_on_train_epoch_end=False)
    trainer = L.Trainer(
        max_steps=sc.steps, max_epochs=-1, accumulate_grad_batches=sc.accumulate, precision=sc.precision,
        logger=CSVLogger(run_dir, name=stage, version=""), callbacks=[ckpt_cb, *callbacks],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=min(20, max(1, sc.steps // 10)), default_root_dir=run_dir,
        val_check_interval=sc.val_every or None, check_val_every_n_epoch=None if sc.val_every else 1,
        accelerator="auto", **_launch_topology(),
    )
    workers = cfg.data.workers
    train_loader = _loader(train_ds, sc.batch_size, workers, True, cfg.seed)
    val_loader = _loader(val_ds, sc.batch_size, workers, False, cfg.seed) if val_ds is not None else None
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader,
                val_dataloaders=val_loader if sc.val_every else None, ckpt_path=ckpt_path, weights_only=False)
    wall = time.perf_counter() - t0
    if trainer.interrupted or trainer.global_step < sc.steps:
        raise RuntimeError(f"stage '{stage}' stopped at step {trainer.global_step}/{sc.steps}; "
                           f"rerun the same command to resume from {ckpt_dir / 'last.ckpt'}")
    metrics: dict = {}
    if val_loader is not None and stage in ("cls", "pre"):
        res = trainer.validate(module, dataloaders=val_loader, verbose=False)
        metrics = {k: float(v) for k, v in (res[0] if res else {}).items()}
    world = trainer.world_size
    summary = {
        "stage": stage, "steps": trainer.global_step, "wall_s": round(wall, 1),
        "resumed_from": ckpt_path, "effective_batch": sc.batch_size * sc.accumulate * world,
        "world_size": world, "train_samples": len(train_ds), "metrics": metrics,
    }
    if trainer.is_global_zero:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "done.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
