"""Rectified flow: path, loss, time samplers, sources, guidance and solvers on an analytic case.

Convention (DESIGN.md): ``t = 0`` is data ``x0``, ``t = 1`` the source ``x1``,
``x_t = t x1 + (1 - t) x0``, ``v = x1 - x0``, sampling integrates from ``t = 1`` down to 0.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from scdit.flow import (
    SOLVERS,
    flow_matching_loss,
    get_time_sampler,
    guided,
    integrate,
    interpolate,
    logit_normal,
    noise_like,
    ot_pairing,
    target_velocity,
    uniform,
)

MU = torch.tensor([2.0, -1.0, 3.0])
SIGMA = 0.5


def exact_velocity(mu: torch.Tensor, sigma: float):
    """Exact marginal velocity E[x1 - x0 | x_t] for x0 ~ N(mu, sigma² I), x1 ~ N(0, I) independent.

    x_t is Gaussian with mean m_t = (1 - t) mu and variance s_t² = t² + (1 - t)² sigma²;
    Cov(x1 - x0, x_t) = t - (1 - t) sigma² and E[x1 - x0] = -mu, so
    E[v | x_t] = -mu + (t - (1 - t) sigma²) / s_t² · (x_t - m_t).
    """

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # (B, 1)
        var_t = tt**2 + (1 - tt) ** 2 * sigma**2
        return -mu + (tt - (1 - tt) * sigma**2) / var_t * (x - (1 - tt) * mu)

    return v


def standard_normal(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Samples standardised to exact zero mean and unit std per dimension."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x - x.mean(0)) / x.std(0)


SOLVER_CASES = [("euler", 400, 2e-2), ("midpoint", 40, 2e-3), ("heun", 40, 2e-3),
                ("rk4", 10, 1e-4), ("adaptive", 0, 5e-3)]


@pytest.mark.parametrize(("solver", "steps", "tol"), SOLVER_CASES)
def test_solvers_transport_noise_to_data_exactly(solver, steps, tol):
    x1 = standard_normal(2000, 3)
    x0 = integrate(exact_velocity(MU.double(), SIGMA), x1, steps=steps or 20, solver=solver)
    # In 1-D the flow map of an affine field is the monotone affine map N(0,1) -> N(mu, sigma²).
    torch.testing.assert_close(x0, MU.double() + SIGMA * x1, atol=tol, rtol=0)
    torch.testing.assert_close(x0.mean(0), MU.double(), atol=tol, rtol=0)
    torch.testing.assert_close(x0.std(0), torch.full((3,), SIGMA, dtype=torch.float64),
                               atol=tol, rtol=0)


def test_all_solvers_covered():
    assert set(SOLVERS) == {c[0] for c in SOLVER_CASES}


def test_integrate_to_intermediate_time_matches_marginal():
    x1 = standard_normal(4000, 3)
    xt = integrate(exact_velocity(MU.double(), SIGMA), x1, steps=10, solver="rk4", t_end=0.5)
    torch.testing.assert_close(xt.mean(0), 0.5 * MU.double(), atol=1e-4, rtol=0)
    std = (0.25 + 0.25 * SIGMA**2) ** 0.5
    torch.testing.assert_close(xt.std(0), torch.full((3,), std, dtype=torch.float64), atol=1e-4,
                               rtol=0)


def test_wrong_direction_does_not_reach_data():
    """Starting from noise at t = 0 and stepping up (the seed snippet's convention) misses the data."""
    v = exact_velocity(MU.double(), SIGMA)
    x = standard_normal(2000, 3)
    ts = torch.linspace(0, 1, 201, dtype=torch.float64)
    for t0, t1 in itertools.pairwise(ts):
        x = x + (t1 - t0) * v(x, torch.full((len(x),), float(t0)))
    assert (x.mean(0) - MU.double()).abs().max() > 1.0


def test_forward_integration_from_data_recovers_source():
    """Stepping the same field up from data (t = 0 → 1) lands on N(0, I): the field is consistent."""
    v = exact_velocity(MU.double(), SIGMA)
    x = MU.double() + SIGMA * standard_normal(2000, 3, seed=1)
    ts = torch.linspace(0, 1, 401, dtype=torch.float64)
    for t0, t1 in itertools.pairwise(ts):
        x = x + (t1 - t0) * v(x, torch.full((len(x),), float(t0)))
    torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=torch.float64), atol=2e-2, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(3, dtype=torch.float64), atol=2e-2, rtol=0)


