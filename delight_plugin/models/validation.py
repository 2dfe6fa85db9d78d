"""The hyperparameter checks that architectures share, each written once.

``check(cfg, RULE, *names)`` refuses the first named field that breaks a rule;
``check_choices(cfg)`` refuses a ``ChoiceEnum`` field holding none of its choices (fairseq's parser
and OmegaConf's merge check those too, but not a config made another way); ``check_heads(cfg, side)``
refuses a head count that does not split the width. Each model's ``validate_config`` then holds only
its own cross-field rules. Every check raises ``error(flag, value, allowed)`` (``config_error``).
"""
import dataclasses
from enum import EnumMeta
from typing import Any, Callable, NamedTuple

from omegaconf import OmegaConf


def config_error(flag: str, value, allowed: str) -> ValueError:
    """The error every architecture raises for a bad hyperparameter: flag, value, what is allowed."""
    return ValueError(f"--{flag.replace('_', '-')}={value!r} is invalid: {allowed}")


class Rule(NamedTuple):
    holds: Callable[[Any], bool]
    text: str  # what the error says is allowed


POSITIVE_INT = Rule(lambda v: v is not None and v >= 1, "must be a positive integer")
POSITIVE_INT_OR_UNSET = Rule(lambda v: v is None or v >= 1, "must be a positive integer (or left unset)")
POSITIVE = Rule(lambda v: v is not None and v > 0, "must be positive")
PROBABILITY = Rule(lambda v: v is not None and 0.0 <= v < 1.0, "must be in [0, 1)")  # dropouts

# Field metadata key: words the "choose one of" error adds after the choices.
CHOICES_NOTE = "choices_note"


def check(cfg, rule: Rule, *names: str, error: Callable = config_error) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not rule.holds(value):
            raise error(name, value, rule.text)


def choice_fields(cfg):
    """The ``ChoiceEnum`` fields of the dataclass that ``cfg`` is (or, as an OmegaConf node, was made from)."""
    kind = OmegaConf.get_type(cfg) if OmegaConf.is_config(cfg) else type(cfg)
    if not dataclasses.is_dataclass(kind):
        return []
    return [f for f in dataclasses.fields(kind) if isinstance(f.type, EnumMeta)]


def check_choices(cfg, error: Callable = config_error) -> None:
    for f in choice_fields(cfg):
        value, choices = getattr(cfg, f.name), [choice.value for choice in f.type]
        if str(value) not in choices:
            note = f.metadata.get(CHOICES_NOTE)
            raise error(f.name, value, f"choose one of {choices}" + (f" {note}" if note else ""))


def check_heads(cfg, side: str = "decoder", error: Callable = config_error) -> None:
    """``--{side}-attention-heads`` splits ``--{side}-embed-dim``, into even head widths under rotary positions."""
    heads, dim = getattr(cfg, f"{side}_attention_heads"), getattr(cfg, f"{side}_embed_dim")
    if heads < 1 or dim % heads:
        raise error(f"{side}_attention_heads", heads, f"must be a positive divisor of --{side}-embed-dim ({dim})")
    if cfg.position_scheme == "rotary" and (dim // heads) % 2:
        raise error("position_scheme", "rotary", "needs an even head dimension" if side == "decoder"
                    else f"needs an even {side} head dimension")
