"""What a run directory holds, read before a method trains there (docs/GUARANTEES.md, "A run dir holds one
recipe"): which stages it has trained, which weights an ``--init-from`` brought, and the refusals of a
recipe or a method other than the one it holds. Split from ``methods/base.py``, which calls it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hetseg.config import Config, describe_difference
from hetseg.engine.checkpoint import file_sha256, read_model_json, weights_file
from hetseg.errors import HetsegError
from hetseg.io_atomic import parse_json

if TYPE_CHECKING:
    from hetseg.methods.base import Method


def remove_if_untrained(run: Path) -> None:
    """Remove a run dir this command created when it holds nothing but its config.json and empty folders
    (e.g. a stage's data was refused before any step); anything else in it stays."""
    try:
        files = [p for p in run.rglob("*") if not p.is_dir()]
        if files != [run / "config.json"] and files:
            return
        for p in files:
            p.unlink()
        for d in sorted((p for p in run.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [run]:
            d.rmdir()
    except OSError:  # a tidy-up only: the refusal being raised is what the user must see
        pass


def held_stages(info: dict) -> set[str] | None:
    """The stages whose weights a run holds, from its model.json ``info``: trained there, or brought by the
    ``--init-from`` it recorded; None when unknown (a file of bare weights, or a model.json from before
    hetseg recorded ``init_from``)."""
    if "init_from" not in info:
        return None
    src, own = info["init_from"], set(info.get("stages", {}))
    if src is None:
        return own
    if not isinstance(src, dict) or not isinstance(src.get("stages"), list):  # a bare file, or hand-edited
        return None
    return own | set(src["stages"])


def init_record(init_from: str | None) -> dict | None:
    """What model.json records of ``--init-from``: the path, the stages its weights hold (:func:`held_stages`
    of a run dir; None for a bare .safetensors file, which says nothing of them) and the sha256 of the weights
    file read (a run dir's model.safetensors), so a run names the very weights it started from even after the
    path is retrained or overwritten (docs/GUARANTEES.md, "A stage that never trained is said")."""
    if not init_from:
        return None
    src, held = Path(init_from), None
    if (src / "model.json").is_file():
        try:
            held = held_stages(read_model_json(src))
        except HetsegError:  # --init-from takes the weights only: an unreadable model.json just says nothing
            pass
    return {"path": str(init_from), "stages": None if held is None else sorted(held),
            "sha256": file_sha256(weights_file(src))}  # the file init_weights has just loaded


def trained_stages(run: Path, stages: Sequence[str], checkpoints: bool = False) -> list[str]:
    """Those of ``stages`` trained in ``run``: done marker, or recorded in model.json (a stage killed between
    its model file and its marker, healed as done on a rerun), or -- with ``checkpoints`` -- half-trained."""
    recorded = read_model_json(run).get("stages", {}) if (run / "model.json").is_file() else {}
    return [s for s in stages if s in recorded or (run / s / "done.json").is_file()
            or (checkpoints and (run / s / "checkpoints" / "last.ckpt").is_file())]


def refuse_other_recipe(run: Path, cfg: Config, stages: Sequence[str], method: Method | None = None) -> None:
    """A run dir holds one recipe (docs/GUARANTEES.md). Once one of ``stages`` has trained there (done
    marker or checkpoint), another config would skip or resume that stage under settings it never
    trained with, and config.json would then claim them; refused in one line before anything is written."""
    p = run / "config.json"
    if not p.is_file():
        # Trained state no recorded config describes: e.g. a records-only runs dir whose tracked files
        # (config.json, model.json, done.json) were removed with git while the ignored weights and
        # checkpoints stayed. Training would resume those checkpoints and start from those weights under
        # this config's schedule, without a word.
        left = _trained_files(run, run / "model.json")
        if left:
            restore = " (model.json holds a copy)" if (run / "model.json").is_file() else ""
            raise HetsegError(f"{p}: missing, but {left[0]} is there, trained under a config this run dir no longer "
                              f"records; fix: restore config.json{restore}, delete {run} to train from scratch, or "
                              "train into another run directory")
        return
    other = _recorded_method(p)
    if other and other != cfg.model.name and _trained_files(run):
        # Another method's stages are invisible to this one's, so its weights were taken as this run's
        # starting point (refused only when their shapes happened not to fit).
        raise HetsegError(f"{run}: holds a {other} run, trained there; fix: train {cfg.model.name} into another run "
                          f"directory (--init-from {run} starts it from those weights where they fit)")
    trained = trained_stages(run, stages, checkpoints=True)
    if not trained:
        return
    # Keys the method never reads (Method.unread: seg.* for TransferNet) cannot change what it trained.
    diff = [k for k in cfg.recipe_difference_from(p) if method is None or method.unread(k, cfg) is None]
    if diff:
        # One run dir, one recipe, whichever stage the changed key belongs to (it read as a problem of the
        # trained stage when only a later stage's budget changed).
        raise HetsegError(f"{p}: this run dir holds one recipe and has trained stage '{trained[0]}' with it; the "
                          f"config now differs in {describe_difference(diff)}; fix: train with the settings "
                          f"recorded in {p}, or into another run directory (hetseg train --config {p} --run-dir NEW "
                          f"--init-from {run} KEY=VALUE ... starts from its weights)")


def _trained_files(run: Path, *extra: Path) -> list[Path]:
    """The files in ``run`` that mean something trained there (weights, done markers, checkpoints), with
    ``extra`` ones, those that exist, in that order."""
    return [f for f in (run / "model.safetensors", *extra, *sorted(run.glob("*/done.json")),
                        *sorted(run.glob("*/checkpoints/last.ckpt"))) if f.is_file()]


def _recorded_method(config_json: Path) -> str | None:
    """model.name as a run's config.json records it (None when unreadable: the recipe check then speaks)."""
    try:
        name = parse_json(config_json.read_text(encoding="utf-8")).get("model", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def untrained_before(run: Path, order: Sequence[str], stages: Sequence[str], source: dict | None) -> list[str]:
    """The stages of ``order`` (a method's default stages) before the first of ``stages`` that hold no
    weights: neither trained in ``run`` nor brought by an ``--init-from`` (``source``, :func:`init_record`;
    or one the run's model.json recorded). [] when that is unknown (bare weights)."""
    asked = [s for s in stages if s in order]
    if not asked:
        return []
    before = list(order[:list(order).index(asked[0])])
    have: set[str] = set()
    if (run / "model.json").is_file():  # a stage trained here is in it: the model file precedes its marker
        try:
            held = held_stages(read_model_json(run))
        except HetsegError:
            return []
        if held is None:
            return []
        have = held
    if source is not None:
        if source.get("stages") is None:
            return []
        have |= set(source["stages"])
    return [s for s in before if s not in have]
