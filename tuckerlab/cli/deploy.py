"""``tuckerlab export``: a model file to TorchScript, ``torch.export`` or ONNX, checked against the eager model."""
from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    """Export a saved (dense or compressed) model; the file is checked against the eager model before it is kept."""
    from tuckerlab.export import run_export

    path = run_export(args.model_file, args.out, args.format, batch_size=args.batch_size, fuse=args.fuse,
                      check=not args.no_check,
                      input_size=tuple(args.input_size) if args.input_size else None)
    print(f"exported: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model file to TorchScript, torch.export or ONNX",
                       description=cmd_export.__doc__)
    p.add_argument("model_file", help="model.pt written by tuckerlab")
    p.add_argument("--format", default="onnx", choices=["onnx", "export", "torchscript"],
                   help="onnx (needs pip install 'tuckerlab[export]'), export (torch.export .pt2) or torchscript "
                        "(default onnx)")
    p.add_argument("--out", default=None, help="output file (default: next to the model, with the format's suffix)")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm and merge 1x1 stages first (exact)")
    p.add_argument("--batch-size", type=int, default=2, help="batch of the example input (the batch is dynamic)")
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="one input without the batch (default: from the model's data set)")
    p.add_argument("--no-check", action="store_true", help="do not compare the exported model with the eager one")
    p.set_defaults(func=cmd_export)
