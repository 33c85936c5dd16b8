"""Training throughput of tuckerlab's engine against a plain PyTorch loop.

Both run in this one process, on the same model (same initial weights), data,
batch size and device, for the same number of SGD steps:

baseline
    The textbook loop: a torchvision-style dataset yielding PIL images,
    ``transforms.Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(),
    ToTensor(), Normalize(mean, std)])``, a ``DataLoader`` (``--workers``
    processes, pinned memory on CUDA), float32, ``loss.item()`` every step
    for the running loss.
engine
    :func:`tuckerlab.train.fit`: uint8 data resident on the device, batched
    crop/flip/normalise there, no per-step synchronisation, and on CUDA
    channels_last and bfloat16 autocast (``--compile`` adds torch.compile).

Each side first runs ``--warmup-steps`` untimed steps; then ``--epochs``
timed passes of ``--steps`` steps alternate between the two (so a change in
machine load hits both). Reported: the median pass of each (images/s, with
the range), and the median of the per-round ratios engine / baseline, each
round being one baseline pass next to one engine pass. The best pass would
favour whichever side happened to run in a quiet moment.

    python bench/bench_train.py                                   # CPU, ResNet-20, CIFAR-10 subset
    python bench/bench_train.py --device cuda --data cifar10 --compile --batch-size 512
    python bench/bench_train.py --full-run                        # ResNet-32, CIFAR-10, 200 epochs (GPU)

``--full-run`` trains ResNet-32 on the full CIFAR-10 for 200 epochs with the
engine's fastest GPU settings (batch 512, bfloat16, channels_last,
torch.compile, cosine schedule with warm-up) and prints the wall time and
test accuracy; the target is under 5 minutes on one H100.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

try:
    import tuckerlab  # noqa: F401
except ImportError:  # running from a checkout without an install
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuckerlab.data import load_dataset
from tuckerlab.models import get_model
from tuckerlab.train import evaluate, fit


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PILDataset(torch.utils.data.Dataset):
    """Per-image dataset like ``torchvision.datasets.CIFAR10``: PIL image in, transform, label."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        self.x = x_uint8.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) as stored by torchvision
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def make_baseline(model, data, device, args):
    """The plain DataLoader loop; returns ``run(n_steps) -> seconds``."""
    from torchvision import transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(data.mean, data.std)])
    loader = torch.utils.data.DataLoader(
        PILDataset(data.x_train, data.y_train, tf),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = torch.nn.CrossEntropyLoss()

    def run(n_steps: int) -> float:
        done, running = 0, 0.0
        _sync(device)
        t0 = time.perf_counter()
        while done < n_steps:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = crit(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.item()
                done += 1
                if done == n_steps:
                    break
        _sync(device)
        return time.perf_counter() - t0

    return run


def make_engine(model, data, device, args):
    """:func:`tuckerlab.train.fit` for a number of steps; returns ``run(n_steps) -> seconds``.

    The time is the engine's own ``train_time`` of the epoch (steps plus the
    end-of-epoch synchronisation), excluding the one-off move of the data.
    """
    data = data.to(device)  # resident once, as a method calling fit repeatedly would do
    common = dict(batch_size=args.batch_size, lr=0.05, schedule="constant", device=device,
                  compile=args.compile, eval_every=0, progress=False)

    def run(n_steps: int) -> float:
        return fit(model, data, epochs=1, max_steps_per_epoch=n_steps, **common).train_time[0]

    return run


def throughput(args) -> None:
    device = torch.device(args.device)
    data = load_dataset(args.data) if args.data != "synthetic" else load_dataset("synthetic", n_train=max(2048, args.batch_size * 4))
    n = data.x_train.shape[0]
    if args.batch_size > n:
        raise SystemExit(f"--batch-size {args.batch_size} is larger than the data set ({n} images)")
    torch.manual_seed(0)
    model = get_model(args.model, num_classes=data.num_classes, in_channels=data.x_train.shape[1])
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}")
    print(f"{args.model}, {args.data} ({n} train images), batch {args.batch_size}, "
          f"{args.epochs} timed pass(es) of {args.steps} steps each after {args.warmup_steps} warm-up steps; "
          "passes alternate between the two loops; medians reported")
    runs = {
        "baseline": make_baseline(copy.deepcopy(model), data, device, args),
        "engine": make_engine(copy.deepcopy(model), data, device, args),
    }
    for run in runs.values():
        run(args.warmup_steps)
    passes = {k: [] for k in runs}
    for _ in range(args.epochs):
        for k, run in runs.items():
            passes[k].append(args.steps * args.batch_size / run(args.steps))
    extra = ", bf16 + channels_last" if device.type == "cuda" else ", fp32"
    labels = {
        "baseline": f"baseline (DataLoader, {args.workers} workers, fp32)",
        "engine": f"engine (resident data{extra}{', compiled' if args.compile else ''})",
    }
    for k, ips in passes.items():
        print(f"  {labels[k]}: {statistics.median(ips):10.1f} images/s "
              f"(median of {len(ips)}; range {min(ips):.1f}-{max(ips):.1f})")
    ratios = [e / b for e, b in zip(passes["engine"], passes["baseline"])]
    print(f"  ratio engine / baseline: {statistics.median(ratios):.2f}x "
          f"(median of {len(ratios)} interleaved rounds; range {min(ratios):.2f}-{max(ratios):.2f})")
    if hasattr(os, "getloadavg"):
        print(f"  (1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def full_run(args) -> None:
    """ResNet-32 on CIFAR-10, 200 epochs, the engine's fastest GPU settings."""
    device = torch.device(args.device)
    if device.type != "cuda":
        print("warning: --full-run is meant for a GPU; on this device it will take hours", file=sys.stderr)
    data = load_dataset("cifar10").to(device)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    torch.manual_seed(0)
    model = get_model("resnet32", num_classes=data.num_classes)
    batch = args.batch_size if args.batch_size_given else 512
    settings = dict(
        epochs=200, batch_size=batch, lr=0.1 * batch / 128, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="cosine", schedule_kwargs={"warmup": 5}, label_smoothing=0.0, device=device, compile=True,
        eval_every=10, progress=not args.no_progress,
    )
    print("full run: resnet32, cifar10,", {k: v for k, v in settings.items() if k != "progress"})
    _sync(device)
    t0 = time.perf_counter()
    hist = fit(model, data, **settings)
    _sync(device)
    wall = time.perf_counter() - t0
    acc = evaluate(model, data)["accuracy"]
    print(f"wall time {wall:.1f} s ({wall / 60:.2f} min; training alone {sum(hist.train_time):.1f} s), "
          f"test accuracy {100 * acc:.2f}%")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=["resnet20", "resnet32"])
    p.add_argument("--data", default="cifar10-subset", choices=["synthetic", "cifar10-subset", "cifar10"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps per pass (default 30 on CPU, 200 on GPU)")
    p.add_argument("--epochs", type=int, default=5, help="timed passes per loop, interleaved; medians are reported")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (512 for --full-run)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers of the baseline")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    p.add_argument("--full-run", action="store_true", help="train ResNet-32 on CIFAR-10 for 200 epochs and report time + accuracy")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.batch_size_given = args.batch_size is not None
    if args.batch_size is None:
        args.batch_size = 128
    if args.steps is None:
        args.steps = 200 if args.device.startswith("cuda") else 30
    if args.epochs < 1 or args.steps < 1:
        p.error(f"--epochs and --steps must be >= 1, got {args.epochs} and {args.steps}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; nothing to do")
        return
    if args.full_run:
        full_run(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
