"""Curvature: Hessian operators over weights and inputs, and their spectra.

Operators (:mod:`hesslib.hessian.operators`) turn a model, a loss and data into
a :class:`LinearOperator`; solvers (:mod:`hesslib.hessian.solvers`) compute
eigenvalues, traces and spectral densities of any such operator or of a dense
symmetric tensor.
"""

from hesslib.hessian.operators import (
    InputHessian,
    LinearOperator,
    MatrixOperator,
    NondeterminismError,
    WeightHessian,
    as_operator,
    flatten_like,
    unflatten_like,
)
from hesslib.hessian.solvers import (
    BatchExtremesResult,
    ConvergenceWarning,
    DensityResult,
    EigenResult,
    TraceResult,
    batched_lanczos,
    hutchinson,
    hutchpp,
    lanczos,
    power_iteration,
    spectral_density,
)

__all__ = [
    "BatchExtremesResult",
    "ConvergenceWarning",
    "DensityResult",
    "EigenResult",
    "InputHessian",
    "LinearOperator",
    "MatrixOperator",
    "NondeterminismError",
    "TraceResult",
    "WeightHessian",
    "as_operator",
    "batched_lanczos",
    "flatten_like",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "spectral_density",
    "unflatten_like",
]
