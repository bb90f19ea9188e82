"""A method = a registered model + its stages + its recipe. ``Method.train`` is written once here.

A method folder (``methods/<name>/``) defines a :class:`Method` subclass: which model it builds and
with which kwargs (``model_kwargs``), its stage names in order, and ``run_stage`` that builds one
stage's datasets and :class:`hetseg.engine.stage.Stage` and hands them to the generic
:func:`hetseg.engine.train.run_stage`. Everything around it is shared: the run directory, the
seeded model, starting weights, skipping finished stages, writing the model file (atomically)
before the stage's done marker, rank 0 only under torchrun.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from hetseg.config import OWN_SECTIONS, STAGE_SECTIONS, Config, at, describe_difference
from hetseg.config_check import override_keys
from hetseg.engine.checkpoint import read_model_json, save_model
from hetseg.engine.context import class_names, command_line, init_weights, seeded_model
from hetseg.engine.resume import check_checkpoint, fault_point
from hetseg.engine.train import check_batch, is_rank_zero, mark_done, stage_done
from hetseg.errors import HetsegError, note
from hetseg.methods.model_keys import check_encoder_keys
from hetseg.methods.run_state import (init_record, refuse_other_recipe, remove_if_untrained, trained_stages,
                                      untrained_before)
from hetseg.registry import Registry

METHODS = Registry("method")  # name (= model.name in configs) -> Method instance


def register_method(method: Method) -> Method:
    """Add a method instance to the registry under ``method.name``."""
    return METHODS.add(method.name, method)


def proposals_note(cfg: Config, available: bool) -> str | None:
    """What a paper-scale run whose crops fall back from ``crops.proposals=auto`` to random boxes is told when
    it starts (model.json records the fallback too; at CPU scale the benches and the demo crop random boxes
    on purpose, so nothing is said there)."""
    if cfg.crops.proposals != "auto" or available or cfg.model.scale != "paper":
        return None
    return ("crops.proposals=auto: opencv-contrib is not installed, so the crops are random boxes only, where the "
            "paper crops around selective-search proposals; fix: pip install -e \".[proposals]\", or "
            "crops.proposals=none to say so")


class Method:
    """Base class; subclasses set ``name``, ``model``, ``stages`` and implement ``run_stage``."""

    name: str = ""
    model: str = ""                    # registered model name (hetseg.models)
    encoder_model: str = ""            # its twin on any registered encoder (``model.encoder``), if any
    stages: tuple[str, ...] = ()       # what ``--stage all`` runs, in order
    extra_stages: tuple[str, ...] = ()  # stages run only when asked for (e.g. "pre")
    crop_stages: tuple[str, ...] = ()  # stages trained on combinatorial crops (read ``crops.*``)
    mask_stages: tuple[str, ...] = ()  # stages trained on masks: :meth:`mask_splits`, checked before any stage

    def mask_splits(self, cfg: Config) -> list[str]:
        """The settings (dotted config keys) naming the splits whose masks :attr:`mask_stages` train on."""
        return ["data.strong_split"]

    def data_splits(self, cfg: Config) -> list[str]:
        """The settings naming every split the method's stages and its evaluation read (``hetseg data check``)."""
        return ["data.weak_split", "data.strong_split", "data.val_split"]

    def stage_samples(self, cfg: Config, stage: str) -> int | None:
        """How many training samples ``stage`` will see (its training set's length), computed from the
        split files without training; None: not checked ahead. :meth:`train` checks every stage still to
        train against its batch_size before the first one starts. Building the count may refuse bad data
        (e.g. a transfer split with none of its classes) in one line, which is the point: before training."""
        return None

    def check_stage_data(self, cfg: Config, stages: Sequence[str]) -> None:
        """Refuse, before any stage trains, a stage whose training set (:meth:`stage_samples`) is smaller than
        its batch or has none of its classes (also run by ``hetseg data check``)."""
        for s in stages:
            n = self.stage_samples(cfg, s)
            if n is not None:
                check_batch(s, n, self.stage_config(cfg, s))

    def model_kwargs(self, cfg: Config) -> dict:
        """Constructor kwargs of the model (JSON-serialisable; stored in model.json)."""
        return {"num_classes": cfg.data.num_classes - 1, "scale": cfg.model.scale}

    def default_stages(self, cfg: Config) -> tuple[str, ...]:
        """The stages ``--stage all`` runs for ``cfg``, in order; default :attr:`stages`."""
        return self.stages

    def stage_section(self, stage: str) -> str:
        """The dotted config section holding ``stage``'s budget (a :class:`hetseg.config.StageConfig`);
        default: the section named like the stage (``cls`` -> ``cfg.cls``)."""
        return stage

    def stage_config(self, cfg: Config, stage: str) -> Any:
        """``stage``'s :class:`hetseg.config.StageConfig` in ``cfg`` (:meth:`stage_section`)."""
        return at(cfg, self.stage_section(stage))

    def unread(self, key: str, cfg: Config | None = None) -> str | None:
        """Why this method would silently ignore the dotted config leaf ``key``, or None if it reads it: a
        stage budget of a stage it does not have (``seg.steps`` for DeconvNet, which reads ``deconv.*``),
        or -- given the run's ``cfg`` for a whole-method run -- of a stage that config skips (``cls.*`` for
        TransferNet with ``transfer.classifier_run``), or a key of a section only other methods read
        (:data:`hetseg.config.OWN_SECTIONS`), or ``label_loss`` in a stage section other than ``cls``. The
        reason ends with a ``fix:`` naming what it does read."""
        mine = {self.stage_section(s) for s in self.stages + self.extra_stages}
        runs = mine if cfg is None else {self.stage_section(s) for s in self.default_stages(cfg) + self.extra_stages}
        budget = next((sec for sec in STAGE_SECTIONS if key.startswith(sec + ".")), None)
        section = key.split(".", 1)[0]
        readers = OWN_SECTIONS.get(section)
        if budget in mine - runs:
            return (f"method '{self.name}' skips the stage reading {budget}.* with this config (it trains "
                    f"{', '.join(self.default_stages(cfg))}), so it would be ignored; fix: drop it, or the "
                    "setting that skips the stage (e.g. transfer.classifier_run)")
        if budget and budget not in mine:
            return (f"method '{self.name}' has no stage reading {budget}.*, so it would be ignored; fix: set its "
                    f"own stages' {', '.join(sorted(s + '.*' for s in mine))}")
        if not budget and readers and self.name not in readers:
            return (f"method '{self.name}' does not read {section}.*, so it would be ignored; fix: drop it, or "
                    f"--method {' | '.join(sorted(readers))}")
        if budget and budget != "cls" and key == f"{budget}.label_loss":
            # every stage section is a StageConfig, but only the image classifier's BCE reads label_loss
            return (f"only stage cls (the image classifier) reads label_loss, so {key} would be ignored; "
                    "fix: drop it, or set cls.label_loss")
        return None

    def check_overrides(self, overrides: Sequence[str], cfg: Config | None = None) -> None:
        """Refuse a ``key=value`` override this method would silently ignore (:meth:`unread`), in one line."""
        for item in overrides:
            for key in override_keys(item):
                why = self.unread(key, cfg)
                if why:
                    raise HetsegError(f"{item}: {why}")

    def unread_settings(self, file_cfg: Config, cfg: Config | None = None) -> list[str]:
        """One line per reason for the settings of a config file (``file_cfg``: the file merged on the
        defaults) that differ from the defaults and that this method would not read (:meth:`unread`):
        ``"deconv.lr, deconv.steps: method 'decouplednet' does not read deconv.*, ..."``."""
        why_keys: dict[str, list[str]] = {}
        for key in file_cfg.changed_keys():
            why = self.unread(key, cfg)
            if why:
                why_keys.setdefault(why, []).append(key)
        return [f"{describe_difference(keys)}: {why}" for why, keys in why_keys.items()]

    def threshold(self, cfg: Config) -> float:
        """The label-identification threshold this method's runs evaluate and predict with."""
        return cfg.eval.threshold

    def prepare(self, net: nn.Module, cfg: Config, fresh: bool) -> None:
        """Hook after the starting weights are loaded (``fresh``: the run had no weights yet).
        Default: a fresh any-encoder run starts from the encoder's ImageNet weights (``model.imagenet``),
        loaded here rather than at construction, so a trained run's model.json never asks for them."""
        if fresh and cfg.model.encoder != "vgg16" and cfg.model.imagenet and self.encoder_model:
            from hetseg.models.encoders import load_pretrained

            for encoder in net.pretrained_modules():
                load_pretrained(cfg.model.encoder, encoder)

    def run_stage(self, stage: str, net: nn.Module, cfg: Config, resume: str | None, callbacks: Sequence,
                  progress: bool) -> tuple[dict, dict]:
        """Train one stage; returns (summary, {split role: split record}) for model.json."""
        raise NotImplementedError

    def after_stage(self, stage: str, net: nn.Module, cfg: Config) -> None:
        """Hook after the model file of a finished stage is written (rank 0 only)."""

    def build(self, cfg: Config) -> nn.Module:
        """The seeded, untrained model of a run: ``model``, or ``encoder_model`` on ``model.encoder``."""
        name, kwargs = self.model, self.model_kwargs(cfg)
        check_encoder_keys(cfg, self)
        if cfg.model.encoder != "vgg16":
            if not self.encoder_model:
                raise HetsegError(f"model.encoder={cfg.model.encoder}: method '{self.name}' runs on VGG-16 only; "
                                  "fix: model.encoder=vgg16, or decouplednet / deconvnet")
            name = self.encoder_model
            kwargs = {k: v for k, v in kwargs.items() if k not in ("scale", "weight_pool")}
            kwargs.update(encoder=cfg.model.encoder, input_size=cfg.model.input_size or 320)
            # Width and bridge kernel size the shipped real-photo model (docs/DECISIONS.md); 0 keeps the default.
            if cfg.model.width:
                kwargs.update(bridge_dim=cfg.model.width,
                              **({"head_width": cfg.model.width} if name == "decouplednet_enc" else {}))
            if cfg.model.bridge_kernel and name == "decouplednet_enc":
                kwargs["bridge_kernel"] = cfg.model.bridge_kernel
            if cfg.model.decoder_stride:
                kwargs["decoder_stride"] = cfg.model.decoder_stride
        try:
            return seeded_model(name, kwargs, cfg.seed)
        except ValueError as e:  # a model's own check of its kwargs: a config problem, said in one line
            raise HetsegError(f"model ({name}): {e}; fix: change the model.* setting it names") from None

    def train(self, cfg: Config, stages: Sequence[str] | None = None, resume: str | None = None,
              init_from: str | None = None, progress: bool = True, callbacks: Sequence = (),
              notes: Sequence[str] = ()) -> dict:
        """Train ``stages`` (default: all of this method's) into ``cfg.run_dir``; {stage: summary}. ``notes``
        (the CLI's lines on settings the method ignores) are said once nothing is refused: a refusal is one line."""
        stages = tuple(stages or self.default_stages(cfg))
        allowed = self.stages + self.extra_stages
        for s in stages:
            if s not in allowed:
                raise HetsegError(f"--stage {s}: method '{self.name}' has stages {', '.join(allowed)}; "
                                  f"fix: pick one of them or 'all'")
        cropping, crop_note = set(stages) & set(self.crop_stages), None
        if cfg.crops.proposals != "none" and cropping - set(trained_stages(Path(cfg.run_dir), stages)):
            from hetseg.data.crops import proposals_available

            available = proposals_available()
            if not available and cfg.crops.proposals == "selective-search":
                # its crops would be random boxes only, recorded as selective search
                raise HetsegError("crops.proposals=selective-search: needs opencv-contrib (cv2.ximgproc), which is "
                                  "not installed; fix: pip install -e \".[proposals]\", or crops.proposals=auto "
                                  "(selective search where installed) or none")
            crop_note = proposals_note(cfg, available)  # said below, once nothing is refused
        run = Path(cfg.run_dir)
        refuse_other_recipe(run, cfg, allowed, self)  # read-only: every rank stops, not only rank 0
        if run.is_dir() and not (run / "config.json").is_file() and any(p.name != "splits" for p in run.iterdir()):
            # e.g. a dataset root given as --run-dir: the run's files would land among the user's own. (splits/:
            # the transfer family writes its both-domains split there before the run starts.)
            raise HetsegError(f"--run-dir {run}: a folder holding other files and no config.json, so not a hetseg run; "
                              "fix: give --run-dir a new or empty folder")
        # Checked against data.num_classes before anything is written; a pretraining-only run (extra stages,
        # e.g. pre on Fashion-MNIST items) reads no class list of the data set, so its own checks speak.
        names = class_names(cfg, check=bool(set(stages) & set(self.stages)))
        # Every marker is read (and checked) here, before config.json is written: a bad one found in the stage
        # loop left a rewritten config behind.
        marked = [s for s in allowed if stage_done(run, s) is not None]
        if marked and not (run / "model.safetensors").is_file():
            # A finished stage whose weights are gone must not be replaced by fresh weights.
            raise HetsegError(f"{run / 'model.safetensors'}: missing, but stage '{marked[0]}' is marked done; fix: "
                              f"restore the file, or delete {run / marked[0] / 'done.json'} to retrain that stage")
        if resume is not None and trained_stages(run, stages) == list(stages):
            # every stage asked for is trained: the checkpoint would be dropped without a word
            raise HetsegError(f"--resume {resume}: stage {', '.join(stages)} of {run} is already trained, so the "
                              f"checkpoint would be ignored; fix: drop --resume, or delete {run / stages[-1] / 'done.json'}"
                              " to train that stage again from it")
        if init_from is not None and (not str(init_from).strip() or trained_stages(run, stages) == list(stages)):
            # an empty path read as "no --init-from"; a trained run skipped its stages and dropped the weights
            why = ("is empty" if not str(init_from).strip() else
                   f"stage {', '.join(stages)} of {run} is already trained, so the weights would be ignored")
            raise HetsegError(f"--init-from {init_from}: {why}; fix: give a run dir or .safetensors and a --run-dir "
                              "that has not trained these stages")
        net = self.build(cfg)
        fresh = not (run / "model.safetensors").is_file() and not init_from
        init_weights(net, cfg, init_from)
        source = init_record(init_from)
        self.prepare(net, cfg, fresh)
        done = trained_stages(run, stages)  # read once: each call reads every stage's files
        todo = [s for s in stages if s not in done]  # what this command will train
        if set(todo) & set(self.mask_stages):
            # Before the first stage: a wrong strong split or a bad mask used to surface only when the stage
            # reading it began (after the classifier's whole budget) or when a crop first sampled the mask.
            from hetseg.data.datasets import check_strong_masks
            from hetseg.engine.context import load_config_split

            for setting in self.mask_splits(cfg):
                check_strong_masks(load_config_split(cfg, setting), cfg.data.num_classes)
        self.check_stage_data(cfg, todo)
        if resume is not None:  # a checkpoint of another stage, or none at all: refused before any note is said
            check_checkpoint(resume, todo[0])  # never empty here: a --resume with nothing to train is refused above
        missing = untrained_before(run, self.default_stages(cfg), stages, source)
        if missing and is_rank_zero():  # cheap to say now; eval and predict said it only after the training
            note(f"{run}: stage {', '.join(missing)} has no trained weights here (not trained in this run nor brought "
                 f"by --init-from), so stage {stages[0]} trains on its initial weights; fix: train {missing[0]} first, "
                 "or --init-from a run that has")
        for line in ([crop_note] if crop_note else []) + list(notes):
            if is_rank_zero():
                note(line)
        new_run = not run.exists()
        if is_rank_zero():  # only now: a run refused above (bad data, bad --init-from) leaves no run dir behind
            cfg.save(run / "config.json")
        try:
            return self._train_stages(run, net, cfg, stages, names, resume, callbacks, progress, source)
        except HetsegError:
            if new_run and is_rank_zero():
                remove_if_untrained(run)  # a run refused at its first stage's data leaves no folder either
            raise

    def _train_stages(self, run: Path, net: nn.Module, cfg: Config, stages: Sequence[str], names: list[str],
                      resume: str | None, callbacks: Sequence, progress: bool, source: dict | None = None) -> dict:
        """The stage loop of :meth:`train`: skip finished stages, train the others, model file then marker.
        ``source`` is :func:`init_record` of this command's ``--init-from`` (None: none given)."""
        prev = read_model_json(run) if (run / "model.json").is_file() else {}
        # What the weights started from. Unknown (no key): a run written before hetseg recorded it, or a first
        # stage resumed from a checkpoint whose command may have named --init-from.
        if source:
            started = {"init_from": source}
        elif prev:
            started = {"init_from": prev["init_from"]} if "init_from" in prev else {}
        else:
            started = {} if resume is not None or trained_stages(run, stages, checkpoints=True) else {"init_from": None}
        stages_meta, splits_meta = dict(prev.get("stages", {})), dict(prev.get("splits", {}))
        summaries: dict = {}
        for stage in stages:
            done = stage_done(run, stage)
            if done is None and stage in stages_meta:
                # Killed after the model file and before the marker: the model is the truth.
                done = stages_meta[stage]
                if is_rank_zero():
                    mark_done(run, done)
            if done is not None:
                summaries[stage] = {**done, "skipped": True}  # trained before: said so by the command line
                continue
            summary, splits = self.run_stage(stage, net, cfg, resume, callbacks, progress)
            resume = None  # an explicit checkpoint belongs to the first stage only
            summaries[stage] = summary
            stages_meta[stage] = summary
            splits_meta.update(splits)
            if not is_rank_zero():
                continue
            save_model(run, net, cfg, names, {"method": self.name, "threshold": self.threshold(cfg),
                                              "stages": stages_meta, "splits": splits_meta,
                                              "command": command_line(), **started})
            self.after_stage(stage, net, cfg)
            fault_point(f"saved:{stage}")
            mark_done(run, summary)
            fault_point(f"done:{stage}")
        return summaries


def get_method(name: str, given_as: str = "model.name=") -> Method:
    """The registered method ``name`` (importing hetseg.methods registers them all); ``given_as`` names the
    setting the user typed in the error (``"--method "`` on the command line)."""
    import hetseg.methods  # noqa: F401 - registration side effect

    if name not in METHODS:
        raise HetsegError(f"{given_as}{name}: unknown method; fix: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]
