"""Methods: each folder is one published system's recipe on the generic engine (docs/ARCHITECTURE.md).

``train(cfg)`` dispatches on ``cfg.model.name`` to the registered method. Adding a method = one
folder with a :class:`~hetseg.methods.base.Method` subclass registered with ``register_method``,
plus its import below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hetseg.config import Config
from hetseg.engine.checkpoint import read_model_json, run_dir
from hetseg.engine.context import class_names, load_config_split, load_split
from hetseg.engine.evaluate import evaluate_run
from hetseg.engine.train import stage_done
from hetseg.errors import HetsegError
from hetseg.methods import decouplednet, deconvnet, dis, transfernet  # noqa: F401 - registration
from hetseg.methods.base import METHODS, Method, get_method, register_method
from hetseg.methods.run_state import held_stages


def train(cfg: Config, stages: Sequence[str] | None = None, resume: str | None = None, init_from: str | None = None,
          progress: bool = True, callbacks: Sequence = (), notes: Sequence[str] = ()) -> dict:
    """Train the method ``cfg.model.name`` (its stages, or ``stages``) into ``cfg.run_dir``; ``notes`` are said
    once nothing is refused (:meth:`Method.train`)."""
    return get_method(cfg.model.name).train(cfg, stages, resume, init_from, progress, callbacks, notes)


def untrained_note(run: str | Path) -> str | None:
    """One line for eval/predict/export when the run (dir or its model.safetensors) predicts with the initial
    weights of a stage of its method's :meth:`~Method.default_stages` that neither trained there nor came
    from ``--init-from`` (:func:`held_stages`), else None -- also when that is unknown or model.json cannot
    be read: the command's own loading then says why."""
    try:
        run = run_dir(run)
        info = read_model_json(run)
        cfg = Config.from_dict(info["config"], where=str(run / "model.json"))
        order, held = list(get_method(info["method"]).default_stages(cfg)), held_stages(info)
    except (HetsegError, KeyError, TypeError, AttributeError):
        return None
    missing = [s for s in order if held is not None and s not in held]
    if not missing:
        return None
    which = ", ".join(f"'{s}'" for s in missing)
    if order.index(missing[0]) > max((i for i, s in enumerate(order) if s in held), default=-1):
        fix = f"hetseg train --config {run / 'config.json'} --run-dir {run} trains it"
    else:  # a later stage trained on top of it: training it now in place would leave that stage stale
        fix = (f"train the recipe again into a new run dir (hetseg train --config {run / 'config.json'} --run-dir "
               "NEW), since the stages after it were trained on its initial weights")
    return (f"{run}: stage {which} never trained in this run nor came from --init-from, so it predicts with "
            f"initial weights there; fix: {fix}")


# What benches and apps train and score through (never a stage directly); they read finished runs with
# the engine's public helpers (engine.checkpoint.load_model, engine.evaluate, engine.context).
__all__ = ["METHODS", "Method", "class_names", "evaluate_run", "get_method", "load_config_split", "load_split",
           "register_method", "stage_done", "train", "untrained_note"]
