"""Where a results file came from: the machine, the data set, the starting weights -- and whether a
run dir on disk was trained with the recipe a bench is about to report (:func:`check_recipe`).

Every bench writes these into its JSON (``machine``, ``dataset``, ``backbone``) so that each number
names what produced it (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hetseg.config import Config
from hetseg.errors import HetsegError


def with_overrides(command: str, overrides: Sequence[str]) -> str:
    """A bench's command line with its ``key=value`` overrides, which made the numbers too."""
    return command + "".join(f" {o}" for o in overrides)


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when the file is absent."""
    return json.loads(path.read_text()) if path.is_file() else {}


def backbone_record(path: Path | None) -> dict | None:
    """The backbone every network started from: file, sha256, and -- where its ``backbone.json``
    sits beside it (the shipped one, ``hetseg bench backbone``) -- its command, steps and accuracy."""
    from hetseg.engine.checkpoint import file_sha256

    if path is None:
        return None
    path = Path(path)
    info = read_json(path.with_name("backbone.json"))
    try:  # a results file names the repo's file, not this machine's checkout path
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    return {"file": str(shown), "sha256": file_sha256(path),
            "command": info.get("command"), "steps": info.get("steps"), "held_out_acc": info.get("held_out_acc"),
            "effective_batch": info.get("effective_batch"), "data": info.get("data")}


def start_weights(cfg: Config, family: str = "vgg") -> dict | None:
    """What every network of a bench started from: the backbone :func:`backbone_record` describes, or
    the ImageNet file of ``family`` ("vgg" | "resnet", paper scale) as file + sha256 with ``"imagenet":
    True``; None for random weights. A paper-scale report used to say "random" beside an ImageNet start."""
    from hetseg.engine.checkpoint import file_sha256
    from hetseg.engine.context import backbone_file

    path = backbone_file(cfg, family)
    if path is not None:
        return backbone_record(path)
    file = cfg.model.resnet_weights if family == "resnet" else cfg.model.vgg_weights
    if not file:
        return None
    return {"file": file, "sha256": file_sha256(file), "imagenet": True, "command": None, "held_out_acc": None}


def weights_phrase(b: dict) -> str:
    """How a report names an ImageNet start (:func:`start_weights`): file and short checksum."""
    return f"ImageNet weights `{b['file']}` (sha256 `{b['sha256'][:12]}…`)"


def machine_labels(records: list[dict]) -> list[str]:
    """The machines ``records`` (dicts with a :func:`machine_info` ``machine``) were made on, sorted:
    "CPU model (vector flags)", so two machines of one model name with other vector units stay apart.
    Records without a machine are not listed."""
    from hetseg.engine.train import cpu_label

    labels = set()
    for r in records:
        m = r.get("machine")
        if m:
            flags = m.get("cpu_flags")
            labels.add(cpu_label(m["cpu"], flags) if flags is not None else m["cpu"])
    return sorted(labels)


def stage_sessions(done: dict) -> list[dict]:
    """A stage's training sessions as its done.json (or model.json stage entry) ``done`` records them:
    each one's first step, precision and device (engine.stage.Stage). A stage trained before they were
    recorded gives one entry: its last session's precision, with first step and device unknown (None)."""
    return done.get("sessions") or [{"from_step": None, "precision": done.get("precision"), "device": None}]


def trained_as(sessions_by_seed: dict) -> dict:
    """{seed: [sessions of every stage it trained]} -> {seed: {"<precision> on <device>": count}}: what
    a reader needs where `precision: auto` resolved differently on the machines a bench ran on."""
    def label(s: dict) -> str:
        return (f"{s.get('precision') or 'precision not recorded'} on {s.get('device') or 'a device not recorded'}"
                + (" (its stage's last session; earlier ones unknown)" if s.get("from_step") is None else ""))

    return {str(seed): dict(Counter(map(label, sessions))) for seed, sessions in sessions_by_seed.items()}


def trained_as_phrase(by_seed: dict) -> str:
    """:func:`trained_as` in one sentence for a results Markdown."""
    per_seed = [f"seed {seed}: " + (", ".join(f"{label} × {n}" for label, n in sorted(labels.items()))
                                    or "not recorded") for seed, labels in sorted(by_seed.items())]
    return ("Training sessions by precision (`precision: auto` is bf16-mixed where bf16 is native, else "
            "32-true) and device: " + "; ".join(per_seed) + ".")


def machine_info() -> dict:
    """CPU model, core counts, thread count and library versions of this process."""
    import lightning
    import torch

    from hetseg.engine.train import cpu_info

    cpu, flags = cpu_info()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cpus": usable, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "cpu_flags": flags}  # engine.train.VECTOR_FLAGS: two machines may both say "AMD EPYC"


# meta.json keys that describe how a generation ran, not what it made (scenes are byte-identical for
# any worker count, tests/test_scenes.py): left out of the data set's checksum.
VOLATILE_META = ("generation_seconds", "workers")


def meta_checksum(meta: dict) -> str | None:
    """sha256 of the data set's meta.json content without :data:`VOLATILE_META` (canonical JSON)."""
    if not meta:
        return None
    kept = {k: v for k, v in meta.items() if k not in VOLATILE_META}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def dataset_info(data: str | Path) -> dict:
    """What identifies the data set a bench ran on: meta checksum, sizes, split checksums."""
    meta = read_json(Path(data) / "meta.json")
    return {"root": str(data), "name": meta.get("dataset") or Path(data).resolve().name,
            "meta_sha256": meta_checksum(meta), "seed": meta.get("seed"),
            "num_train": meta.get("num_train"), "num_val": meta.get("num_val"),
            "splits": {k: {"size": v.get("size"), "checksum": v.get("checksum")}
                       for k, v in meta.get("splits", {}).items() if k.startswith(("strong_", "train_", "val"))}}


def check_recipe(cfg: Config) -> None:
    """Refuse to resume or skip a run dir that was trained with another recipe (budget, data...)."""
    diff = cfg.recipe_difference_from(Path(cfg.run_dir) / "config.json")
    if diff:
        raise HetsegError(f"{cfg.run_dir}: trained with another recipe (differs in {diff}); "
                          "fix: pass another --runs directory or delete this one")
