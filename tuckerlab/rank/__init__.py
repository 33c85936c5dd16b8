"""Rank selection: a weight (or a model) in, ranks out.

- :func:`evbmf`: global analytic empirical variational Bayesian matrix
  factorisation (Nakajima et al., 2013): rank, noise variance, shrinkage.
- :func:`evbmf_rank`, :func:`energy_rank`, :func:`fixed_ratio_rank`: the ranks
  of one layer; :func:`evbmf_rule`, :func:`energy_rule`, :func:`fixed_ratio`:
  the same as rank rules ``rule(name, module, method) -> rank`` for
  :func:`tuckerlab.surgery.compress_model`.
- :func:`solve_budget`: per-layer ranks meeting a whole-model parameter or
  MAC budget (Idelbayev & Carreira-Perpinan, 2020).
- :func:`bayesopt_ranks`, :func:`bayesopt_global_factor`: Bayesian
  optimisation of Tucker-2 ranks per layer (Kim, Lee & Choe, 2020) or of one
  global factor scaling per-layer ranks (TT-LC's "double Bayesian" choice).
- :func:`from_spec`: any of these from a short string (``"evbmf"``,
  ``"energy:0.9"``, ``"ratio:0.5"``, ``"params:0.3"``, ...).

Rank formats are those of :mod:`tuckerlab.layers`: ``(r_out, r_in)`` for
Tucker-2, ``(r1, r2, r3)`` for TT, ``((r_out, r_in), (r1, r2, r3))`` for
TT-Tucker, an int for CP and low-rank linear layers.
"""

from .bayesopt import BayesOptResult, GlobalFactorResult, bayesopt_global_factor, bayesopt_ranks, scale_rank
from .budget import BudgetResult, solve_budget
from .evbmf import EVBMFResult, evb_tau, evb_threshold, evbmf
from .spec import SPEC_HELP, from_spec
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

__all__ = [
    "evbmf",
    "EVBMFResult",
    "evb_tau",
    "evb_threshold",
    "evbmf_rank",
    "evbmf_rule",
    "energy_rank",
    "energy_rule",
    "fixed_ratio",
    "fixed_ratio_rank",
    "canonical_method",
    "METHODS",
    "solve_budget",
    "scale_rank",
    "BudgetResult",
    "bayesopt_ranks",
    "bayesopt_global_factor",
    "BayesOptResult",
    "GlobalFactorResult",
    "from_spec",
    "SPEC_HELP",
]
