"""Run one training stage with Lightning: same command single-process or under torchrun (DDP).

Generic: a stage is a directory name and a ready :class:`hetseg.engine.stage.Stage`; this module
knows no method. Run-directory layout (one per experiment, docs/GUARANTEES.md)::

    RUN/config.json                 the resolved Config (saved before anything trains)
    RUN/<stage>/metrics.csv         CSV log (Lightning CSVLogger); metrics.partN.csv before a resume
    RUN/<stage>/checkpoints/last.ckpt   for resuming only (optimizer, schedule, step; data position
                                    derived from the step, engine/resume.py)
    RUN/<stage>/done.json           written (atomically) once the stage's model file is on disk
    RUN/model.safetensors + model.json  the weights after the latest finished stage

Resuming: a stage with ``last.ckpt`` but no ``done.json`` auto-resumes from it; ``resume=PATH``
names a checkpoint explicitly. Checkpoints are read with ``weights_only=True`` (nothing is
unpickled); a corrupt one is refused with a one-line error.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Dataset

from hetseg.config import Config, StageConfig, section_of
from hetseg.data.io import check_image_files
from hetseg.engine.console import StageProgress, quiet_lightning
from hetseg.engine.resume import check_checkpoint, loader
from hetseg.engine.stage import Stage
from hetseg.engine.stops import diverged_fix, stage_errors_said, stopped_line, stops_kept
from hetseg.errors import HetsegError, note
from hetseg.io_atomic import parse_json, write_json


def stage_done(run_dir: str | Path, stage: str) -> dict | None:
    """The stage's done.json, or None. A done.json that does not parse, or is not the summary
    :func:`mark_done` writes (this stage's name, integer ``steps``, numeric ``wall_s``), is a half-written
    or edited marker: refused with a one-line error rather than trusted."""
    p = Path(run_dir) / stage / "done.json"
    if not p.is_file():
        return None
    try:
        done = parse_json(p.read_text())
    except (ValueError, UnicodeDecodeError):
        done = None
    number = (int, float)
    if not (isinstance(done, dict) and done.get("stage") == stage and type(done.get("steps")) is int
            and isinstance(done.get("wall_s"), number) and not isinstance(done.get("wall_s"), bool)):
        raise HetsegError(f"{p}: unreadable stage marker (not the summary hetseg writes when stage '{stage}' "
                          f"finishes); fix: delete it to retrain stage '{stage}'")
    return done


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
    would not match a 2-process launch); otherwise one device. (``"auto"`` took every visible GPU
    through Lightning's own launcher, whose ranks get no ``RANK``, so each wrote the run's files as
    rank 0, and multiplied the recipe's batch by the GPU count without a word: multi-GPU is torchrun's.)"""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    world = os.environ.get("WORLD_SIZE")
    if local and world:
        return {"devices": int(local), "num_nodes": max(1, int(world) // int(local)),
                "strategy": "ddp" if int(world) > 1 else "auto"}
    return {"devices": 1}


def check_batch(name: str, samples: int, sc: StageConfig) -> None:
    """Refuse, in one line, a stage with fewer training samples than its batch_size: batches drop their
    ragged end, so not one step would ever run. Called by :func:`run_stage` and, for every stage of a run
    before its first one trains, by ``Method.train`` (a later stage's setting used to surface only after
    the earlier stages had trained, and the run's saved config then refused the corrected setting)."""
    if samples < sc.batch_size:
        raise HetsegError(f"stage '{name}': {samples} training samples, fewer than its batch_size "
                          f"{sc.batch_size}; fix: lower that stage's batch_size to at most {max(1, samples)}, "
                          "or train on more images")


def run_stage(name: str, module: Stage, cfg: Config, sc: StageConfig, train_ds: Dataset,
              val_ds: Dataset | None = None, resume: str | None = None, callbacks: Sequence = (),
              progress: bool = True) -> dict:
    """Train ``module.net`` in place for ``sc.steps`` optimizer steps; return the stage summary.

    ``name`` is the stage's directory in ``cfg.run_dir``. Validation runs every ``sc.val_every``
    steps when given, and once at the end whenever ``val_ds`` is given (its metrics go into the
    summary). Under torchrun, the effective batch is batch_size x accumulate x world size.
    """
    run_dir = Path(cfg.run_dir)
    stage_dir = run_dir / name
    done = stage_done(run_dir, name)
    if done is not None:
        return done
    check_batch(name, len(train_ds), sc)
    # An empty or non-image file is refused before the first step, not when a batch first draws it (after
    # the run's first checkpoints). Datasets that read image files list them; one of arrays has none.
    for ds in (train_ds, val_ds):
        files = getattr(ds, "image_files", None)
        if files is not None:
            check_image_files(files())
    ckpt_dir = stage_dir / "checkpoints"
    ckpt_path = resume
    if ckpt_path is None and (ckpt_dir / "last.ckpt").is_file():
        ckpt_path = str(ckpt_dir / "last.ckpt")
    if ckpt_path is not None:
        check_checkpoint(ckpt_path, name, {k: v.shape for k, v in module.state_dict().items()}, own=resume is None,
                         steps=sc.steps)
        _keep_old_log(stage_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module.stage_name = name
    quiet_lightning()
    ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=sc.checkpoint_every, save_last=True,
                              save_top_k=0, save_on_train_epoch_end=False)
    bar = [StageProgress(name, sc.steps)] if progress else []
    precision = resolve_precision(sc.precision)
    trainer = L.Trainer(
        max_steps=sc.steps, max_epochs=-1, accumulate_grad_batches=sc.accumulate, precision=precision,
        logger=CSVLogger(run_dir, name=name, version=""), callbacks=[ckpt_cb, *bar, *callbacks],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=min(20, max(1, sc.steps // 10)), default_root_dir=run_dir,
        # Lightning counts val_check_interval in batches, the config in optimizer steps
        val_check_interval=sc.val_every * sc.accumulate or None, check_val_every_n_epoch=None if sc.val_every else 1,
        accelerator="auto", deterministic=cfg.deterministic or None, **_launch_topology(),
        benchmark=not cfg.deterministic,  # cuDNN autotuning: every training input has one fixed size
    )
    workers = cfg.data.workers
    train_loader = loader(train_ds, sc.batch_size, workers, shuffle=True, seed=cfg.seed)
    val_loader = loader(val_ds, sc.batch_size, workers, shuffle=False, seed=cfg.seed) if val_ds is not None else None
    batches = len(train_loader)
    if batches % sc.accumulate and ckpt_path is None:  # said once, when the stage starts
        note(f"stage '{name}': {batches} batches per epoch is not a multiple of accumulate {sc.accumulate}, so each "
             f"epoch's last step averages {batches % sc.accumulate} and a resume inside an epoch is not bit-identical "
             "(docs/GUARANTEES.md, Resume); fix: an accumulate that divides it, if that matters")
    section = section_of(cfg, sc) or name
    module.diverged_fix = diverged_fix(section, sc.lr, precision, run_dir)
    t0 = time.perf_counter()
    with stops_kept(trainer), stage_errors_said(name, section, sc, stage_dir, workers):
        trainer.fit(module, train_dataloaders=train_loader,
                    val_dataloaders=val_loader if sc.val_every else None, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.interrupted:
        module.refuse_diverged()  # the steps after the last save (Lightning's closing save is skipped after one)
    wall = time.perf_counter() - t0
    if trainer.interrupted or trainer.global_step < sc.steps:
        raise HetsegError(stopped_line(name, trainer, sc.steps, ckpt_dir, resume))
    metrics: dict = {}
    if val_loader is not None:
        with stops_kept(trainer), stage_errors_said(name, section, sc, stage_dir, workers):
            res = trainer.validate(module, dataloaders=val_loader, verbose=False)
        if trainer.interrupted or trainer.received_sigterm:  # preempted: no next stage either
            raise HetsegError(stopped_line(name, trainer, sc.steps, ckpt_dir, resume, "in its closing validation"))
        metrics = {k: float(v) for k, v in (res[0] if res else {}).items()}
    world = trainer.world_size
    return {  # wall_s: every session of the stage (a resumed one adds what its checkpoint carried)
        "stage": name, "steps": trainer.global_step, "wall_s": round(module.wall_before + wall, 1),
        "wall_s_before_resume": round(module.wall_before, 3), "resumed_from": ckpt_path,
        "effective_batch": sc.batch_size * sc.accumulate * world,
        "world_size": world, "train_samples": len(train_ds), "metrics": metrics, "precision": precision,
        "sessions": module.sessions,  # each session's first step, precision and device (a resume may move)
    }


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> "bf16-mixed" where bf16 is native (CUDA with bf16; a CPU whose oneDNN has bf16
    kernels, i.e. AVX512-BF16 or AMX), else "32-true"; any other value is returned as it is."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        native = False
    return "bf16-mixed" if native else "32-true"


# The vector units that decide CPU bf16 speed and what `precision: auto` resolves to (two machines may
# both call themselves "AMD EPYC").
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_info() -> tuple[str, list[str]]:
    """This CPU's model name and which of :data:`VECTOR_FLAGS` it has, from /proc/cpuinfo where there is one."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name"))
        flags = set(next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), []))
    except (OSError, StopIteration):
        pass
    return cpu, [f for f in VECTOR_FLAGS if f in flags]


def cpu_label(cpu: str, flags: Sequence[str]) -> str:
    """"CPU model (vector flags)", the words reports use for a CPU (``no AVX2`` when it has none of them)."""
    return f"{cpu} ({', '.join(flags) or 'no AVX2'})"


def device_label() -> str:
    """What trains in this process: the GPU's name, or this CPU as :func:`cpu_label` writes it."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_label(*cpu_info())


def mark_done(run_dir: str | Path, summary: dict) -> None:
    """Write ``RUN/<stage>/done.json`` atomically. Call only after the model file is on disk."""
    write_json(Path(run_dir) / summary["stage"] / "done.json", summary)


def is_rank_zero() -> bool:
    """True outside torchrun and on its rank 0 (the only process that writes run files)."""
    return int(os.environ.get("RANK", "0")) == 0


__all__ = ["is_rank_zero", "mark_done", "resolve_precision", "run_stage", "stage_done"]
