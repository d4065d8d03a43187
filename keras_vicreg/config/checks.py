"""Checks of a config against its default: every key known and of its declared type, numbers in
range. Generic over the config (a `ml_collections.ConfigDict`); the pretraining config's own rules
are `keras_vicreg.config.pretraining.validate`'s. Each check appends messages to a list, so that
`validate` reports every problem of a config at once.
"""

import difflib
import math

import ml_collections


def flatten(config, prefix="config.", unresolved=None):
    """{dotted key: value} of a ConfigDict, nested ones included, values resolved.

    A derived number that cannot be computed (`steps_per_epoch` with `batch_size=0`) is None, and
    `unresolved`, when given, gets a line saying why.
    """
    flat = {}
    for key in config.keys():
        try:
            value = config[key]
        except (ArithmeticError, TypeError, ValueError) as error:
            if unresolved is not None:
                unresolved.append(
                    f"{prefix}{key} cannot be computed from the keys it derives from "
                    f"({type(error).__name__}: {error}): see the other problems"
                )
            value = None
        if isinstance(value, ml_collections.ConfigDict):
            flat.update(flatten(value, f"{prefix}{key}.", unresolved))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def declared_types(config, prefix="config."):
    """{dotted key: declared type} of a ConfigDict (placeholders included)."""
    types = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            types.update(declared_types(value, f"{prefix}{key}."))
        else:
            types[f"{prefix}{key}"] = config.get_type(key)
    return types


def type_problem(key, value, expected):
    if value is None:
        return None
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    if expected is tuple and isinstance(value, (tuple, list)):
        return None
    if expected is int and isinstance(value, bool):
        return f"{key} must be an int. Received: {key}={value!r}"
    if isinstance(value, expected):
        return None
    return f"{key} must be of type {expected.__name__}. Received: {key}={value!r}"


def key_problems(flat, default, kind):
    """Unknown and missing keys of `flat` against the config `default`, with the closest known key
    for a typo. `kind` names the config in messages ("pretraining": its `default_config()` is in
    `keras_vicreg.config.pretraining`)."""
    known = declared_types(default)
    problems = []
    for key in sorted(set(flat) - set(known)):
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(
            f"{key} is not a key of the {kind} config{hint}; the keys are those of "
            f"keras_vicreg.config.{kind}.default_config(). Received: {key}={flat[key]!r}"
        )
    missing = sorted(set(known) - set(flat))
    if missing:
        problems.append(
            f"The config lacks keys of the {kind} config: start it from "
            f"keras_vicreg.config.{kind}.default_config(). Received: missing keys {missing}"
        )
    for key in sorted(set(known) & set(flat)):
        problem = type_problem(key, flat[key], known[key])
        if problem:
            problems.append(problem)
    return problems


def choice(problems, key, value, choices, what):
    if value not in choices:
        problems.append(f"{key} must be {what}, one of {list(choices)}. Received: {key}={value!r}")


def at_least(problems, key, value, minimum, strict=False):
    if value is None:
        problems.append(
            f"{key} must be set (a derived number: see "
            "keras_vicreg.config.common.set_derived_numbers). "
            f"Received: {key}=None"
        )
    elif not (value > minimum if strict else value >= minimum) or not math.isfinite(value):
        relation = ">" if strict else ">="
        problems.append(f"{key} must be {relation} {minimum}. Received: {key}={value!r}")
