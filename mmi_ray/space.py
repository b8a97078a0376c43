"""A sweep's search space: one searched key (``Param``), and the space as Optuna draws it
(``ConditionalSpace``: a define-by-run function that leaves out keys that mean nothing given the
others, by the rules in ``config.CONDITIONS``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from .config import CONDITIONS, Section, active


class Param(Section):
    """One searched key: a distribution or a list of choices."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    """``uniform`` / ``loguniform`` floats, ``int`` (``log: true`` for a log scale), ``choice``."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    """``int`` only: sample on a log scale."""
    values: list[Any] | None = None
    """``choice`` only: the candidates."""

    @model_validator(mode="after")
    def _check(self):
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"low must be < high (got low={self.low}, high={self.high})")
        if (self.type == "loguniform" or self.log) and self.low <= 0:
            raise ValueError(f"low must be > 0 on a log scale (got {self.low})")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int bounds must be whole numbers")
        return self

    def optuna_distribution(self):
        import optuna.distributions as d

        if self.type == "choice":
            return d.CategoricalDistribution(self.values)
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(self.low, self.high, log=self.type == "loguniform")

    def suggest(self, trial, name: str) -> Any:
        """Draw this key from an Optuna trial (define-by-run)."""
        if self.type == "choice":
            return trial.suggest_categorical(name, self.values)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.type == "loguniform")

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.low <= value <= self.high


class ConditionalSpace:
    """The search space as Optuna's define-by-run function (Ray's ``OptunaSearch`` takes one): a key
    that means nothing given the values drawn before it (``config.CONDITIONS``: the MI estimator at
    ``mi_weight: 0``, the critic size of an estimator without a critic) is not drawn but set to the
    base config's value, so no trial is spent on a configuration that is another one again. A plain
    class, not a closure: the searcher's state is pickled with it for ``--resume``."""

    def __init__(self, search: dict[str, Param], base: dict[str, Any]):
        self.search = search
        self.base = base
        """The base config's value of every dotted key (searched keys take it when they mean nothing)."""
        self.order = search_order(list(search))

    def __call__(self, trial) -> dict[str, Any]:
        values, constants = dict(self.base), {}
        for key in self.order:
            if active(key, values):
                values[key] = self.search[key].suggest(trial, key)
            else:
                values[key] = constants[key] = self.base[key]
        return constants

    def canonical(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with every key that means nothing given the others at the base config's value."""
        values = {**self.base, **params}
        return {k: v if active(k, values) else self.base[k] for k, v in params.items()}

    def drawn(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keys of ``params`` that the space draws (a point to evaluate, as Optuna enqueues it)."""
        values = {**self.base, **params}
        return {k: v for k, v in params.items() if active(k, values)}


def search_order(keys: list[str]) -> list[str]:
    """``keys``, each after the keys its meaning depends on (``config.CONDITIONS``), else as given."""
    def depth(key: str) -> int:
        return 1 + depth(CONDITIONS[key][0]) if key in CONDITIONS else 0

    return sorted(keys, key=depth)
