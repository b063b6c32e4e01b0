"""Experiment configs: YAML -> frozen dataclasses, refusing anything unknown or out of range.

Every field declares its own constraint (like scikit-learn's ``_parameter_constraints``), and
every refusal is one line naming the file (or the ``--set`` override that gave the value), the
dotted key, what was expected and what was given:

    configs/x.yaml: optim.lr: expected a number > 0, got -1
    --set optim.lr=-1: optim.lr: expected a number > 0, got -1

Unknown keys are refused with the closest valid key suggested (nanoGPT's configurator refuses
them too). The resolved config is saved with every run, so a run folder says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnletters.errors import ConfigError, one_line


def _spec(default: Any, *, choices: tuple | None = None, low: float | None = None,
          high: float | None = None, low_open: bool = False, high_open: bool = False,
          doc: str = "") -> Any:
    """A dataclass field with its valid range attached as metadata."""
    meta = {"choices": choices, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "doc": doc}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SyntheticConfig:
    """Letters rendered from the machine's fonts (``data.source: synthetic``)."""

    letters: str = _spec("A-Z", doc="letters to render: a range 'A-J' or a list 'ABC'")
    per_class: int = _spec(300, low=1, doc="images rendered per letter")
    style: str = _spec("notmnist", choices=("notmnist", "ink", "seed"),
                       doc="notmnist: light glyph filling the frame on dark; ink: dark on "
                           "light (seed: ink's old name)")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of training batches; off unless ``enabled``."""

    enabled: bool = _spec(False, doc="augment training batches on the fly")
    translate: float = _spec(0.0, low=0.0, high=0.5, doc="max shift, fraction of image size")
    rotate: float = _spec(0.0, low=0.0, high=45.0, doc="max rotation, degrees")
    shear: float = _spec(0.0, low=0.0, high=45.0, doc="max shear, degrees")
    scale: float = _spec(0.0, low=0.0, high=0.5, doc="max relative zoom in or out")
    elastic_alpha: float = _spec(0.0, low=0.0, doc="elastic distortion strength, pixels")
    elastic_sigma: float = _spec(4.0, low=0.0, low_open=True, doc="elastic smoothness, pixels")
    stroke: float = _spec(0.0, low=0.0, high=1.0, doc="probability of thickening/thinning")


@dataclass(frozen=True)
class DataConfig:
    source: str = _spec("path", choices=("path", "synthetic"),
                        doc="path: images from data.path; synthetic: letters rendered from fonts")
    path: str | None = _spec(None, doc="folder, archive (.tar.gz/.tgz/.tar/.zip) or list file")
    image_size: int = _spec(28, low=4, high=256, doc="images are resized to this square size")
    val_fraction: float = _spec(0.1, low=0.0, high=1.0, high_open=True,
                                doc="share for validation (seeded, stratified) without split files")
    test_fraction: float = _spec(0.1, low=0.0, high=1.0, high_open=True,
                                 doc="share for the test figures, likewise")
    dedup: bool = _spec(False, doc="drop training images pixel-identical to a val/test image")
    cache: bool = _spec(True, doc="cache decoded arrays between runs")
    cache_dir: str | None = _spec(None, doc="where the cache lives (default ~/.cache/nnletters)")
    workers: int = _spec(0, low=0, doc="decoding processes; 0 picks one per core")
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    hidden: list = _spec([256], doc="hidden layer widths; [] is a single linear layer")
    activation: str = _spec("relu", choices=("relu", "leaky_relu", "tanh", "sigmoid"),
                            doc="activation after each hidden layer")
    init: str = _spec("he", choices=("he", "xavier"),
                      doc="initial weights: he (for ReLUs) or xavier (for tanh/sigmoid)")
    dropout: float = _spec(0.0, low=0.0, high=1.0, high_open=True,
                           doc="inverted dropout rate after each hidden layer")
    loss: str = _spec("cross_entropy", choices=("cross_entropy", "quadratic"),
                      doc="cross_entropy: softmax output; quadratic: sigmoid output, the seed's")
    batch_norm: bool = _spec(False, doc="batch normalisation before each hidden activation")
    label_smoothing: float = _spec(0.0, low=0.0, high=1.0, high_open=True,
                                   doc="cross_entropy against targets smoothed by this much")


@dataclass(frozen=True)
class OptimConfig:
    name: str = _spec("momentum", choices=("sgd", "momentum", "nesterov", "adam", "adamw"),
                      doc="the optimiser")
    lr: float = _spec(0.05, low=0.0, low_open=True, doc="learning rate (the schedule starts here)")
    momentum: float = _spec(0.9, low=0.0, high=1.0, high_open=True,
                            doc="momentum / nesterov: velocity decay")
    weight_decay: float = _spec(0.0, low=0.0, doc="L2 on weights only (decoupled for adamw)")
    beta1: float = _spec(0.9, low=0.0, high=1.0, high_open=True,
                         doc="adam/adamw: decay of the gradient average")
    beta2: float = _spec(0.999, low=0.0, high=1.0, high_open=True,
                         doc="adam/adamw: decay of the squared-gradient average")
    eps: float = _spec(1e-8, low=0.0, low_open=True, doc="adam/adamw: added to the denominator")
    max_norm: float = _spec(0.0, low=0.0, doc="max L2 norm of each unit's incoming weights; 0 off")
    ema: float = _spec(0.0, low=0.0, high=1.0, high_open=True,
                       doc="decay of an exponential moving average of the weights; 0 off")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = _spec("constant", choices=("constant", "step", "exponential", "cosine", "plateau"),
                      doc="how the learning rate changes per epoch")
    step_size: int = _spec(10, low=1, doc="step: epochs between decays")
    gamma: float = _spec(0.5, low=0.0, high=1.0, low_open=True, doc="step/exponential factor")
    min_lr: float = _spec(0.0, low=0.0, doc="cosine: final learning rate")
    factor: float = _spec(0.5, low=0.0, high=1.0, low_open=True, high_open=True,
                          doc="plateau: multiply lr by this when the metric stalls")
    patience: int = _spec(2, low=0, doc="plateau: epochs without improvement before decaying")
    warmup_epochs: int = _spec(0, low=0, doc="linear warm-up from lr/10 over this many epochs")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = _spec(True, doc="stop when the monitored metric stops improving")
    monitor: str = _spec("val_accuracy", choices=("val_accuracy", "val_loss"),
                         doc="the metric that picks the best epoch (best.npz)")
    patience: int = _spec(5, low=1, doc="epochs without improvement before stopping")
    min_delta: float = _spec(0.0, low=0.0, doc="smallest change that counts as improvement")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _spec(10, low=1, doc="epochs to train (at most, with early stopping)")
    batch_size: int = _spec(128, low=1, doc="images per optimiser step")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    diagnostics: bool = _spec(True, doc="per-layer gradient and weight norms, dead or "
                                        "saturated units, in every metrics row")
    tensorboard: bool = _spec(False, doc="TensorBoard event files in RUN/tensorboard/ "
                                         "(the 'tensorboard' extra)")
    kernels: str = _spec("auto", choices=("auto", "numpy", "numba"),
                         doc="numba: fused kernels, same results (the 'fast' extra); "
                             "auto: numba when installed, for models of 500k+ parameters")


@dataclass(frozen=True)
class Config:
    seed: int = _spec(0, low=0, doc="one seed: split, initial weights, shuffling, dropout, "
                                    "augmentation")
    name: str = _spec("run", doc="run folder prefix: runs/<name>-<time>")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file (or start from defaults when ``path`` is None), apply ``key=value``
    overrides, and validate everything. Raises ConfigError with a one-line message that
    names the override for a value given by one, and the file for the others."""
    raw: dict = {} if path is None else read_yaml_mapping(Path(path))
    where = str(path) if path is not None else "config"
    origins: dict[str, str] = {}  # dotted key -> the override that set it
    for item in overrides:
        key = _apply_override(raw, item)
        # A later override of a whole section replaces what earlier ones set inside it.
        origins = {k: v for k, v in origins.items() if not k.startswith(key + ".")}
        origins[key] = f"--set {item}"
    return from_dict(raw, where, origins=origins)


