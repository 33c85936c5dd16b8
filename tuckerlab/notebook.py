"""Set-up shared by every notebook of the book: run mode, seeds, device, plots.

Every notebook starts with the same two code cells. The first installs the
package on Colab only (:data:`INSTALL_CELL`); the second is
:data:`SETUP_CELL`, with the chapter's name::

    import tuckerlab.notebook

    mode = tuckerlab.notebook.setup(seed=0, chapter="05_tt_lc")

after which settings that depend on the mode are chosen with
:meth:`Mode.pick`::

    epochs = mode.pick(test=1, quick=5, full=200)
    dataset = mode.pick(quick="cifar10-subset", full="cifar10")

Modes
-----
``test``
    The smallest setting, for ``pytest --nbval-lax`` in CI: a few batches,
    seconds per notebook.
``quick``
    A laptop CPU in minutes: the offline CIFAR-10 subset, few epochs.
    The default, and what the published book shows.
``full``
    The paper's data set and schedule, for a GPU: hours per chapter
    (:data:`FULL_MODE_HOURS`). Never a default, not even with a GPU: it is
    chosen with ``TUCKERLAB_MODE=full`` (or ``setup(mode="full")``), and
    :func:`setup` prints its estimated time first.

The mode comes from the ``mode`` argument, else the ``TUCKERLAB_MODE``
environment variable, else ``quick``. The device comes from the ``device``
argument, else ``TUCKERLAB_DEVICE``, else CUDA when available, else the CPU.
"""

from __future__ import annotations

import inspect
import os
import random
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "ENV_DEVICE",
    "ENV_MODE",
    "FULL_MODE_HOURS",
    "INSTALL_CELL",
    "MODES",
    "Mode",
    "REPOSITORY_URL",
    "SETUP_CELL",
    "full_mode_note",
    "in_colab",
    "resolve_mode",
    "seed_everything",
    "set_plot_style",
    "setup",
]

ENV_MODE = "TUCKERLAB_MODE"
ENV_DEVICE = "TUCKERLAB_DEVICE"
MODES = ("test", "quick", "full")

#: Where the package is published: the repository the book's ``_config.yml``
#: names (``repository.url``; a test checks that the two agree). The Colab
#: install cell installs from here.
REPOSITORY_URL = "https://github.com/tuckerlab/tuckerlab"

#: The first code cell of every notebook: installs tuckerlab on Colab only.
#: ``-q`` keeps a successful install quiet; a failed one shows pip's error,
#: and the next cell's import then stops the notebook. Elsewhere the package
#: is already installed (``pip install -e .`` in a clone of the repository).
INSTALL_CELL = f"""\
# Colab only: install tuckerlab (elsewhere: pip install -e . in a clone).
import sys

if "google.colab" in sys.modules:
    %pip install -q "tuckerlab @ git+{REPOSITORY_URL}"
"""

#: The second code cell of every notebook (with the chapter's file name).
SETUP_CELL = """\
import tuckerlab.notebook

mode = tuckerlab.notebook.setup(seed=0, chapter="00_quick_tour")
"""

#: Estimated hours of each chapter in full mode on one T4-class GPU, printed
#: before a full run. Not measured: counted from the chapter's epochs at
#: about 10 s per ResNet-20 epoch and 16 s per ResNet-32 epoch of CIFAR-10.
FULL_MODE_HOURS: dict[str, float] = {
    "00_quick_tour": 0.75,   # 200 dense + 2 x 30 fine-tuning epochs, ResNet-20
    "01_tucker": 0.1,        # 20 epochs, ResNet-20
    "02_tensor_train": 0.1,  # the same network as chapter 1
    "03_factorized_convolutions": 0.05,  # latency measurements only
    "04_choosing_ranks": 1.0,  # 200 dense + 5 x 30 fine-tuning epochs, ResNet-20
    "05_tt_lc": 4.0,         # 205 TT-LC + 185 dense + 20 fine-tuning, ResNet-32; Fashion-MNIST
    "06_admm_tt": 9.0,       # 200 dense + 3 x 400 epochs, ResNet-32; Fashion-MNIST
}

_UNSET = object()

PLOT_STYLE: dict[str, Any] = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}


@dataclass(frozen=True)
class Mode:
    """The run mode of a notebook, as returned by :func:`setup`.

    Attributes
    ----------
    name : str
        ``"test"``, ``"quick"`` or ``"full"``.
    device : torch.device
        Where models and data go.
    seed : int
        The seed every random generator was set to.
    reason : str
        Where the mode came from (argument, environment variable, default).
    """

    name: str
    device: torch.device
    seed: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"mode name {self.name!r} is not one of {', '.join(map(repr, MODES))}")

    @property
    def is_test(self) -> bool:
        return self.name == "test"

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"

    @property
    def is_full(self) -> bool:
        return self.name == "full"

    def pick(self, *, test: Any = _UNSET, quick: Any = _UNSET, full: Any = _UNSET) -> Any:
        """Return the value given for the current mode.

        ``test`` falls back to ``quick`` when it is not given, so most calls
        name two values: ``mode.pick(quick=5, full=200)``.

        Raises
        ------
        TypeError
            If no value applies to the current mode.
        """
        values = {"test": test, "quick": quick, "full": full}
        value = values[self.name]
        if value is _UNSET and self.name == "test":
            value = quick
        if value is _UNSET:
            given = [k for k, v in values.items() if v is not _UNSET]
            hint = " (test falls back to quick)" if self.name == "test" else ""
            raise TypeError(
                f"mode.pick() has no value for {self.name} mode{hint}: "
                f"pass {self.name}=...; given: {', '.join(given) or 'nothing'}"
            )
        return value

    def provenance(self, **fields: Any) -> dict:
        """Provenance record of a figure or table, from :func:`tuckerlab.results.provenance`.

        The mode's seed, device and name are passed along unless ``fields``
        sets them (and as far as ``provenance`` accepts them).
        """
        from tuckerlab.results import provenance  # noqa: PLC0415 (optional until used)

        params = inspect.signature(provenance).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        own = {"seed": self.seed, "device": str(self.device), "mode": self.name}
        for key, value in own.items():
            if key not in fields and (takes_any or key in params):
                fields[key] = value
        return provenance(**fields)

    def __str__(self) -> str:
        return f"{self.name} mode on {self.device}, seed {self.seed}"


