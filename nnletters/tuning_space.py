"""A search space for ``nnletters tune``: SPACE.yaml maps dotted config keys to distributions.

    optim.lr: {log_uniform: [1.0e-4, 3.0e-3]}
    model.dropout: {uniform: [0.0, 0.5]}
    train.epochs: {int: [20, 60]}
    model.hidden: {choice: [[512], [1024, 512]]}

Each entry becomes an Optuna distribution; a sampled value becomes a ``--set``-style override
``key=<JSON>`` (JSON is YAML), so every trial's config goes through ``config.load_config`` and
its checks, like ``nnletters train --set``. The space is checked before any trial starts: the
ends of every range and every choice must give a valid config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnletters.config import Config, load_config, read_yaml_mapping
from nnletters.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Param:
    """One dimension: ``key`` (dotted config key), ``kind`` (one of KINDS) and ``values``
    (low and high for the ranges, the options for ``choice``)."""

    key: str
    kind: str
    values: tuple

    def distribution(self) -> Any:
        """The Optuna distribution; choices are stored as their JSON text (Optuna's
        categorical values must be scalars, a layer list is not)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution([json.dumps(v) for v in self.values])
        if self.kind == "int":
            return IntDistribution(*self.values)
        return FloatDistribution(*self.values, log=self.kind == "log_uniform")

    def decode(self, value: Any) -> Any:
        """Optuna's value -> the config value (a choice's JSON text -> the choice)."""
        return json.loads(value) if self.kind == "choice" else value

    def override(self, value: Any) -> str:
        """The ``key=value`` override for a config value."""
        return f"{self.key}={json.dumps(value)}"

    def corners(self) -> list[Any]:
        """The values whose configs must all be valid for the whole range to be."""
        return list(self.values)

    def grid(self) -> list[Any]:
        """Optuna values for ``--grid``: every choice, every whole number of an int range."""
        if self.kind == "choice":
            return [json.dumps(v) for v in self.values]
        if self.kind == "int":
            return list(range(self.values[0], self.values[1] + 1))
        raise ConfigError(f"{self.key}: --grid needs choice or int entries, got {self.kind} "
                          f"(write the values to try as {{choice: [...]}})")


def load_space(path: str | Path) -> list[Param]:
    """Read SPACE.yaml; ConfigError with one line naming the file and key for a bad entry."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    if not raw:
        raise ConfigError(f"{path}: the space is empty; map dotted config keys to "
                          "distributions, e.g. optim.lr: {log_uniform: [1.0e-4, 3.0e-3]}")
    return [_param(path, str(key), spec) for key, spec in raw.items()]


def _param(path: Path, key: str, spec: Any) -> Param:
    where = f"{path}: {key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution ({', '.join(KINDS)}), e.g. "
                          f"{{uniform: [0.0, 0.5]}}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; expected one of "
                          f"{', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice: expected a non-empty list, got {values!r}")
        return Param(key, kind, tuple(values))
    return Param(key, kind, _bounds(where, kind, values))


def _bounds(where: str, kind: str, values: Any) -> tuple:
    number = int if kind == "int" else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or any(isinstance(v, bool) or not isinstance(v, number) for v in values)):
        what = "whole numbers" if kind == "int" else "numbers"
        raise ConfigError(f"{where}: {kind}: expected [low, high], two {what}, got {values!r}")
    low, high = values
    if low > high:
        raise ConfigError(f"{where}: {kind}: expected low <= high, got {values!r}")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform: expected low > 0, got {values!r}")
    return (low, high) if kind == "int" else (float(low), float(high))


def check_space(space: list[Param], base: str | Path, overrides: tuple[str, ...],
                space_path: str | Path) -> Config:
    """Build the config at every end of every range and every choice, with the base config
    and ``overrides``; -> the base config. A key the config does not have, or a value it
    could never accept, is refused before any trial starts, with train's one-line error."""
    cfg = load_config(base, overrides)
    for param in space:
        for value in param.corners():
            item = param.override(value)
            try:
                load_config(base, (*overrides, item))
            except ConfigError as exc:
                message = str(exc).removeprefix(f"--set {item}: ")
                raise ConfigError(f"{space_path}: {message}") from None
    return cfg


def base_params(space: list[Param], cfg: Config, space_path: str | Path) -> dict[str, Any]:
    """Optuna's values for the base config's own settings of the space's keys (``tune
    --baseline`` queues them as a trial); ConfigError naming the key when a setting lies
    outside its range or is not one of its choices."""
    params = {}
    for p in space:
        value: Any = cfg
        for part in p.key.split("."):
            value = getattr(value, part)
        if p.kind == "choice":
            text = json.dumps(value)  # a tuple of widths is the list [1024, 512]
            if text not in p.distribution().choices:
                raise ConfigError(f"{space_path}: {p.key}: --baseline: the base config's "
                                  f"{text} is not one of the choices")
            params[p.key] = text
        elif not p.values[0] <= value <= p.values[1]:
            raise ConfigError(f"{space_path}: {p.key}: --baseline: the base config's {value} "
                              f"is outside [{p.values[0]}, {p.values[1]}]")
        else:
            params[p.key] = value
    return params


def space_json(space: list[Param]) -> str:
    """A canonical text of the space, kept in the study to refuse a different one later."""
    return json.dumps([[p.key, p.kind, list(p.values)] for p in space], sort_keys=True)


def describe(space: list[Param]) -> str:
    return "; ".join(f"{p.key} {p.kind} {list(p.values)}" for p in space)