@pytest.mark.parametrize(("solver", "steps", "tol"), SOLVER_CASES)
def test_integrate_backwards_inverts_the_flow_map(solver, steps, tol):
    """``t_start=0, t_end=1`` maps data to the source points the flow carries to them: the
    analytic inverse ``(x0 − mu) / sigma``, and a round trip returns the cells."""
    v = exact_velocity(MU.double(), SIGMA)
    z = standard_normal(2000, 3, seed=2)
    x0 = MU.double() + SIGMA * z
    up = integrate(v, x0, steps=steps or 20, solver=solver, t_start=0.0, t_end=1.0)
    torch.testing.assert_close(up, z, atol=tol / SIGMA, rtol=0)
    back = integrate(v, up, steps=steps or 20, solver=solver)
    torch.testing.assert_close(back, x0, atol=2 * tol, rtol=0)


@pytest.mark.parametrize(("solver", "evals"), [("euler", 1), ("midpoint", 2), ("heun", 2),
                                               ("rk4", 4)])
def test_fixed_step_solvers_evaluate_times_in_unit_interval(solver, evals):
    seen: list[float] = []

    def v(x, t):
        assert t.shape == (x.shape[0],)
        seen.extend(t.tolist())
        return torch.zeros_like(x)

    x1 = torch.randn(4, 2, 3)
    out = integrate(v, x1, steps=5, solver=solver)
    torch.testing.assert_close(out, x1)  # zero field: nothing moves
    assert len(seen) == 5 * evals * 4
    assert max(seen) == pytest.approx(1.0) and min(seen) >= -1e-7
    assert seen[0] == pytest.approx(1.0)  # starts at the source


def test_integrate_rejects_bad_arguments():
    v = exact_velocity(MU, SIGMA)
    with pytest.raises(ValueError, match="Unknown solver 'nope'"):
        integrate(v, torch.zeros(2, 3), solver="nope")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        integrate(v, torch.zeros(2, 3), steps=0, solver="euler")


# ---------------------------------------------------------------- path and loss
def test_interpolate_endpoints_and_midpoints():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 4, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(5)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(5)), x1)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    expected = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
    torch.testing.assert_close(interpolate(x0, x1, t), expected)
    torch.testing.assert_close(target_velocity(x0, x1), x1 - x0)
    # d/dt of the path is the target velocity
    h = 1e-3
    tm = torch.full((5,), 0.4)
    fd = (interpolate(x0, x1, tm + h) - interpolate(x0, x1, tm - h)) / (2 * h)
    torch.testing.assert_close(fd, target_velocity(x0, x1), atol=1e-3, rtol=1e-3)


def test_flow_matching_loss():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(8, 4, 2, generator=g), torch.randn(8, 4, 2, generator=g)
    t = torch.rand(8, generator=g)
    assert flow_matching_loss(lambda x, tt: x1 - x0, x0, x1, t).item() == pytest.approx(0.0)
    zero = flow_matching_loss(lambda x, tt: torch.zeros_like(x), x0, x1, t)
    assert zero.item() == pytest.approx(((x1 - x0) ** 2).mean().item(), rel=1e-6)
    # the field is evaluated at x_t and t
    ident = flow_matching_loss(lambda x, tt: x * tt[:, None, None], x0, x1, t)
    xt = interpolate(x0, x1, t)
    expected = ((xt * t[:, None, None] - (x1 - x0)) ** 2).mean()
    assert ident.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------- time samplers and sources
