"""Validation of config values and the deep merge that every load and override goes through.

Split from ``config.py`` (the dataclasses and ``Config``) so that each stays one screen: a leaf is
type- and range-checked by name (``_MIN`` / ``_MAX`` apply to a field name wherever it appears,
``_CHOICES`` to one dotted key, ``_STAGE_CHOICES`` to a field of any stage section), and ``merge``
builds a new dataclass from a mapping, refusing unknown keys. Errors are one line naming the key.
:class:`YamlLoader` is the YAML reader every config file and override goes through;
:func:`parse_override`, :func:`override_keys` and :func:`refuse_repeated` read ``key=value`` overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import reprlib
import typing
from typing import Any

import yaml

from hetseg.data.classes import IGNORE_INDEX
from hetseg.errors import HetsegError

SEED_MAX = 2**32 - 1  # numpy's seeding accepts [0, 2**32 - 1]; the CLI's --seed(s) use the same bound

_CHOICES = {
    "model.scale": ("cpu", "paper"), "model.weight_pool": ("avg", "max"),
    "crops.proposals": ("auto", "none", "selective-search"), "transfer.attention": ("code", "paper"),
    "model.decoder_stride": (0, 2, 4, 8, 16),
}
# Paths that must name something: an empty value (an unset shell variable in data.root=$ROOT) read
# as the current folder. Path settings whose empty value means "unset" (data.labels, model.backbone)
# are not here.
_NONEMPTY = frozenset({"data.root", "data.weak_split", "data.strong_split", "data.val_split", "eval.split",
                       "transfer.source_split", "transfer.target_split", "transfer.val_split", "run_dir"})
_STAGE_CHOICES = {"optimizer": ("sgd", "adam"), "label_loss": ("mean", "caffe"),
                  "precision": ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64", "64-true")}
# (minimum, exclusive?) per field name, wherever it appears
_MIN = {"steps": (1, False), "batch_size": (1, False), "accumulate": (1, False), "checkpoint_every": (1, False),
        "num_classes": (2, False), "lr": (0.0, True), "momentum": (0.0, False), "weight_decay": (0.0, False),
        "lr_step": (0.0, True), "val_every": (0, False), "workers": (0, False), "crops_per_subset": (1, False),
        "full_image_prob": (0.0, False), "max_scale": (0.0, True), "pretrain_holdout": (0, False),
        "seg_weight": (0.0, False), "t_train": (0, False), "t_test": (0, False),
        "infer_lr": (0.0, True), "recon_weight": (0.0, False), "input_size": (0, False), "width": (0, False), "bridge_kernel": (0, False), "bg_scale": (0.0, True), "feature_scale": (0.0, False), "embed_dim": (0, False),
        "pretrained_lr_mult": (0.0, False), "seed": (0, False), "threshold": (0.0, False)}
_MAX = {"num_classes": IGNORE_INDEX,  # 8-bit masks: classes 0..254, 255 void
        "lr_step": 1.0, "full_image_prob": 1.0, "momentum": 1.0, "threshold": 1.0, "seed": SEED_MAX}


class YamlLoader(yaml.SafeLoader):
    """YAML with exponent floats: PyYAML follows YAML 1.1, where ``1e-3`` and ``1e-05`` (json.dumps'
    form of 0.00001, so a run's own config.json) are strings, and every lr below 1e-4 was refused. Only
    a signed exponent without a dot counts (json writes ``1e-05`` and ``1e+16``), so a name such as
    ``1e3`` stays a string as before. Numbers are decimal only: YAML 1.1's base-60 (``seed=1:30`` was
    seed 90) and leading-zero octal (``010`` was 8) stay strings, which the type check then names.
    A key given twice in one mapping is an error (the first value was dropped without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"found the key {key!r} twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


YamlLoader.yaml_implicit_resolvers = {  # SafeLoader's int and float rules out: they accept base 60 and octal
    ch: [(tag, rx) for tag, rx in rules if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for ch, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"),
                                 list("-+0123456789"))
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+][0-9]+)
                    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 8, 8, 6, 60, 60


def shown(v: Any, width: int = 120) -> str:
    """``repr(v)``, at most ``width`` characters (reprlib cuts nesting and items first, so a huge value is
    never rendered whole): a YAML alias bomb of nine nested nine-item lists printed a 312 MB error line."""
    r = _SHORT.repr(v)
    return r if len(r) <= width else r[:width - 3] + "..."


