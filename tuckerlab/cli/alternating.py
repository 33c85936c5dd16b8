"""``tuckerlab alternating``: Tucker-2 ranks shrunk between training rounds while validation accuracy holds
(accuracy-aware alternating Tucker, Liu et al., 2025)."""
from __future__ import annotations

import argparse

from ._common import (
    add_common,
    add_method_options,
    add_method_start,
    default_of,
    given,
    method_kwargs,
    method_provenance,
    method_start,
    write_compressed,
)

_FLAGS = {"epsilon": "epsilon", "beta": "beta", "rounds": "rounds", "epochs_per_round": "epochs_per_round",
          "mu0": "mu0", "mu_growth": "mu_growth", "tolerance": "tolerance", "tolerance_step": "tolerance_step",
          "validation": "validation", "lr": "lr", "schedule": "schedule", "skip": "skip"}


def _validation(text: str):
    """``--validation``: a fraction, or a whole number of images."""
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _budget(args: argparse.Namespace) -> str | None:
    if args.target_params is not None and args.target_macs is not None:
        raise ValueError("--target-params and --target-macs: give one budget, not both")
    for metric in ("params", "macs"):
        value = getattr(args, f"target_{metric}")
        if value is not None:
            return f"{metric}:{value}"
    return None


def _check(args: argparse.Namespace, common: dict) -> None:
    """The settings checked before anything is loaded, each error naming its flag."""
    from tuckerlab.methods.alternating import RECIPE, _check_settings
    from tuckerlab.rank.network_budget import parse_budget

    settings = {k: common.get(k, RECIPE.get(k)) for k in
                ("epsilon", "beta", "tolerance", "tolerance_step", "rounds", "epochs_per_round")}
    try:
        _check_settings(**settings)
    except ValueError as err:
        name = str(err).split("=", 1)[0]
        raise ValueError(f"--{name.replace('_', '-')}: {err}") from None
    if common.get("budget") is not None:
        flag = "--target-params" if common["budget"].startswith("params") else "--target-macs"
        try:
            parse_budget(common["budget"])
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None


def cmd_alternating(args: argparse.Namespace) -> int:
    """Shrink Tucker-2 ranks between rounds of training while the accuracy on a held-out part of the training
    set stays within --epsilon points (accuracy-aware alternating Tucker, Liu et al. 2025), then fine-tune
    briefly and save."""
    from tuckerlab.methods import alternating_compress
    from tuckerlab.methods.alternating import RECIPE

    if args.model_file and args.from_scratch:
        raise ValueError("alternating with --from-scratch starts from a fresh --model ARCH: give no model file")
    budget = _budget(args)
    flags = given(args, _FLAGS)
    if budget is not None:
        flags["budget"] = budget
    _check(args, flags)
    model, info, dataset, data, from_scratch, out = method_start(args, "alternating")
    common = method_kwargs(args, out)
    common.update(flags)
    for key in ("epsilon", "rounds", "epochs_per_round", "lr", "finetune_epochs", "finetune_lr"):
        common.setdefault(key, RECIPE[key])
    result = alternating_compress(model, data, from_scratch=from_scratch, **common)
    write_compressed(out, result, info, dataset, method_provenance(args, alternating_compress, common, RECIPE,
                                                                   method="tucker2", from_scratch=from_scratch))
    return 0


def register(sub) -> None:
    from tuckerlab.methods import alternating_compress
    from tuckerlab.methods.alternating import RECIPE

    def default(name):
        return default_of(alternating_compress, name, RECIPE)

    p = sub.add_parser("alternating", help="Tucker-2 ranks shrunk between training rounds while validation "
                                           "accuracy holds (accuracy-aware alternating Tucker, Liu et al. 2025)",
                       description=cmd_alternating.__doc__)
    add_method_start(p, "model.pt of a trained dense model (default: a fresh --model)",
                     "start from a fresh --model (the accuracy checks then compare with an untrained network)")
    g = p.add_argument_group("accuracy and size")
    g.add_argument("--epsilon", type=float, default=None,
                   help=f"largest validation-accuracy drop in percentage points, >= 0; 'inf' switches the check "
                        f"off (default {default('epsilon')})")
    g.add_argument("--beta", type=float, default=None,
                   help=f"size weight of the layers' tolerances, >= 0: larger layers get more error "
                        f"(default {default('beta')})")
    g.add_argument("--target-params", default=None, metavar="F",
                   help="stop shrinking once the network has at most this fraction (or count, or '2.5x' "
                        "reduction) of the dense parameters")
    g.add_argument("--target-macs", default=None, metavar="F", help="the same for the MACs (FLOPs)")
    g.add_argument("--validation", type=_validation, default=None,
                   help=f"fraction (or count) of the training images held out for the accuracy checks, never "
                        f"trained on (default {default('validation')})")
    g.add_argument("--skip", nargs="+", default=None, help="convolutions to leave dense (names or patterns)")
    g = p.add_argument_group("rounds")
    g.add_argument("--rounds", type=int, default=None,
                   help=f"most training + Tucker rounds (default {default('rounds')}); they stop earlier once the "
                        "ranks are stable")
    g.add_argument("--epochs-per-round", type=int, default=None,
                   help=f"epochs of the training sub-problem (default {default('epochs_per_round')})")
    g.add_argument("--mu0", type=float, default=None, help=f"first penalty weight (default {default('mu0')})")
    g.add_argument("--mu-growth", type=float, default=None,
                   help=f"penalty growth per round (default {default('mu_growth')})")
    g.add_argument("--tolerance", type=float, default=None,
                   help=f"starting relative error tolerance in [0, 1.414] (default {default('tolerance')}: "
                        "full ranks)")
    g.add_argument("--tolerance-step", type=float, default=None,
                   help=f"first loosening step of the tolerance (default {default('tolerance_step')})")
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of each round (default {default('lr')})")
    g.add_argument("--schedule", default=None, help="schedule of each round, restarted every round (default cosine)")
    add_method_options(g, alternating_compress, RECIPE, batch_size=128, label_smoothing=0.0)
    add_common(p)
    p.set_defaults(func=cmd_alternating)