def in_colab() -> bool:
    """True when running in a Google Colab kernel."""
    return "google.colab" in sys.modules


def resolve_mode(mode: str | None = None) -> tuple[str, str]:
    """Return ``(name, reason)``: the mode to run in and where it came from.

    ``mode`` overrides the ``TUCKERLAB_MODE`` environment variable; with
    neither, the mode is ``"quick"``, with or without a GPU: full mode runs
    for hours and is only ever chosen explicitly.

    Raises
    ------
    ValueError
        If the argument or the environment variable names no mode.
    """
    accepted = ", ".join(repr(m) for m in MODES)
    if mode is not None:
        name = str(mode).strip().lower()
        if name not in MODES:
            raise ValueError(f"setup(mode={mode!r}): not a mode; accepted: {accepted}")
        return name, "set by the mode argument"
    raw = os.environ.get(ENV_MODE, "")
    if raw.strip():
        name = raw.strip().lower()
        if name not in MODES:
            raise ValueError(
                f"environment variable {ENV_MODE}={raw!r} is not a mode; accepted: {accepted} "
                f"(or leave {ENV_MODE} unset for 'quick')"
            )
        return name, f"set by {ENV_MODE}"
    return "quick", f"the default; {ENV_MODE} unset"


def _resolve_device(device: str | torch.device | None) -> torch.device:
    source = "device argument"
    if device is None:
        raw = os.environ.get(ENV_DEVICE, "").strip()
        if raw:
            device, source = raw, f"environment variable {ENV_DEVICE}"
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{source} {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source} asks for {str(dev)!r} but CUDA is not available here")
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's generators (all CUDA devices too).

    With ``deterministic=True`` torch is also asked for deterministic kernels
    (slower; a warning, not an error, where none exists).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        # cuBLAS needs this for deterministic matrix products on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def set_plot_style() -> None:
    """Apply the book's matplotlib defaults (no-op without matplotlib)."""
    try:
        import matplotlib  # noqa: PLC0415
        # Importing pyplot first lets a notebook backend apply its own rc
        # before ours, so ours is what stays.
        import matplotlib.pyplot  # noqa: F401, PLC0415
    except ImportError:
        return
    matplotlib.rcParams.update(PLOT_STYLE)


def _hours(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:g} h"


def full_mode_note(chapter: str | None, cuda: bool) -> str | None:
    """What :func:`setup` says about full mode, or ``None`` when nothing applies."""
    if chapter is None:
        return None
    if chapter not in FULL_MODE_HOURS:
        known = ", ".join(FULL_MODE_HOURS)
        raise ValueError(f"setup(chapter={chapter!r}): not a chapter of the book; known: {known}")
    estimate = f"about {_hours(FULL_MODE_HOURS[chapter])} on one GPU (estimated)"
    return estimate if cuda else f"{estimate}; much longer on a CPU"


def setup(
    seed: int = 0,
    *,
    chapter: str | None = None,
    mode: str | None = None,
    device: str | torch.device | None = None,
    deterministic: bool = False,
    plots: bool = True,
    verbose: bool = True,
) -> Mode:
    """Prepare a notebook run and return its :class:`Mode`.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    seed : int
        Seed for Python, NumPy and torch.
    chapter : str, optional
        The notebook's file name without suffix (``"05_tt_lc"``): a key of
        :data:`FULL_MODE_HOURS`, whose estimate is printed before a full run
        (and offered when a GPU is there but quick mode was chosen).
    mode : {"test", "quick", "full"}, optional
        Overrides ``TUCKERLAB_MODE``; by default ``"quick"``.
    device : str or torch.device, optional
        Overrides ``TUCKERLAB_DEVICE``; by default CUDA when available.
    deterministic : bool
        Ask torch for deterministic kernels (slower).
    plots : bool
        Apply the book's matplotlib defaults.
    verbose : bool
        Print one line saying which mode, device and seed are used, and one
        about full mode's time when ``chapter`` is given and it applies.

    Raises
    ------
    ValueError
        If the mode, device or chapter asked for is not valid here.
    """
    name, reason = resolve_mode(mode)
    dev = _resolve_device(device)
    cuda = torch.cuda.is_available()
    note = full_mode_note(chapter, cuda)
    seed_everything(seed, deterministic=deterministic)
    if plots:
        set_plot_style()
    result = Mode(name=name, device=dev, seed=seed, reason=reason)
    if name == "full" and dev.type == "cpu":
        warnings.warn(
            "full mode on a CPU runs the papers' schedules and takes many hours; "
            f"set {ENV_MODE}=quick, or use a GPU runtime",
            stacklevel=2,
        )
    if verbose:
        where = "Colab" if in_colab() else "local"
        print(f"tuckerlab: {result} ({reason}; {where}; torch {torch.__version__})")
        if note is not None and name == "full":
            print(f"full mode: the papers' data sets and schedules, {note}")
        elif note is not None and cuda and name == "quick":
            print(f"a GPU is available: {ENV_MODE}=full runs the papers' schedules, {note}")
    return result
