"""One cache for the networks the book trains, keyed by what produced them.

Every training run a chapter reads back lives in one folder,
``$TUCKERLAB_CACHE/runs`` (default ``~/.cache/tuckerlab/runs``), in a
sub-folder named by a hash of everything that decides its contents: the
settings the chapter passes (model, data set, schedule, ...), the run's mode,
seed and device type, the versions of tuckerlab and torch, and a fingerprint of
the package's source code. Change any of them and the run is trained again
instead of being read back, so a chapter can never show a network that the
current code did not produce.

Two entry points:

:func:`cached_run`
    a context manager around any training call that takes a
    ``checkpoint_dir``::

        with cached_run("ttlc", mode, model=MODEL, dataset=DATASET, **lc_cfg) as run:
            result = tt_lc(model, data, checkpoint_dir=run.path, **lc_cfg)

    It prints one line: where the run was read back from, or how long it
    took to train and where it was saved.
:func:`shared_network`
    the trained networks several chapters share (:data:`NETWORKS`), trained
    once and read back by every chapter that needs them. ``make networks``
    (``python -m tuckerlab.runs``) trains them all ahead of time; a chapter
    run on its own trains what it needs.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

__all__ = [
    "ENV_CACHE",
    "NETWORKS",
    "NetworkRecipe",
    "Run",
    "TrainedNetwork",
    "cache_root",
    "cached_run",
    "initial_model",
    "code_fingerprint",
    "shared_network",
]

ENV_CACHE = "TUCKERLAB_CACHE"

# Modules whose code cannot change a trained network: left out of the
# fingerprint so that editing them does not retrain everything.
_NOT_TRAINING = frozenset(
    {"__main__.py", "cli.py", "exercises.py", "notebook.py", "results.py", "runs.py"}
)
_DONE = "done.json"
_KEY = "key.json"


def cache_root() -> Path:
    """The folder holding every cached run: ``$TUCKERLAB_CACHE/runs``.

    ``TUCKERLAB_CACHE`` defaults to ``~/.cache/tuckerlab``.
    """
    base = os.environ.get(ENV_CACHE, "").strip() or "~/.cache/tuckerlab"
    return Path(base).expanduser() / "runs"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (16 hex digits) of the package source that training depends on.

    Every ``.py`` file of the package counts except the few that only print,
    check exercises or drive notebooks and the command line.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in _NOT_TRAINING:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _mode_fields(mode: Any) -> dict[str, Any]:
    try:
        return {"mode": mode.name, "seed": mode.seed, "device": mode.device.type}
    except AttributeError:
        raise TypeError(
            f"mode must be the Mode returned by tuckerlab.notebook.setup(), "
            f"got {type(mode).__name__}"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _short(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)


@dataclass
class Run:
    """A folder of the cache, named by the hash of what produced it.

    Attributes
    ----------
    name : str
        A readable prefix of the folder name.
    key : str
        12 hex digits of the SHA-256 of :attr:`identity`.
    path : pathlib.Path
        The folder; pass it as ``checkpoint_dir``.
    identity : dict
        Everything the key hashes: settings, mode, seed, device type,
        versions, code fingerprint and the keys of the runs it starts from.
    cached : bool
        Whether the run had finished before (it is then read back).
    """

    name: str
    key: str
    path: Path
    identity: dict
    cached: bool
    record: dict = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, mode: Any, settings: Mapping[str, Any],
               parents: tuple["Run", ...] = ()) -> "Run":
        from tuckerlab import __version__  # noqa: PLC0415

        if not name or "/" in name:
            raise ValueError(f"run name {name!r} must be a non-empty folder name")
        identity = {
            "name": name,
            "settings": _jsonable(dict(settings)),
            **_mode_fields(mode),
            "tuckerlab": __version__,
            "torch": torch.__version__,
            "code": code_fingerprint(),
            "parents": [p.key for p in parents],
        }
        text = json.dumps(identity, sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        path = cache_root() / f"{name}-{key}"
        done = path / _DONE
        record = json.loads(done.read_text()) if done.exists() else {}
        return cls(name=name, key=key, path=path, identity=identity,
                   cached=done.exists(), record=record)

    def finish(self, seconds: float) -> None:
        """Record that the run completed (the first time only)."""
        if self.cached:
            return
        from tuckerlab.results import device_name, git_commit  # noqa: PLC0415

        device = "cuda" if self.identity["device"] == "cuda" else "cpu"
        self.record = {
            "seconds": round(seconds, 1),
            "device_name": device_name(device),
            "git_commit": git_commit(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / _KEY).write_text(json.dumps(self.identity, indent=1) + "\n")
        (self.path / _DONE).write_text(json.dumps(self.record, indent=1) + "\n")

    @property
    def seconds(self) -> float | None:
        """Wall-clock seconds the run took when it was trained."""
        return self.record.get("seconds")

    def describe(self) -> str:
        """One line: read back from where, or trained in how long."""
        minutes = f"{(self.seconds or 0.0) / 60:.1f} min"
        if self.cached:
            return (f"{self.name}: read back from {_short(self.path)} "
                    f"(trained in {minutes} on {self.record.get('device_name')})")
        return f"{self.name}: trained in {minutes}, saved to {_short(self.path)}"


@contextmanager
def cached_run(name: str, mode: Any, *, parents: tuple[Run, ...] = (), verbose: bool = True,
               **settings: Any) -> Iterator[Run]:
    """A cache folder for one training run; its key is what produced it.

    Explained in: chapter 4, "Choosing ranks" (notebooks/04_choosing_ranks.ipynb).

    Parameters
    ----------
    name : str
        Readable prefix of the folder name (``"ttlc"``, ``"resnet20-15ep"``).
    mode : tuckerlab.notebook.Mode
        Its name, seed and device type are part of the key.
    parents : tuple of Run
        Runs this one starts from (a trained network, ranks found by
        another run); their keys are part of this run's key.
    verbose : bool
        Print :meth:`Run.describe` when the block ends.
    **settings
        Everything else that decides the result: model, data set, epochs,
        learning rates, ranks... Values that are not JSON are keyed by their
        ``str``.

    Yields
    ------
    Run
        Pass ``run.path`` as the training call's ``checkpoint_dir``; a
        finished run is read back from it, an interrupted one resumes.
    """
    run = Run.create(name, mode, settings, tuple(parents))
    start = time.perf_counter()
    yield run
    run.finish(time.perf_counter() - start)
    if verbose:
        print(run.describe())


# ---------------------------------------------------------------------------
# networks several chapters share
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkRecipe:
    """How a shared network is trained, per mode (``test`` falls back to ``quick``).

    Attributes
    ----------
    description : str
        What it is for.
    chapters : tuple of str
        The chapters that read it.
    model, dataset : dict
        Names for :func:`tuckerlab.models.get_model` and
        :func:`tuckerlab.data.load_dataset`, per mode.
    fit : dict
        Keyword arguments of :func:`tuckerlab.train.fit`, per mode.
    """

    description: str
    chapters: tuple[str, ...]
    model: Mapping[str, str]
    dataset: Mapping[str, str]
    fit: Mapping[str, Mapping[str, Any]]

    def pick(self, mode_name: str) -> tuple[str, str, dict]:
        """``(model, dataset, fit settings)`` of ``mode_name``."""
        def get(table: Mapping[str, Any]) -> Any:
            if mode_name in table:
                return table[mode_name]
            if mode_name == "test" and "quick" in table:
                return table["quick"]
            raise ValueError(f"no setting for mode {mode_name!r}; given: {sorted(table)}")

        return get(self.model), get(self.dataset), dict(get(self.fit))


def _dense(description: str, chapter: str, full_model: str, full_epochs: int) -> NetworkRecipe:
    """A network trained densely: the quick-mode recipe every chapter shares."""
    return NetworkRecipe(
        description, (chapter,),
        model={"quick": "resnet20", "full": full_model},
        dataset={"quick": "cifar10-subset", "full": "cifar10"},
        fit={
            "test": dict(epochs=1, lr=0.2, schedule="onecycle", eval_every=0, max_steps_per_epoch=3),
            "quick": dict(epochs=15, lr=0.2, schedule="onecycle", eval_every=0),
            "full": dict(epochs=full_epochs, lr=0.1, schedule="cosine", eval_every=0),
        },
    )


#: The trained networks chapters share. In quick mode the three dense
#: recipes are the same network (same settings, hence the same cache folder);
#: in full mode each chapter follows its paper.
NETWORKS: dict[str, NetworkRecipe] = {
    "short": NetworkRecipe(
        "ResNet-20 after a short training: real weights to decompose",
        ("01_tucker", "02_tensor_train"),
        model={"quick": "resnet20", "full": "resnet20"},
        dataset={"quick": "cifar10-subset", "full": "cifar10"},
        fit={
            "test": dict(epochs=1, lr=0.2, schedule="onecycle", max_steps_per_epoch=2),
            "quick": dict(epochs=4, lr=0.2, schedule="onecycle"),
            "full": dict(epochs=20, lr=0.2, schedule="onecycle"),
        },
    ),
    "dense-resnet20": _dense("ResNet-20 trained densely: the network whose ranks are chosen",
                             "04_choosing_ranks", "resnet20", 200),
    "dense-ttlc": _dense("the dense baseline of TT-LC: all its epochs but the fine-tuning",
                         "05_tt_lc", "resnet32", 185),
    "dense-admm": _dense("the trained network ADMM, LC and decompose-then-fine-tune start from",
                         "06_admm_tt", "resnet32", 200),
}


@dataclass
class TrainedNetwork:
    """A shared network as :func:`shared_network` returns it."""

    name: str
    model: torch.nn.Module
    history: Any
    data: Any
    model_name: str
    settings: dict
    run: Run

    @property
    def dataset(self) -> str:
        return self.data.name


def _recipe(name: str) -> NetworkRecipe:
    if name not in NETWORKS:
        raise ValueError(f"unknown shared network {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def initial_model(name: str, mode: Any, data: Any) -> torch.nn.Module:
    """The shared network ``name`` as initialised, before any training.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).
    """
    from tuckerlab.models import get_model  # noqa: PLC0415

    model_name, _, _ = _recipe(name).pick(mode.name)
    torch.manual_seed(mode.seed)
    return get_model(model_name, num_classes=data.num_classes, in_channels=data.image_shape[0])


def shared_network(name: str, mode: Any, *, dataset: str | None = None, data: Any = None,
                   verbose: bool = True) -> TrainedNetwork:
    """Train the shared network ``name``, or read it back from the cache.

    Explained in: chapter 1, "Tensors and the Tucker decomposition"
    (notebooks/01_tucker.ipynb).

    Parameters
    ----------
    name : str
        A key of :data:`NETWORKS`.
    mode : tuckerlab.notebook.Mode
        Picks the recipe's settings; its seed and device are used.
    dataset : str, optional
        Overrides the recipe's data set (e.g. ``"cifar100"`` in full mode).
    data : ImageDataset, optional
        The data set, already loaded (it must be the one the recipe names).
    verbose : bool
        Print where the network came from.

    Returns
    -------
    TrainedNetwork
        ``model`` (on ``mode.device``), its training ``history``, the
        ``data`` and the ``run``.
    """
    from tuckerlab.data import load_dataset  # noqa: PLC0415
    from tuckerlab.train import fit  # noqa: PLC0415

    recipe = _recipe(name)
    model_name, dataset_name, settings = recipe.pick(mode.name)
    dataset_name = dataset or dataset_name
    if data is None:
        data = load_dataset(dataset_name)
    elif data.name != dataset_name:
        raise ValueError(
            f"shared_network({name!r}): data is {data.name!r} but the recipe trains on "
            f"{dataset_name!r}; pass dataset={data.name!r} to train on it"
        )
    label = f"{model_name}-{dataset_name}-{settings['epochs']}ep"
    with cached_run(label, mode, verbose=verbose, model=model_name, dataset=dataset_name,
                    **settings) as run:
        model = initial_model(name, mode, data).to(mode.device)
        history = fit(model, data, **settings, seed=mode.seed, device=mode.device,
                      progress=False, checkpoint_dir=run.path)
    return TrainedNetwork(name, model, history, data, model_name, settings, run)


def main(argv: list[str] | None = None) -> int:
    """``python -m tuckerlab.runs``: train the shared networks of a mode."""
    parser = argparse.ArgumentParser(
        prog="python -m tuckerlab.runs",
        description="Train the networks the book's chapters share, into the run cache.")
    parser.add_argument("names", nargs="*", help=f"networks (default: all): {', '.join(NETWORKS)}")
    parser.add_argument("--mode", default=None, help="test, quick or full (default: TUCKERLAB_MODE or quick)")
    parser.add_argument("--list", action="store_true", help="list the networks and their chapters")
    args = parser.parse_args(argv)
    from tuckerlab.notebook import setup  # noqa: PLC0415

    mode = setup(seed=0, mode=args.mode, plots=False)
    for name in args.names:
        _recipe(name)
    names = args.names or list(NETWORKS)
    if args.list:
        for name in names:
            recipe = NETWORKS[name]
            model, dataset, settings = recipe.pick(mode.name)
            print(f"{name}: {recipe.description}; {model} on {dataset}, {settings}; "
                  f"chapters {', '.join(recipe.chapters)}")
        return 0
    start = time.perf_counter()
    for name in names:
        shared_network(name, mode)
    print(f"shared networks ready in {(time.perf_counter() - start) / 60:.1f} min "
          f"({mode.name} mode, cache {_short(cache_root())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
