"""Rank selection: a weight (or a model, or a model with its data) in, ranks out.

- :func:`evbmf`: global analytic empirical variational Bayesian matrix
  factorisation (Nakajima et al., 2013): rank, noise variance, shrinkage.
- :func:`evbmf_rank`, :func:`energy_rank`, :func:`fixed_ratio_rank`: the ranks
  of one layer; :func:`evbmf_rule`, :func:`energy_rule`, :func:`fixed_ratio`:
  the same as rank rules ``rule(name, module, format_name) -> rank``.
- :func:`solve_budget`: per-layer ranks meeting a whole-model parameter or
  MAC budget (Idelbayev & Carreira-Perpinan, 2020).
- :func:`bayesopt_ranks`, :func:`bayesopt_global_factor`: Bayesian
  optimisation of Tucker-2 ranks per layer (Kim, Lee & Choe, 2020) or of one
  global factor scaling per-layer ranks; :class:`DoubleBayesianRanks`, TT-LC's
  "double Bayesian" choice built on it.
- :class:`LWIQRanks`: TT ranks from each layer's significance, measured by
  a classifier imprinted on its features, times one factor fitted to a
  budget (Liu et al., 2024); :class:`ProxySearchRanks`, the proxy-based
  search it is compared with (:mod:`~tuckerlab.rank.lwiq`).
- :mod:`~tuckerlab.rank.selectors`: the one protocol every rank choice
  follows, ``selector.select(model, format, layers, context) -> {layer:
  rank}``, where the context gives the data so a selector may look at
  activations; a registry by name (:func:`register_selector`), and
  :func:`as_selector` turning strings (``"evbmf"``, ``"params:0.3"``, any
  registered name), dicts, rules and literal ranks into selectors.
- :func:`from_spec`: a specification string resolved for a model.

Ranks are written as :mod:`tuckerlab.formats` writes them.
"""

from .bayesopt import BayesOptResult, GlobalFactorResult, bayesopt_global_factor, bayesopt_ranks, scale_rank
from .budget import BudgetResult, solve_budget
from .double_bayesian import DoubleBayesianRanks
from .lwiq import (
    Allocation,
    LWIQRanks,
    LWIQScores,
    ProxySearchRanks,
    allocate_ranks,
    imprint_accuracy,
    imprint_weights,
    layer_significance,
    pool_features,
    training_splits,
)
from .evbmf import EVBMFResult, evb_tau, evb_threshold, evbmf
from .rules import (
    METHODS,
    canonical_method,
    energy_rank,
    energy_rule,
    evbmf_rank,
    evbmf_rule,
    fixed_ratio,
    fixed_ratio_rank,
)
from .selectors import (
    SPEC_HELP,
    BayesOptRanks,
    BudgetRanks,
    FixedRanks,
    RankSelector,
    RuleRanks,
    SelectionContext,
    SpectralRanks,
    UniformRank,
    as_selector,
    register_selector,
    selector_names,
)
from .spec import from_spec

__all__ = [
    "evbmf", "EVBMFResult", "evb_tau", "evb_threshold",
    "evbmf_rank", "evbmf_rule", "energy_rank", "energy_rule", "fixed_ratio", "fixed_ratio_rank",
    "canonical_method", "METHODS",
    "solve_budget", "BudgetResult",
    "bayesopt_ranks", "bayesopt_global_factor", "BayesOptResult", "GlobalFactorResult", "scale_rank",
    "DoubleBayesianRanks",
    "LWIQRanks", "ProxySearchRanks", "LWIQScores", "Allocation", "pool_features", "imprint_weights",
    "imprint_accuracy", "layer_significance", "allocate_ranks", "training_splits",
    "RankSelector", "SelectionContext", "register_selector", "selector_names", "as_selector",
    "UniformRank", "FixedRanks", "RuleRanks", "SpectralRanks", "BudgetRanks", "BayesOptRanks",
    "from_spec", "SPEC_HELP",
]
