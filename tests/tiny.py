"""Small shared test helpers: tiny learnable data (in memory and as an image folder), a one-thread context, a crash."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from tuckerlab.data import ImageDataset
from tuckerlab.train import Callback


class Interrupt(Callback):
    """Simulates a crash: KeyboardInterrupt at the end of 0-based epoch ``at``, before it is saved."""

    def __init__(self, at=None):
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if self.at is not None and epoch == self.at:
            raise KeyboardInterrupt


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block; tiny tensors run faster and
    runs compared bit for bit need the same thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_data(n_train=64, n_test=32, classes=4, size=8, seed=0) -> ImageDataset:
    """Noisy images whose dominant colour is the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])[:classes]

    def make(n):
        y = torch.arange(n) % classes
        x = torch.randint(0, 96, (n, 3, size, size), generator=g) + 128 * colours[y][:, :, None, None]
        return x.clamp(0, 255).to(torch.uint8), y

    (xa, ya), (xb, yb) = make(n_train), make(n_test)
    return ImageDataset("tiny", xa, ya, xb, yb, tuple(map(str, range(classes))), (0.3, 0.2, 0.2), (0.25, 0.2, 0.2))


def make_image_folder(root, n_train=60, n_val=16, classes=4, seed=0):
    """A folder ``root/{train,val}/<class>/*.png`` of small images whose dominant colour is the class.

    Sizes vary (24 to 47 pixels a side) so that resizing and cropping are
    exercised; some images are greyscale (``L``) and are read back as RGB.
    Returns ``root``.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])[:classes]
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(24, 48, size=2)
                x = rng.integers(0, 96, size=(h, w, 3)) + 128 * colours[c]
                img = Image.fromarray(x.clip(0, 255).astype(np.uint8))
                if i % 10 == 9:
                    img = img.convert("L")
                img.save(folder / f"{i:03d}.png")
    return root


def torchrun(worker: str, out: Path, *args: str, nproc: int = 2) -> None:
    """Run the script text ``worker`` as ``worker.py OUT ARGS...`` under torchrun on ``nproc`` CPU processes.

    The checkout and ``tests/`` are importable, any torchrun variables of
    the calling process are dropped, and a failure shows the processes' output.
    """
    script = out / "worker.py"
    script.write_text(worker)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script),
         str(out), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
