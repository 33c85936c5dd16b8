"""One script for a GPU session: training throughput, C-step cost, and dense-vs-compressed latency.

Prepared to run once on a lent GPU (one command, a few minutes); on a machine
without one it runs a reduced version on the CPU and says so. Everything is
measured in this process and printed as ratios against a baseline run here:

1. **Training throughput** of ResNet-32 on synthetic CIFAR-shaped data held on
   the device (50,000 images on a GPU): the engine in fp32, in bf16 with
   channels_last, plus ``cudnn.benchmark``, plus fused SGD, plus
   ``torch.compile``, against a plain DataLoader loop (bf16, channels_last)
   over the same tensors. Images per second, median of timed epochs.
2. **C-step cost**: one projection of every compressed layer of ResNet-32
   (Tucker-2 at a third of the parameters, HOOI as configured by default, and
   TT), against one L-step epoch measured in (1).
3. **Inference latency** of the dense ResNet-32 and of its Tucker-2
   compression at half the MACs (BatchNorm folded, each layer's fastest
   execution chosen for that batch size), at batch 1, 128 and 1024 (1 and
   128 on a CPU), bf16 on a GPU.

    python bench/bench_gpu.py               # the full GPU run (reduced on a CPU)
    python bench/bench_gpu.py --quick       # a smoke run anywhere

The last line is a JSON record of every figure with its provenance.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _engine_ips(model_fn, data, device, epochs, **kw) -> float:
    """Images per second of :func:`tuckerlab.train.fit` over the last ``epochs - 1`` epochs (first one warms up)."""
    from tuckerlab.train import fit

    model = model_fn()
    history = fit(model, data, epochs=epochs, lr=0.1, device=device, progress=False, eval_every=0, **kw)
    times = history.train_time[1:] or history.train_time
    steps = data.num_images("train") // kw.get("batch_size", 512)
    return steps * kw.get("batch_size", 512) / statistics.median(times)


def _dataloader_ips(model_fn, data, device, epochs, batch_size) -> float:
    """Images per second of a plain loop: DataLoader over the same tensors, bf16 autocast on CUDA, channels_last."""
    from torch.utils.data import DataLoader, TensorDataset

    from tuckerlab.data import normalize

    model = model_fn().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    mean = torch.as_tensor(data.mean, device=device)
    std = torch.as_tensor(data.std, device=device)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True,
                        drop_last=True, pin_memory=device.type == "cuda")
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x = normalize(x.to(device, non_blocking=True), mean, std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    n = (data.num_images("train") // batch_size) * batch_size
    return n / statistics.median(times[1:] or times)


def main(argv=None) -> int:
    from tuckerlab.data import load_dataset
    from tuckerlab.fuse import fuse_for_inference
    from tuckerlab.latency import choose_execution
    from tuckerlab.metrics import measure_latency
    from tuckerlab.models import get_model
    from tuckerlab.projection import Projector
    from tuckerlab.results import device_name, provenance
    from tuckerlab.surgery import compress_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny data, few epochs")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 4 on GPU, 2 on CPU)")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("no GPU: a reduced run on the CPU (fp32 only, no compile, batches 1 and 128)", flush=True)
    n = 1024 if args.quick else (50_000 if cuda else 4096)
    epochs = args.epochs or (2 if args.quick or not cuda else 4)
    batch = 512 if cuda else 128
    data = load_dataset("synthetic", n_train=n, n_test=256)
    record = {"device": device_name(device), "train_images": n, "batch_size": batch}

    def resnet32():
        torch.manual_seed(0)
        return get_model("resnet32")

    # 1. training throughput
    variants = {"engine fp32 NCHW": dict(amp=False, channels_last=False)}
    if cuda:
        variants.update({
            "engine bf16 channels_last": dict(amp="bf16", channels_last=True),
            "+ cudnn.benchmark": dict(amp="bf16", channels_last=True, _benchmark=True),
            "+ fused SGD": dict(amp="bf16", channels_last=True, _benchmark=True, optimizer=lambda groups: torch.optim.SGD(
                groups, momentum=0.9, nesterov=True, fused=True)),
            "+ torch.compile": dict(amp="bf16", channels_last=True, _benchmark=True, compile=True),
        })
    else:
        variants["engine fp32 channels_last"] = dict(amp=False, channels_last=True)
    ips = {}
    for name, kw in variants.items():
        kw = dict(kw)
        torch.backends.cudnn.benchmark = bool(kw.pop("_benchmark", False))
        ips[name] = _engine_ips(resnet32, data, device, epochs, batch_size=batch, **kw)
    torch.backends.cudnn.benchmark = False
    ips["plain DataLoader loop"] = _dataloader_ips(resnet32, data, device, epochs, batch)
    base = ips["plain DataLoader loop"]
    print("\n1. training throughput, ResNet-32 (images/s; ratio to the plain DataLoader loop)")
    for name, v in ips.items():
        print(f"   {name:30} {v:10.0f}   x{v / base:.2f}")
    record["train_images_per_s"] = ips

    # 2. C-step against an L-step epoch
    model = resnet32().to(device)
    epoch_s = (n // batch) * batch / ips["engine fp32 NCHW" if not cuda else "engine bf16 channels_last"]
    record["lstep_epoch_s"] = epoch_s
    print(f"\n2. C-step of ResNet-32 against one L-step epoch ({epoch_s:.2f} s)")
    for fmt, rank in (("tucker2", "params:0.33"), ("tt", "params:0.33")):
        proj = Projector.from_rank(model, fmt, rank)
        proj.project(model)  # warm-up (kernels, caches)
        _sync(device)
        t0 = time.perf_counter()
        proj.project(model)
        _sync(device)
        sec = time.perf_counter() - t0
        record[f"cstep_{fmt}_s"] = sec
        print(f"   {fmt:8} {len(proj)} layers: {sec:.3f} s = {100 * sec / epoch_s:.2f}% of an L-step epoch")

    # 3. inference latency
    dense = resnet32().to(device).eval()
    small, _ = compress_model(dense, "tucker2", "macs:0.5")
    dtype = torch.bfloat16 if cuda else torch.float32
    print("\n3. inference latency, ResNet-32 dense vs Tucker-2 at half the MACs (median ms; ratio to dense)")
    record["latency_ms"] = {}
    for b in ((1, 128, 1024) if cuda else (1, 128)):
        fast = fuse_for_inference(copy.deepcopy(small))
        choose_execution(fast, (3, 32, 32), batch_size=b, device=device, dtype=dtype, memory_format="channels_last")
        row = {}
        for name, m in (("dense", fuse_for_inference(dense)), ("compressed", fast)):
            row[name] = measure_latency(m.to(dtype), (3, 32, 32), device=device, batch_size=b, warmup=5,
                                        repeats=20)["median_ms"]
        record["latency_ms"][b] = row
        print(f"   batch {b:5}: dense {row['dense']:.3f}  compressed {row['compressed']:.3f}  "
              f"x{row['compressed'] / row['dense']:.2f}")
    import os

    print(json.dumps({**record, "provenance": provenance(dataset="synthetic", model="resnet32", device=device,
                                                         load=os.getloadavg()[0])}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
