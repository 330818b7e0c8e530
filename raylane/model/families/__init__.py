"""Model families, one module each, and the registry configs name them by.

Adding a family: a module with a ``Family`` subclass (estimators, defaults, how it grows in steps,
its ONNX converter) and one ``register(...)`` line below. Preprocessing is shared by every family
(``raylane.model.preprocessing``); the ONNX graph around the model is built by
``raylane.release.export``.
"""

from __future__ import annotations

from collections.abc import Mapping

from raylane.model.families.base import Family, Growth, WarmStartFamily, fit_once, model_output
from raylane.model.families.hist_gradient_boosting import HistGradientBoosting
from raylane.model.families.linear import Linear
from raylane.model.families.random_forest import RandomForest
from raylane.model.families.xgboost import XGBoost

FAMILIES: dict[str, Family] = {}
FAMILY_ALIASES: dict[str, str] = {}  # alias -> family name
TASKS = ("classification", "regression")


def register(family: Family) -> Family:
    """Make ``family`` (and its aliases) available to configs; returns it."""
    if not getattr(family, "name", None) or not isinstance(getattr(family, "estimators", None),
                                                            Mapping):
        raise ValueError(f"{type(family).__name__}: a family needs a name and estimators")
    names = [family.name, *family.aliases]
    taken = [n for n in names if n in FAMILIES or n in FAMILY_ALIASES]
    if taken:
        raise ValueError(f"family {family.name}: name(s) already registered: {taken}")
    missing = [t for t in TASKS if t not in family.estimators]
    if missing:
        raise ValueError(f"family {family.name}: no estimator for {missing}")
    FAMILIES[family.name] = family
    FAMILY_ALIASES.update(dict.fromkeys(family.aliases, family.name))
    return family


def unregister(name: str) -> None:
    """Remove the family called ``name`` and its aliases."""
    family = FAMILIES.pop(name)
    for alias in family.aliases:
        FAMILY_ALIASES.pop(alias, None)


def get_family(name: str) -> Family:
    """The family called ``name`` (aliases allowed); KeyError if there is none."""
    key = FAMILY_ALIASES.get(name, name)
    if key not in FAMILIES:
        raise KeyError(name)
    return FAMILIES[key]


def family_of(estimator) -> Family:
    """The registered family whose estimator ``estimator`` is."""
    for family in FAMILIES.values():
        if type(estimator) in family.estimators.values():
            return family
    raise KeyError(f"no registered family builds {type(estimator).__name__}")


register(XGBoost())
register(RandomForest())
register(HistGradientBoosting())
register(Linear())

__all__ = [
    "FAMILIES", "FAMILY_ALIASES", "Family", "Growth", "WarmStartFamily", "family_of", "fit_once",
    "get_family", "model_output", "register", "unregister",
]
