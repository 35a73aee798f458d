"""Queueing formulas the engine is checked against (M/M/1, M/M/c, M/G/1-PS, Little's law)."""

from __future__ import annotations

import math

__all__ = ["mm1_mean_response", "mm1_response_quantile", "erlang_c", "mmc_mean_response", "mg1_ps_mean_response"]


def mm1_mean_response(lam: float, mu: float) -> float:
    """E[T] = 1/(mu - lambda) for a stable M/M/1 queue."""
    if lam >= mu:
        raise ValueError("unstable: lambda >= mu")
    return 1.0 / (mu - lam)


def mm1_response_quantile(lam: float, mu: float, q: float) -> float:
    """FCFS M/M/1 response time is exponential with rate mu - lambda: its q-quantile."""
    return -math.log(1.0 - q) / (mu - lam)


def erlang_c(c: int, a: float) -> float:
    """Probability an arrival waits in M/M/c with offered load a = lambda/mu (a < c)."""
    if a >= c:
        raise ValueError("unstable: offered load >= servers")
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c / (1.0 - a / c)
    return last / (total + last)


def mmc_mean_response(lam: float, mu: float, c: int) -> float:
    """E[T] = C(c, a)/(c mu - lambda) + 1/mu."""
    return erlang_c(c, lam / mu) / (c * mu - lam) + 1.0 / mu


def mg1_ps_mean_response(lam: float, mean_service: float) -> float:
    """M/G/1 processor sharing: E[T] = E[S]/(1 - rho), whatever the service distribution."""
    rho = lam * mean_service
    if rho >= 1.0:
        raise ValueError("unstable: rho >= 1")
    return mean_service / (1.0 - rho)
