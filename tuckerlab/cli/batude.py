"""``tuckerlab batude``: Tucker-2 ranks learned in training under a FLOPs or parameter budget (Yin et al., 2022)."""
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
    step_schedule,
    write_compressed,
)
from .admm import _update_every

_FLAGS = {"budget": "budget", "epochs": "epochs", "rho": "rho", "rho_growth": "rho_growth", "rho_max": "rho_max",
          "update_every": "update_every", "threshold": "threshold", "energy": "energy", "lr": "lr",
          "schedule": "schedule", "skip": "skip"}


def cmd_batude(args: argparse.Namespace) -> int:
    """Learn Tucker-2 ranks under a whole-network budget (BATUDE, Yin et al. 2022), decompose, fine-tune, save."""
    from tuckerlab.methods import batude_compress
    from tuckerlab.methods.batude import RECIPE
    from tuckerlab.rank.network_budget import parse_budget

    if args.model_file and args.from_scratch:
        raise ValueError("batude with --from-scratch trains a fresh --model ARCH: give no model file")
    if args.budget is not None:
        try:
            parse_budget(args.budget)  # checked before anything is loaded
        except ValueError as err:
            raise ValueError(f"--budget: {err}") from None
    model, info, dataset, data, from_scratch, out = method_start(args, "batude")
    common = method_kwargs(args, out)
    common.update(given(args, _FLAGS))
    for key in ("budget", "epochs", "lr", "rho", "finetune_lr"):
        common.setdefault(key, RECIPE[key])
    step_schedule(args, common)
    result = batude_compress(model, data, from_scratch=from_scratch, **common)
    write_compressed(out, result, info, dataset, method_provenance(args, batude_compress, common, RECIPE,
                                                                   method="tucker2", from_scratch=from_scratch))
    return 0


def register(sub) -> None:
    from tuckerlab.methods import batude_compress
    from tuckerlab.methods.batude import RECIPE, THRESHOLDS
    from tuckerlab.rank.network_budget import ENERGIES

    def default(name):
        return default_of(batude_compress, name, RECIPE)

    p = sub.add_parser("batude", help="Tucker-2 ranks learned in training under a FLOPs or parameter budget, then "
                                      "decomposition (BATUDE, Yin et al. 2022)", description=cmd_batude.__doc__)
    add_method_start(p, "model.pt of a trained dense model (default: a fresh --model)",
                     "train a fresh --model from scratch (no reference accuracy)")
    g = p.add_argument_group("budget")
    g.add_argument("--budget", default=None,
                   help=f"whole-network budget: macs:F or params:F (F in (0, 1] of the dense model), macs:2.5x "
                        f"(reduction factor) or macs:N (a count) (default {default('budget')})")
    g.add_argument("--threshold", default=None, choices=list(THRESHOLDS),
                   help=f"M-step thresholding of the singular values (default {default('threshold')})")
    g.add_argument("--energy", default=None, choices=list(ENERGIES),
                   help=f"what the budget step weighs against the cost: squared singular values, or their "
                        f"fraction of the layer's (default {default('energy')})")
    g.add_argument("--skip", nargs="+", default=None, help="convolutions to leave dense (names or patterns)")
    g = p.add_argument_group("BATUDE")
    g.add_argument("--rho", type=float, default=None, help=f"penalty weight, > 0 (default {default('rho')})")
    g.add_argument("--rho-growth", type=float, default=None,
                   help=f"rho multiplier per M-step (default {default('rho_growth')}: constant)")
    g.add_argument("--rho-max", type=float, default=None, help="cap on rho (default none)")
    g.add_argument("--update-every", type=_update_every, default=None,
                   help="M-step after every epoch (default) or every N optimizer steps")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of the rank-learning phase (default {default('epochs')})")
    g.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {default('lr')})")
    g.add_argument("--schedule", default=None,
                   help="schedule of the training phase (default step: x0.2 at 55/200, 110/200, 165/200 of it)")
    g.add_argument("--milestones", type=float, nargs="+", default=None, help="step schedule: epochs of the decays")
    g.add_argument("--gamma", type=float, default=None, help="step schedule: factor of each decay (default 0.2)")
    add_method_options(g, batude_compress, RECIPE, batch_size=128, label_smoothing=RECIPE["label_smoothing"])
    add_common(p)
    p.set_defaults(func=cmd_batude)