def test_time_samplers_shapes_and_ranges():
    g = torch.Generator().manual_seed(0)
    u = uniform(5000, g)
    assert u.shape == (5000,) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.02
    ln = logit_normal(5000, g)
    assert ln.shape == (5000,) and ln.min() > 0 and ln.max() < 1
    assert abs(ln.median().item() - 0.5) < 0.03
    assert (ln.std() < u.std()).item()  # concentrated at intermediate times
    shifted = get_time_sampler("logit_normal", mean=2.0)(5000, g)
    assert shifted.median().item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.03)
    a = get_time_sampler("uniform")(7, torch.Generator().manual_seed(3))
    b = get_time_sampler("uniform")(7, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="Unknown time_sampling"):
        get_time_sampler("cosine")


def test_noise_like_and_ot_pairing():
    x = torch.zeros(3, 4, 2, dtype=torch.float64)
    n = noise_like(x, torch.Generator().manual_seed(0))
    assert n.shape == x.shape and n.dtype == x.dtype
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(6))
    cost = ((x0 - x1[perm]) ** 2).sum().item()
    best = min(((x0 - x1[list(p)]) ** 2).sum().item() for p in itertools.permutations(range(6)))
    assert cost == pytest.approx(best, rel=1e-5)
    # already-paired points are kept
    assert ot_pairing(x0, x0 + 1e-3).tolist() == list(range(6))


# ---------------------------------------------------------------- guidance
class RecordingField:
    """A toy conditional field; the null branch (drop=True) differs from the conditional one."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, x, t, cond):
        self.calls.append({"n": x.shape[0], "drop": cond["drop"].clone()})
        scale = 1.0 + cond["atoms"].sum(1).to(x.dtype)  # (B,)
        scale = torch.where(cond["drop"], torch.full_like(scale, 0.3), scale)
        return x * scale[:, None] + t[:, None]


def _cond():
    return {"atoms": torch.tensor([[1, 2], [3, 0], [0, 0]]), "covariates": torch.zeros(3, 1,
                                                                                     dtype=torch.long)}


def test_guidance_scale_one_is_the_conditional_field_only():
    f = RecordingField()
    x, t = torch.randn(3, 4), torch.full((3,), 0.5)
    out = guided(f, _cond(), 1.0)(x, t)
    expected = f(x, t, {**_cond(), "drop": torch.zeros(3, dtype=torch.bool)})
    assert torch.equal(out, expected)
    assert f.calls[0]["n"] == 3 and not f.calls[0]["drop"].any()  # no unconditional evaluation


def test_guidance_scale_zero_is_unconditional_and_generic_scale_extrapolates():
    f = RecordingField()
    x, t = torch.randn(3, 4), torch.full((3,), 0.5)
    v_c = f(x, t, {**_cond(), "drop": torch.zeros(3, dtype=torch.bool)})
    v_u = f(x, t, {**_cond(), "drop": torch.ones(3, dtype=torch.bool)})
    assert not torch.allclose(v_c, v_u)
    torch.testing.assert_close(guided(f, _cond(), 0.0)(x, t), v_u)
    for s in (0.5, 2.5):
        torch.testing.assert_close(guided(f, _cond(), s)(x, t), v_u + s * (v_c - v_u))

def test_uniform_end_puts_a_share_of_the_times_exactly_at_one():
    from scdit.flow import get_time_sampler, uniform_end

    g = torch.Generator().manual_seed(0)
    t = uniform_end(20_000, g, p_end=0.5)
    at_end = t == 1.0
    assert 0.47 < float(at_end.float().mean()) < 0.53
    rest = t[~at_end]
    assert float(rest.min()) >= 0 and float(rest.max()) < 1 and abs(float(rest.mean()) - 0.5) < 0.02
    assert get_time_sampler("uniform_end") is uniform_end
