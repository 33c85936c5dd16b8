"""Throughput of the engine's two data paths: resident tensors against a streaming DataLoader.

Both run in this one process on the same data set (Fashion-MNIST at full
size by default: 60,000 training images, read offline from Debian's
``dataset-fashion-mnist``), batch size, device and augmentation (random
crop with 4 pixels of zero padding and horizontal flip):

resident (the baseline)
    :class:`~tuckerlab.data.ImageDataset`: uint8 tensors moved to the
    device once; each batch gathered by index and cropped and flipped there
    in a handful of tensor operations.
stream
    :meth:`ImageDataset.streaming`: the same images through the path built
    for data sets that do not fit in memory, a DataLoader whose ``--workers``
    processes crop and flip image by image and collate the batch (pinned
    and copied asynchronously on CUDA).

Two measurements, passes alternating between the paths so that a change of
machine load hits both, the best pass of each kept:

data
    One epoch of batches as the training loop receives them (on the device,
    normalised), no model: what each path can deliver.
train
    :func:`tuckerlab.train.fit` of ``--model`` (the same initial weights for
    both paths), ``--train-passes`` passes of ``--train-steps`` steps each
    (default: a full epoch) on the full training set, constant learning
    rate, each pass continuing the model of the previous one; images/s from
    the engine's own ``train_time``, and the test accuracy each path's
    model reaches at the end (evaluated through its own path), to show that
    both train.

The load average (``uptime``) is printed before and after: on a shared
machine the numbers mean little without it.

    python bench/bench_stream.py                         # CPU, Fashion-MNIST, ResNet-20, 2 workers
    python bench/bench_stream.py --train-steps 60         # a shared CPU: 60 training steps per pass
    python bench/bench_stream.py --device cuda --workers 8 --batch-size 512
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time

import torch

try:
    import tuckerlab  # noqa: F401
except ImportError:  # running from a checkout without an install
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuckerlab.data import load_dataset, normalize
from tuckerlab.models import get_model
from tuckerlab.train import evaluate, fit
from tuckerlab.train.feeds import make_feed

from bench_train import _sync  # noqa: E402  (this folder is on sys.path when run as a script)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def data_pass(data, device: torch.device, batch_size: int, epoch: int) -> tuple[float, int]:
    """Seconds to deliver one epoch of normalised training batches on ``device``; and the images."""
    feed = make_feed(data, device, seed=0)
    steps = feed.n_train // batch_size
    _sync(device)
    t0 = time.perf_counter()
    check = torch.zeros((), device=device)
    for x, _ in feed.train_batches(epoch, steps, batch_size, augment=True):
        check += normalize(x, feed.mean, feed.std)[:, 0, 0, 0].sum()  # use every batch
    _sync(device)
    return time.perf_counter() - t0, steps * batch_size


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="an in-memory data set name (default fashion-mnist)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streaming path")
    p.add_argument("--data-passes", type=int, default=2, help="timed data-only epochs per path; the best is kept")
    p.add_argument("--train-passes", type=int, default=2, help="timed training passes per path (0: data only)")
    p.add_argument("--train-steps", type=int, default=None, help="steps per training pass (default: a full epoch)")
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    data = load_dataset(args.data)
    paths = {"resident": data, "stream": data.streaming(num_workers=args.workers)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"data {data.name}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test images "
          f"{tuple(data.image_shape)}, batch {args.batch_size}, stream: {args.workers} DataLoader workers")
    print(f"before: {_uptime()}")

    best = {k: float("inf") for k in paths}
    for i in range(args.data_passes):
        for name, d in paths.items():
            seconds, images = data_pass(d, device, args.batch_size, epoch=i)
            best[name] = min(best[name], seconds / images)
    print(f"data only (one epoch of augmented, normalised batches on {device}, best of {args.data_passes}):")
    for name in paths:
        print(f"  {name:8s} {1 / best[name]:12.0f} images/s")
    print(f"  ratio stream / resident: {best['resident'] / best['stream']:.3f}x")

    if args.train_passes > 0:
        torch.manual_seed(0)
        init = get_model(args.model, num_classes=data.num_classes, in_channels=data.image_shape[0])
        models = {name: copy.deepcopy(init) for name in paths}
        steps = data.x_train.shape[0] // args.batch_size
        steps = min(steps, args.train_steps or steps)
        best = {k: float("inf") for k in paths}
        for i in range(args.train_passes):
            for name, d in paths.items():
                h = fit(models[name], d, epochs=1, max_steps_per_epoch=steps, batch_size=args.batch_size, lr=args.lr,
                        schedule="constant", seed=i, eval_every=0, device=device, progress=False)
                best[name] = min(best[name], h.train_time[0] / (steps * args.batch_size))
        precision = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
        print(f"training {args.model} ({args.train_passes} passes of {steps} steps per path, alternating, "
              f"constant lr {args.lr}, {precision}; best pass):")
        for name, d in paths.items():
            acc = evaluate(models[name], d, device=device)["accuracy"]
            print(f"  {name:8s} {1 / best[name]:12.1f} images/s   test accuracy after "
                  f"{args.train_passes * steps} steps {100 * acc:5.2f}%")
        print(f"  ratio stream / resident: {best['resident'] / best['stream']:.3f}x")
    print(f"after: {_uptime()}")


if __name__ == "__main__":
    main()
