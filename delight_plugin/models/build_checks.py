"""Build-time checks that need more than the model's own flags: the vocabulary size (adaptive
cutoffs) and the criterion that will train the model. Shared by the LM skeleton and the
translation model; every check raises ``error(flag, value, allowed)`` (``config_error``)."""
from typing import Callable, Optional

from fairseq import utils
from omegaconf import DictConfig, OmegaConf


def running_criterion(cfg) -> Optional[str]:
    """The ``--criterion`` of the run that builds this model, or None where it cannot be seen.

    fairseq-train (and fairseq-hydra-train) build the model before the criterion and hand it only
    ``cfg.model``; but that node is still a child of the run's whole config (its ``II(...)`` fields
    resolve through it), whose ``criterion`` group names what will train the model. This is the
    earliest point that sees both. Loading a checkpoint builds the model under the config saved in
    it, i.e. with the criterion it was trained with. A model config that stands alone (no parent)
    has no criterion to check.
    """
    parent = cfg._get_parent() if OmegaConf.is_config(cfg) else None
    if not isinstance(parent, DictConfig) or "criterion" not in parent:
        return None
    criterion = parent.criterion
    return None if criterion is None else criterion.get("_name", None)


def check_adaptive_softmax_criterion(cfg, error: Callable) -> None:
    """fairseq's adaptive softmax writes its log-probabilities in place, so every criterion that
    goes through ``get_normalized_probs`` (cross_entropy, label_smoothed_cross_entropy, ...) fails
    in the backward pass ("modified by an inplace operation"); only adaptive_loss works."""
    if getattr(cfg, "adaptive_softmax_cutoff", None) is None:
        return
    criterion = running_criterion(cfg)
    if criterion is not None and criterion != "adaptive_loss":
        raise error("adaptive_softmax_cutoff", cfg.adaptive_softmax_cutoff,
                    f"an adaptive softmax trains only with --criterion adaptive_loss, not --criterion {criterion} "
                    "(which fails in the backward pass); add --criterion adaptive_loss or drop the cutoffs")


def _parse_cutoffs(flag: str, value, error: Callable):
    try:
        return [int(c) for c in utils.eval_str_list(value, type=int)]
    except (ValueError, TypeError, SyntaxError, NameError):
        raise error(flag, value, "must be comma-separated integers, e.g. 20000,60000") from None


def check_cutoffs_fit_vocabulary(cfg, vocab_size: int, arch: str, error: Callable) -> None:
    """The adaptive input/softmax cutoffs must rise and end at or below the vocabulary size
    (fairseq otherwise stops with a bare 'cannot specify cutoff larger than vocab size')."""
    if getattr(cfg, "adaptive_input", False) and getattr(cfg, "adaptive_input_cutoff", None) is None:
        raise error("adaptive_input", True, "needs --adaptive-input-cutoff (e.g. 20000,60000)")
    used = [("adaptive_softmax_cutoff", getattr(cfg, "adaptive_softmax_cutoff", None))]
    if getattr(cfg, "adaptive_input", False):
        used.insert(0, ("adaptive_input_cutoff", cfg.adaptive_input_cutoff))
    for flag, value in used:
        if value is None:
            continue
        values = _parse_cutoffs(flag, value, error)
        if not values or values[0] < 1 or any(b <= a for a, b in zip(values, values[1:])):
            raise error(flag, value, "cutoffs must be increasing positive integers, e.g. 20000,60000")
        if values[-1] > vocab_size:
            raise error(flag, value,
                        f"--arch {arch} on a vocabulary of {vocab_size} symbols: every cutoff must be at most the "
                        f"vocabulary size; pass smaller --adaptive-input-cutoff / --adaptive-softmax-cutoff")
