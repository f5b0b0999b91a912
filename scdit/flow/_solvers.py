"""ODE solvers integrating the flow from the source (``t = 1``) down to data (``t = 0``), or
back up from data to the source (inverting the flow)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _t(x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.float32)


def euler_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """``x(t - dt) ≈ x - dt * v(x, t)``."""
    return x - dt * v(x, _t(x, t))


def midpoint_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """Explicit midpoint (second order)."""
    x_mid = x - 0.5 * dt * v(x, _t(x, t))
    return x - dt * v(x_mid, _t(x, t - 0.5 * dt))


def heun_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """Heun's method (trapezoidal predictor-corrector, second order)."""
    k1 = v(x, _t(x, t))
    k2 = v(x - dt * k1, _t(x, t - dt))
    return x - 0.5 * dt * (k1 + k2)


def rk4_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """Classical fourth-order Runge–Kutta."""
    k1 = v(x, _t(x, t))
    k2 = v(x - 0.5 * dt * k1, _t(x, t - 0.5 * dt))
    k3 = v(x - 0.5 * dt * k2, _t(x, t - 0.5 * dt))
    k4 = v(x - dt * k3, _t(x, t - dt))
    return x - dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


FIXED_STEP_SOLVERS: dict[str, Callable] = {
    "euler": euler_step, "midpoint": midpoint_step, "heun": heun_step, "rk4": rk4_step,
}
SOLVERS: tuple[str, ...] = (*FIXED_STEP_SOLVERS, "adaptive")


def adaptive(v: Velocity, x1: torch.Tensor, *, rtol: float = 1e-4, atol: float = 1e-4,
             t_start: float = 1.0, t_end: float = 0.0) -> torch.Tensor:
    """Dormand–Prince RK45 with step-size control (``scipy.integrate.solve_ivp``), t: ``t_start``
    → ``t_end`` (default 1 → 0)."""
    from scipy.integrate import solve_ivp

    shape, dtype, device = x1.shape, x1.dtype, x1.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
        with torch.no_grad():
            return v(x, _t(x, t)).reshape(-1).double().cpu().numpy()

    sol = solve_ivp(rhs, (float(t_start), float(t_end)), x1.reshape(-1).double().cpu().numpy(), method="RK45",
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"Adaptive ODE solver failed: {sol.message}")
    return torch.as_tensor(sol.y[:, -1], dtype=dtype, device=device).reshape(shape)


@torch.no_grad()
def integrate(v: Velocity, x1: torch.Tensor, *, steps: int = 20, solver: str = "heun",
              t_end: float = 0.0, t_start: float = 1.0) -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t)`` from ``t_start`` (default 1, the source ``x1``) to
    ``t_end`` (default 0, data).

    ``t_start=0, t_end=1`` runs the flow backwards: from cells to the source points the flow
    would carry to them (the inverse map, exact up to the solver's discretisation error).

    Parameters
    ----------
    v
        Velocity ``v(x, t)`` with ``t`` of shape ``(B,)``.
    x1
        The points at ``t_start`` (source samples at ``t = 1`` by default).
    steps
        Number of uniform steps (fixed-step solvers).
    solver
        ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` or ``"adaptive"``.
    t_end, t_start
        The times the integration ends and starts at, in [0, 1].
    """
    if solver == "adaptive":
        return adaptive(v, x1, t_start=t_start, t_end=t_end)
    if solver not in FIXED_STEP_SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; available: {list(SOLVERS)}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    step = FIXED_STEP_SOLVERS[solver]
    ts = np.linspace(t_start, t_end, steps + 1)
    x = x1
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        x = step(v, x, float(t0), float(t0 - t1))
    return x