def read_yaml_mapping(path: Path) -> dict:
    """Parse a YAML file that must hold a mapping; errors name the file (and line, column)."""
    import yaml

    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "syntax error"
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {one_line(exc, 1000)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, "
                          f"got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict, item: str) -> str:
    """Set ``key=value`` (value parsed as YAML) in ``raw``; -> the dotted key."""
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return key


def from_dict(raw: dict, where: str = "config", cls: type = Config, prefix: str = "", *,
              origins: dict[str, str] | None = None) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges recursively.

    ``origins``: dotted key -> the ``--set`` override that gave it, named in errors instead
    of ``where`` (the file)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else \
                f" (valid keys: {', '.join(fields)})"
            raise ConfigError(f"{_source(where, origins, dotted)}: unknown key '{dotted}'{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        dotted, value, hint = f"{prefix}{name}", raw[name], hints[name]
        if dataclasses.is_dataclass(hint):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{_source(where, origins, dotted)}: {dotted}: expected a "
                                  f"section (mapping), got {value!r}")
            values[name] = from_dict(value, where, hint, dotted + ".", origins=origins)
        else:
            values[name] = _check_value(_source(where, origins, dotted), dotted, value, hint,
                                        f.metadata)
    cfg = cls(**values)
    if cls is Config:
        _check_config(cfg, where, origins)
    return cfg


def _source(where: str, origins: dict[str, str] | None, *dotted: str) -> str:
    """What to name in an error about the keys ``dotted``: the first override that set one
    of them (or a section holding it, or a key inside it), else ``where``."""
    origins = origins or {}
    for key in dotted:
        parts = key.split(".")
        for depth in range(len(parts), 0, -1):  # the key itself, then its sections
            if ".".join(parts[:depth]) in origins:
                return origins[".".join(parts[:depth])]
        inside = [v for k, v in origins.items() if k.startswith(key + ".")]
        if inside:
            return inside[0]  # an unknown section that an override created
    return where


def _check_value(where: str, dotted: str, value: Any, hint: Any, meta: Any) -> Any:
    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{where}: {dotted}: expected {expected}, got {value!r}")

    optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
    base = next((a for a in hint.__args__ if a is not type(None)), hint) if optional else hint
    if value is None:
        if optional:
            return None
        fail(_describe(base, meta))
    if base is bool:
        if not isinstance(value, bool):
            fail("true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(_describe(base, meta))
    elif base is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; it means a number
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(_describe(base, meta))
    elif base is str:
        if not isinstance(value, str):
            fail(_describe(base, meta))
    elif base is list:
        if not isinstance(value, list) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            fail("a list of positive whole numbers, e.g. [512, 256]")
        return list(value)
    choices = meta.get("choices")
    if choices and value not in choices:
        fail(_describe(base, meta))
    if not _in_range(value, meta):
        fail(_describe(base, meta))
    return float(value) if base is float else value


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _in_range(value: Any, meta: Any) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        return False
    return not (high is not None and (value > high or (meta.get("high_open") and value == high)))


def _describe(base: Any, meta: Any) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    kind = {bool: "true or false", int: "a whole number", float: "a number",
            str: "a string"}.get(base, str(base))
    low, high = meta.get("low"), meta.get("high")
    lo = None if low is None else f"{'>' if meta.get('low_open') else '>='} {_num(low)}"
    hi = None if high is None else f"{'<' if meta.get('high_open') else '<='} {_num(high)}"
    bounds = " and ".join(b for b in (lo, hi) if b)
    return f"{kind} {bounds}" if bounds else kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_config(cfg: Config, where: str, origins: dict[str, str] | None = None) -> None:
    """Checks that involve more than one field."""
    d = cfg.data
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError(
            f"{_source(where, origins, 'data.val_fraction', 'data.test_fraction')}: "
            f"data.val_fraction + data.test_fraction: expected a sum < 1 so that "
            f"training data is left, got {d.val_fraction} + {d.test_fraction}")
    if d.source == "path" and not d.path:
        raise ConfigError(f"{_source(where, origins, 'data.path')}: data.path: expected a "
                          f"folder, archive or list file (or data.source: synthetic), "
                          + ("but none is set" if d.path is None else f"got {d.path!r}"))
    if cfg.model.loss == "quadratic" and cfg.model.label_smoothing:
        raise ConfigError(f"{_source(where, origins, 'model.label_smoothing', 'model.loss')}: "
                          f"model.label_smoothing: expected 0 with the quadratic loss, "
                          f"got {cfg.model.label_smoothing}")


# --------------------------------------------------------------------------- saving


def reference(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, default, accepted values, meaning) for every key, in file order: the
    README's config reference is generated from this, so it cannot drift."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows += reference(hint, dotted + ".")
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        accepted = ("a list of whole numbers >= 1" if base is list
                    else _describe(base, f.metadata))
        if type(None) in typing.get_args(hint):
            accepted += " (or empty)"
        shown = "(none)" if default is None else json.dumps(default)
        rows.append((dotted, shown, accepted, f.metadata.get("doc", "")))
    return rows


def reference_markdown() -> str:
    """``reference()`` as a Markdown table."""
    lines = ["| key | default | accepted | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | `{d}` | {a} | {m} |" for k, d, a, m in reference()]
    return "\n".join(lines) + "\n"


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML-ready data (the resolved config saved with each run)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
