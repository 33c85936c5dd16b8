"""``tuckerlab lc`` (LC from a trained model, Idelbayev & Carreira-Perpinan 2020) and ``tuckerlab tt-lc`` (TT-LC)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_common,
    add_method_options,
    add_method_start,
    default_of,
    fraction,
    given,
    method_kwargs,
    method_provenance,
    rank_help,
    refuse,
    sibling,
    starting_model,
    write_compressed,
)

_LC_FLAGS = {"steps": "n_steps", "epochs_per_step": "epochs_per_step", "warmup_epochs": "warmup_epochs",
             "mu0": "mu0", "mu_growth": "mu_growth", "lr": "lr", "schedule": "schedule", "rank_update": "rank_update"}


def cmd_lc(args: argparse.Namespace) -> int:
    """Compress by the LC algorithm (classic, from a trained model) or TT-LC (from scratch), save, report."""
    from tuckerlab.methods import lc_compress, tt_lc
    from tuckerlab.methods.lc import RECIPE
    from tuckerlab.rank.selectors import BudgetRanks

    variant = args.variant
    tt = variant == "tt-lc"
    fmt = args.format or ("tt_tucker" if tt else "tucker2")
    if tt and fmt != "tt_tucker":
        raise ValueError(f"tt-lc compresses with TT-Tucker (--format tt_tucker), got --format {fmt}")
    if args.target_params is not None and args.rank is not None:
        raise ValueError("give --target-params or --rank, not both")
    if args.model_file and (tt or args.from_scratch):
        raise ValueError(f"{variant} {'trains from scratch' if tt else 'with --from-scratch'}: "
                         "give --model ARCH instead of a model file")
    if not args.model_file and not (tt or args.from_scratch):
        raise ValueError("lc starts from a trained model: give its model.pt (or --from-scratch with --model)")
    if not tt:
        refuse(args, ["bo_trials"], "to lc (write --rank bayesopt:N for Bayesian-optimisation ranks)")
    model, info, dataset, data = starting_model(args, from_scratch=not args.model_file)
    out = Path(args.out) if args.out else (
        sibling(args.model_file, f"-{variant}-{fmt}") if args.model_file
        else Path(f"runs/{info['arch']}-{dataset}-{variant}"))
    common = method_kwargs(args, out)
    common.update(given(args, _LC_FLAGS))
    common["include_linear"] = args.include_linear
    if tt:
        if args.bo_trials is not None:
            common["n_trials"] = args.bo_trials
        fn, recipe = tt_lc, None
        result = tt_lc(model, data, target_params_ratio=args.target_params, ranks=args.rank, **common)
    else:
        fn, recipe = lc_compress, RECIPE
        for key in ("n_steps", "epochs_per_step", "mu0", "mu_growth", "lr", "finetune_lr"):
            common.setdefault(key, RECIPE[key])
        rank = args.rank if args.rank is not None else BudgetRanks(args.target_params or RECIPE["rank_params"])
        result = lc_compress(model, data, format=fmt, rank=rank, from_scratch=args.from_scratch, **common)
    write_compressed(out, result, info, dataset, method_provenance(
        args, fn, common, recipe, variant=variant, method=fmt, target_params=args.target_params, rank=args.rank),
        extra={"variant": variant})
    return 0


def register(sub) -> None:
    from tuckerlab.formats import format_names
    from tuckerlab.methods import lc_compress, tt_lc
    from tuckerlab.methods.lc import RECIPE

    for name, variant, help_ in (
        ("lc", "lc", "compress by the LC algorithm (Idelbayev & Carreira-Perpinan 2020)"),
        ("tt-lc", "tt-lc", "TT-LC: LC from scratch with TT-Tucker and double Bayesian ranks (Liu et al. 2024)"),
    ):
        fn, recipe = (tt_lc, None) if variant == "tt-lc" else (lc_compress, RECIPE)
        p = sub.add_parser(name, help=help_, description=cmd_lc.__doc__)
        add_method_start(p, "model.pt of a trained dense model (classic LC)",
                         "lc: start from a fresh --model, not a trained one")
        p.add_argument("--variant", choices=["lc", "tt-lc"], default=variant, help=f"default {variant}")
        g = p.add_argument_group("compression")
        g.add_argument("--format", "--method", dest="format", default=None,
                       choices=list(format_names("conv", with_layer=True)),
                       help="C-step format (default tucker2 for lc, tt_tucker for tt-lc; --method is an older name)")
        g.add_argument("--target-params", type=fraction, default=None,
                       help="whole-model parameter ratio to keep, in (0, 1], e.g. 0.3 (lc: ranks by solve_budget, "
                            f"default {RECIPE['rank_params']}; tt-lc: the target of the Bayesian global factor)")
        g.add_argument("--rank", default=None, help=rank_help())
        g.add_argument("--include-linear", action="store_true", help="also compress linear layers (low rank)")
        g.add_argument("--rank-update", default=None, choices=["fixed", "shrink"],
                       help="keep the ranks of the first C-step, or re-select and shrink them at each C-step "
                            "(default fixed)")
        g.add_argument("--bo-trials", type=int, default=None,
                       help=f"tt-lc: Bayesian-optimisation trials (default {default_of(tt_lc, 'n_trials')})")
        g = p.add_argument_group("LC")
        g.add_argument("--steps", type=int, default=None,
                       help=f"L-steps (default {default_of(fn, 'n_steps', recipe)})")
        g.add_argument("--epochs-per-step", type=int, default=None,
                       help=f"epochs per L-step (default {default_of(fn, 'epochs_per_step', recipe)})")
        g.add_argument("--warmup-epochs", type=int, default=None,
                       help="plain-training epochs before the ranks and the first C-step "
                            f"(default {default_of(fn, 'warmup_epochs') if fn is lc_compress else 'epochs-per-step'})")
        g.add_argument("--mu0", type=float, default=None,
                       help=f"first penalty weight (default {default_of(fn, 'mu0')})")
        g.add_argument("--mu-growth", type=float, default=None,
                       help=f"mu multiplier per L-step (default {default_of(fn, 'mu_growth')})")
        g = p.add_argument_group("training")
        g.add_argument("--lr", type=float, default=None,
                       help=f"peak L-step learning rate (default {default_of(fn, 'lr', recipe)})")
        g.add_argument("--schedule", default=None,
                       help="L-step schedule (default: x0.99 per epoch restarted each L-step for lc, "
                            "exp_cyclic for tt-lc)")
        add_method_options(g, fn, recipe or {}, batch_size=128, label_smoothing=0.0)  # the LC papers' settings
        add_common(p)
        p.set_defaults(func=cmd_lc)