def check_value(t: Any, v: Any, key: str, where: str) -> Any:
    """Type- and range-check one leaf value; returns it converted (int -> float for float fields)."""
    def bad(expect: str):
        return HetsegError(f"{where}: {key}: expected {expect}, got {shown(v)}; fix: set {key} to {expect}")

    origin = typing.get_origin(t)
    name = key.rsplit(".", 1)[-1]
    choices = _CHOICES.get(key) or (_STAGE_CHOICES.get(name) if "." in key else None)
    if t is bool:
        if not isinstance(v, bool):
            raise bad("true or false")
    elif t is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad("an integer")
    elif t is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad("a finite number")
        v = float(v)
    elif t is str:
        if isinstance(v, int) and not isinstance(v, bool) and choices and str(v) in choices:
            v = str(v)  # precision=32 reads as the number 32; "32" is the choice it names
        if not isinstance(v, str):
            raise bad("one of " + " | ".join(map(str, choices)) if choices else "a string")
        if key in _NONEMPTY and not v.strip():
            raise HetsegError(f"{where}: {key}: empty (it would read the current folder); fix: set {key} to a path")
    elif origin is list:
        (item_t,) = typing.get_args(t)
        if not isinstance(v, list):
            raise bad("a list")
        v = [check_value(item_t, x, f"{key}[]", where) for x in v]
    if name in _MIN and isinstance(v, (int, float)) and not isinstance(v, bool):
        lo, strict = _MIN[name]
        if v < lo or (strict and v == lo):
            raise bad(f"a value {'>' if strict else '>='} {lo}")
    if name in _MAX and isinstance(v, (int, float)) and v > _MAX[name]:
        raise bad(f"a value <= {_MAX[name]}")
    if choices and isinstance(v, (str, int)) and v not in choices:
        raise bad("one of " + " | ".join(map(str, choices)))
    return v


def merge(base: Any, d: dict[str, Any], where: str, prefix: str) -> Any:
    """A copy of dataclass ``base`` with ``d`` merged in, recursively; unknown keys refused."""
    hints = typing.get_type_hints(type(base))
    names = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(d) - set(names), key=str)  # YAML keys may be numbers: 1: a
    if unknown:
        key = prefix + str(unknown[0])
        raise HetsegError(f"{where}: unknown config key '{key}'; fix: see config.json of a run for the keys "
                          f"(section '{prefix.rstrip('.') or 'top'}' has {', '.join(names)})")
    kwargs = {}
    for name in names:
        cur = getattr(base, name)
        key = prefix + name
        if name not in d:
            kwargs[name] = copy.deepcopy(cur)
            continue
        v = d[name]
        if dataclasses.is_dataclass(hints[name]):
            if v is None:
                v = {}
            if not isinstance(v, dict):
                raise HetsegError(f"{where}: {key}: expected a section (mapping), got {shown(v)}; fix: write "
                                  f"{key}.<field>=... or a '{name}:' mapping")
            kwargs[name] = merge(cur, v, where, key + ".")
        else:
            kwargs[name] = check_value(hints[name], v, key, where)
    return type(base)(**kwargs)


__all__ = ["SEED_MAX", "YamlLoader", "check_value", "merge", "override_keys", "parse_override", "refuse_repeated"]


# Command-line overrides (``key=value``), read as Config.override reads them.
def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, the value read as YAML; the raw text where it is not YAML)."""
    key, _, value = item.partition("=")
    try:
        return key, yaml.load(value, Loader=YamlLoader) if value.strip() else ""
    except yaml.constructor.ConstructorError as e:
        if str(e.problem).endswith("twice"):  # seg={steps: 3, steps: 4}: not "expected a section"
            raise HetsegError(f"{item}: {e.problem}; fix: give each key once") from None
        return key, value
    except (yaml.YAMLError, RecursionError):
        return key, value


def refuse_repeated(items: list[str], taken: dict[str, str] | None = None) -> None:
    """One line when two ``key=value`` overrides set one leaf key, or one sets a key that ``taken`` (key ->
    the option that set it, e.g. ``{"model.name": "--method dis"}``) already holds: only the last was read,
    as with an option or a YAML key given twice, which are refused too."""
    seen = dict(taken or {})
    for item in items:
        for key in override_keys(item):
            if key in seen:
                raise HetsegError(f"{item}: {key} is set twice (also by {seen[key]}), and only the last would be "
                                  "read; fix: give it once")
            seen[key] = item


def override_keys(item: str) -> list[str]:
    """The dotted leaf keys a ``key=value`` override sets: ``seg.steps=3`` -> [seg.steps];
    ``seg={steps: 3, lr: 0.1}`` -> [seg.steps, seg.lr] (a mapping value is merged leaf by leaf)."""
    key, parsed = parse_override(item)

    def leaves(prefix: str, v: Any) -> list[str]:
        if isinstance(v, dict) and v:
            return [k for sub, vv in v.items() for k in leaves(f"{prefix}.{sub}", vv)]
        return [prefix]

    return leaves(key, parsed)
