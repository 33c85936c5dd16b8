"""``tuckerlab lwiq``: TT ranks by layer-wise imprinting quantitation, decomposed and fine-tuned (Liu et al., 2024)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_common,
    add_training_options,
    default_of,
    given,
    load_dense,
    sibling,
    train_kwargs,
)

_FLAGS = {"pool_size": "pool_size", "pooling": "pooling", "significance": "significance", "floor": "floor",
          "calibration": "calibration", "held_out": "held_out", "min_rank": "min_rank"}


def cmd_lwiq(args: argparse.Namespace) -> int:
    """Choose TT ranks of a trained model by LWIQ under a budget, decompose, fine-tune, save model.pt and results."""
    from tuckerlab.data import load_dataset
    from tuckerlab.pipeline import compress_and_finetune
    from tuckerlab.rank.lwiq import LWIQRanks

    from ._common import write_compressed

    try:  # every setting checked before anything is loaded
        selector = LWIQRanks(args.budget, seed=args.seed, **given(args, _FLAGS))
    except ValueError as err:
        flag = next((f"--{k.replace('_', '-')}" for k in ("budget", *_FLAGS) if str(err).startswith(k)), "--budget")
        raise ValueError(f"{flag}: {err}") from None
    selector.spec = f"lwiq:{selector.budget.spec}"
    model, info = load_dense(args.model_file)
    dataset = args.data or info["extra"].get("dataset") or "cifar10-subset"
    data = load_dataset(dataset, root=args.data_root)
    out = Path(args.out) if args.out else sibling(args.model_file, "-lwiq")
    kwargs = train_kwargs(args, args.finetune_epochs, args.lr)
    kwargs["finetune_epochs"] = kwargs.pop("epochs")
    result = compress_and_finetune(model, data, args.format, selector, checkpoint_dir=out / "checkpoints",
                                   resume=not args.restart, **kwargs)
    search = (result.rank_selection or {}).get("search_seconds")
    write_compressed(out, result, info, dataset, dict(
        seed=args.seed, device=kwargs["device"], command=args.command, method="lwiq", format=args.format,
        budget=selector.budget.spec, selector=selector.config(), finetune_epochs=args.finetune_epochs, lr=args.lr,
        model_file=str(args.model_file), rank_search_seconds=search))
    print(f"rank search (LWIQ): {search:.2f} s, {selector.forward_passes} forward pass(es) over "
          f"{selector.scores.calibration_images} + {selector.scores.held_out_images} training images")
    return 0


def register(sub) -> None:
    from tuckerlab.formats import format_names
    from tuckerlab.rank.lwiq import POOLINGS, SIGNIFICANCES, LWIQRanks

    def default(name):
        return default_of(LWIQRanks.__init__, name)

    p = sub.add_parser("lwiq", help="TT ranks from layer-wise imprinting quantitation under a budget, then "
                                    "decomposition and fine-tuning (LWIQ, Liu et al. 2024)",
                       description=cmd_lwiq.__doc__)
    p.add_argument("model_file", help="model.pt of a trained dense model")
    p.add_argument("--data", default=None, help="data set (default: the one the model was trained on)")
    p.add_argument("--out", default=None, help="output folder (default: next to the model, suffixed -lwiq)")
    g = p.add_argument_group("LWIQ")
    g.add_argument("--budget", default=default("budget"),
                   help=f"whole-network budget: params:F or macs:F (F in (0, 1] of the dense model), params:3.2x "
                        f"(a reduction factor) or params:N (a count) (default {default('budget')})")
    g.add_argument("--format", default="tt", choices=format_names("conv", with_layer=True),
                   help="format of the convolutions (default tt, the paper's)")
    g.add_argument("--pool-size", type=int, default=None,
                   help=f"values kept of each layer's output per image (default {default('pool_size')})")
    g.add_argument("--pooling", default=None, choices=POOLINGS,
                   help=f"avg: a spatial grid per channel; channel: one mean per channel (default "
                        f"{default('pooling')})")
    g.add_argument("--significance", default=None, choices=SIGNIFICANCES,
                   help=f"from the proxy accuracies: gain over the previous layer (clipped at 0), the accuracy, a "
                        f"softmax of the gains, or uniform (default {default('significance')})")
    g.add_argument("--floor", type=float, default=None,
                   help=f"smallest significance, in (0, 1] (default {default('floor')})")
    g.add_argument("--calibration", type=int, default=None,
                   help=f"training images the classes are imprinted on (default {default('calibration')})")
    g.add_argument("--held-out", type=int, default=None,
                   help=f"other training images the proxy accuracy is measured on (default {default('held_out')})")
    g.add_argument("--min-rank", type=int, default=None, help=f"smallest TT rank (default {default('min_rank')})")
    add_training_options(p, epochs=5, lr=0.01, epochs_flag="--finetune-epochs")
    add_common(p)
    p.set_defaults(func=cmd_lwiq)
