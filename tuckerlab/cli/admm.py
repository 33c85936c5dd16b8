"""``tuckerlab admm``: ADMM training towards low TT/Tucker rank, then decomposition (Yin et al., 2021)."""
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
    rank_help,
    step_schedule,
    write_compressed,
)

_FLAGS = {"rank": "rank", "format": "format", "epochs": "epochs", "rho": "rho", "rho_growth": "rho_growth",
          "rho_max": "rho_max", "update_every": "update_every", "lr": "lr", "schedule": "schedule",
          "rank_update": "rank_update"}


def cmd_admm(args: argparse.Namespace) -> int:
    """Train towards low TT/Tucker rank by ADMM (Yin et al. 2021), decompose, optionally fine-tune, save, report."""
    from tuckerlab.methods import admm_compress
    from tuckerlab.methods.admm import RECIPE

    if args.model_file and args.from_scratch:
        raise ValueError("admm with --from-scratch trains a fresh --model ARCH: give no model file")
    fmt = args.format or default_of(admm_compress, "format")
    model, info, dataset, data, from_scratch, out = method_start(args, f"admm-{fmt}")
    common = method_kwargs(args, out)
    common.update(given(args, _FLAGS))
    common.setdefault("rank", "params:0.33")
    for key in ("epochs", "lr", "rho", "finetune_lr"):
        common.setdefault(key, RECIPE[key])
    common.update(rescale_dual=args.rescale_dual, include_linear=args.include_linear)
    step_schedule(args, common)
    result = admm_compress(model, data, from_scratch=from_scratch, **common)
    write_compressed(out, result, info, dataset, method_provenance(args, admm_compress, common, RECIPE, method=fmt,
                                                                   from_scratch=from_scratch))
    return 0


def _update_every(text: str):
    """``--update-every``: ``epoch`` or a number of optimizer steps (checked by the library)."""
    if text == "epoch":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'epoch' or an integer number of steps, got {text!r}") from None


def register(sub) -> None:
    from tuckerlab.formats import format_names
    from tuckerlab.methods import admm_compress
    from tuckerlab.methods.admm import RECIPE

    def default(name):
        return default_of(admm_compress, name, RECIPE)

    p = sub.add_parser("admm", help="ADMM training towards low TT/Tucker rank, then decomposition (Yin et al. 2021)",
                       description=cmd_admm.__doc__)
    add_method_start(p, "model.pt of a trained dense model (default: train a fresh --model from scratch, "
                        "as the authors do)", "train a fresh --model (the default without a model file)")
    g = p.add_argument_group("compression")
    g.add_argument("--format", default=None, choices=list(format_names("conv", with_layer=True)),
                   help=f"format of the convolutions (default {default('format')}; tucker2 is Tucker on the channels)")
    g.add_argument("--rank", default=None, help=rank_help() + " (default params:0.33, about 3x)")
    g.add_argument("--include-linear", action="store_true", help="also compress linear layers (low rank)")
    g.add_argument("--rank-update", default=None, choices=["fixed", "shrink"],
                   help="keep the ranks, or re-select and shrink them at every update (default fixed)")
    g = p.add_argument_group("ADMM")
    g.add_argument("--rho", type=float, default=None, help=f"penalty weight (default {default('rho')}, the authors')")
    g.add_argument("--rho-growth", type=float, default=None,
                   help=f"rho multiplier per update (default {default('rho_growth')}: constant)")
    g.add_argument("--rho-max", type=float, default=None, help="cap on rho (default none)")
    g.add_argument("--update-every", type=_update_every, default=None,
                   help="Z/U-update after every epoch (default) or every N optimizer steps")
    g.add_argument("--rescale-dual", action="store_true",
                   help="rescale U by rho_old/rho_new when rho changes (Boyd et al. 2011)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs of the ADMM phase (default {default('epochs')})")
    g.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {default('lr')})")
    g.add_argument("--schedule", default=None,
                   help="schedule of the ADMM phase (default step: x0.2 at 55/200, 110/200, 165/200 of the epochs)")
    g.add_argument("--milestones", type=float, nargs="+", default=None, help="step schedule: epochs of the decays")
    g.add_argument("--gamma", type=float, default=None, help="step schedule: factor of each decay (default 0.2)")
    add_method_options(g, admm_compress, RECIPE, batch_size=128, label_smoothing=RECIPE["label_smoothing"])
    add_common(p)
    p.set_defaults(func=cmd_admm)
