"""Solvers on dense symmetric matrices with known spectra (float64)."""

import math

import pytest
import torch

from hesslib.hessian import (
    ConvergenceWarning,
    LinearOperator,
    MatrixOperator,
    as_operator,
    batched_lanczos,
    hutchinson,
    hutchpp,
    lanczos,
    power_iteration,
    spectral_density,
)

DT = torch.float64
TOL = 1e-8  # solver tolerance: tight, the matrices are tiny
EIG_RTOL = 1e-7  # eigenvalue error is at most ~ residual^2 / gap: well below this
ORTHO_ATOL = 1e-10  # orthonormality of returned vectors


def known_matrix(eigenvalues, seed=0):
    """A = Q diag(eigenvalues) Q^T with a seeded random orthogonal Q."""
    lam = torch.as_tensor(eigenvalues, dtype=DT)
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=gen, dtype=DT))
    a = q @ torch.diag(lam) @ q.T
    return (a + a.T) / 2


def spectrum(n=40, seed=1):
    """A spread spectrum with both signs and a dominant negative end."""
    gen = torch.Generator().manual_seed(seed)
    lam = torch.linspace(-1.0, 3.0, n, dtype=DT) + 0.01 * torch.rand(n, generator=gen)
    lam[0] = -8.0
    lam[-1] = 6.0
    return lam


def assert_eigenpairs(a, res, tol=TOL):
    vals, vecs = res.eigenvalues, res.eigenvectors
    k = vals.numel()
    gram = vecs.T @ vecs
    assert torch.allclose(gram, torch.eye(k, dtype=DT), atol=ORTHO_ATOL), gram
    resid = torch.linalg.vector_norm(a @ vecs - vecs * vals, dim=0) / vals.abs()
    assert (resid <= tol * 1.01).all(), f"true residuals {resid}"
    assert torch.allclose(resid, res.residuals, rtol=1e-3, atol=1e-14)
    assert res.converged


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_lanczos_matches_known_spectrum(which):
    lam = spectrum()
    a = known_matrix(lam)
    res = lanczos(a, k=3, which=which, tol=TOL)
    srt = torch.sort(lam).values
    expect = {
        "largest": srt.flip(0)[:3],
        "smallest": srt[:3],
        "both": torch.cat([srt.flip(0)[:3], srt[:3].flip(0)]),
    }[which]
    torch.testing.assert_close(res.eigenvalues, expect, rtol=EIG_RTOL, atol=0)
    assert_eigenpairs(a, res)
    assert res.num_products == res.num_iterations <= lam.numel()


def test_lanczos_uses_far_fewer_products_than_power_iteration():
    a = known_matrix(spectrum(n=60).abs())  # one end dominates: both find it
    top_l = lanczos(a, k=1, tol=1e-6)
    top_p = power_iteration(a, k=1, tol=1e-6)
    torch.testing.assert_close(top_l.eigenvalues, top_p.eigenvalues, rtol=1e-9, atol=0)
    assert top_l.num_products < top_p.num_products


def test_power_iteration_orders_by_magnitude_with_negative_end():
    lam = spectrum()
    a = known_matrix(lam)
    res = power_iteration(a, k=3, tol=TOL)
    expect = lam[torch.argsort(lam.abs(), descending=True)][:3]
    torch.testing.assert_close(res.eigenvalues, expect, rtol=EIG_RTOL, atol=0)
    assert res.eigenvalues[0] < 0
    assert_eigenpairs(a, res)


def test_power_iteration_finds_repeated_eigenvalues_once_per_multiplicity():
    lam = torch.tensor([5.0, 5.0, 5.0, 2.0, 1.0, 0.5, -0.5, 0.1], dtype=DT)
    a = known_matrix(lam)
    res = power_iteration(a, k=4, tol=TOL)
    torch.testing.assert_close(
        res.eigenvalues, torch.tensor([5.0, 5.0, 5.0, 2.0], dtype=DT), rtol=1e-9, atol=0
    )
    assert_eigenpairs(a, res)


def test_lanczos_resolves_a_cluster():
    lam = torch.cat(
        [torch.tensor([10.0, 10.0 - 1e-3, 10.0 - 2e-3]), torch.linspace(-2, 5, 37)]
    ).to(DT)
    a = known_matrix(lam)
    res = lanczos(a, k=3, tol=TOL)
    torch.testing.assert_close(res.eigenvalues, lam[:3], rtol=1e-10, atol=0)
    assert_eigenpairs(a, res)


def test_block_lanczos_resolves_multiplicities_single_vector_cannot():
    lam = torch.cat([torch.tensor([5.0, 5.0, 5.0, 3.0]), torch.linspace(-1, 1, 26)])
    a = known_matrix(lam.to(DT))
    single = lanczos(a, k=2, tol=TOL)
    assert single.eigenvalues.tolist() == pytest.approx([5.0, 3.0])  # one copy
    block = lanczos(a, k=4, tol=TOL, block_size=3)
    expect = torch.tensor([5.0, 5.0, 5.0, 3.0], dtype=DT)
    torch.testing.assert_close(block.eigenvalues, expect, rtol=1e-10, atol=0)
    assert_eigenpairs(a, block)


def test_lanczos_sees_a_repeated_top_eigenvalue():
    lam = torch.cat([torch.tensor([4.0, 4.0]), torch.linspace(-1, 1, 10)]).to(DT)
    res = lanczos(known_matrix(lam), k=1, tol=TOL)
    torch.testing.assert_close(res.eigenvalues, lam[:1], rtol=1e-10, atol=0)


def test_lanczos_on_exhausted_krylov_space_continues_with_random_vectors():
    # diag with a starting vector in a 2-d invariant subspace: breakdown after 2
    a = torch.diag(torch.tensor([3.0, 1.0, 7.0, -2.0], dtype=DT))
    init = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=DT)
    res = lanczos(a, k=1, which="both", tol=TOL, init=init)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([7.0, -2.0], dtype=DT))


def test_a_warm_start_at_an_eigenvector_cannot_hide_the_extremes():
    lam = spectrum()
    a = known_matrix(lam)
    vecs = torch.linalg.eigh(a).eigenvectors  # ascending
    # an interior eigenvector is an exact, converged pair: Lanczos must still
    # look beyond the invariant subspace it spans before it stops
    for init, block_size in [(vecs[:, -1], 1), (vecs[:, -2], 1), (vecs[:, -3], 2),
                             (vecs[:, [-2, -3]], 2), (vecs[:, [-2, -3, 5]], 3),
                             (vecs[:, -1] + 1e-12, 2)]:  # passes at step 1
        res = lanczos(a, k=1, tol=1e-6, init=init, block_size=block_size)
        assert res.converged
        torch.testing.assert_close(res.eigenvalues, lam.max()[None], rtol=1e-8,
                                   atol=0)
    res = lanczos(a, k=2, which="smallest", tol=1e-6, init=vecs[:, 5])
    torch.testing.assert_close(res.eigenvalues, lam.sort().values[:2], rtol=1e-8,
                               atol=1e-10)
    # power iteration trusts its start: the top eigenvector converges at once
    assert power_iteration(a, k=1, tol=1e-6, init=vecs[:, -1]).num_products == 1


def test_same_seed_same_results_and_seed_reaches_the_draws():
    a = known_matrix(spectrum())

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return lanczos(a, k=2, tol=1e-3, generator=gen)

    one, two, other = run(3), run(3), run(4)
    assert torch.equal(one.eigenvectors, two.eigenvectors)
    assert not torch.equal(one.eigenvectors, other.eigenvectors)
    assert hutchinson(a, rtol=0.1).estimate == hutchinson(a, rtol=0.1).estimate
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    d1 = spectral_density(a, num_runs=2, num_steps=5, generator=g1)
    d2 = spectral_density(a, num_runs=2, num_steps=5, generator=g2)
    assert torch.equal(d1.density, d2.density)


def test_non_convergence_warns_with_the_fix():
    a = known_matrix(spectrum())
    with pytest.warns(ConvergenceWarning, match="raise max_iter or loosen tol"):
        res = lanczos(a, k=2, tol=1e-12, max_iter=5)
    assert not res.converged
    with pytest.warns(ConvergenceWarning, match="raise max_iter"):
        res = power_iteration(a, k=1, tol=1e-12, max_iter=3)
    assert not res.converged and res.num_products == 3


def test_solver_errors_name_value_and_fix():
    a = known_matrix(spectrum(n=6))
    with pytest.raises(ValueError, match=r"k=7 .*lower k"):
        lanczos(a, k=7)
    with pytest.raises(ValueError, match=r"2k.*n = 6"):
        lanczos(a, k=4, which="both")
    with pytest.raises(ValueError, match="which must be .* got 'top'"):
        lanczos(a, which="top")
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\), got 2"):
        power_iteration(a, tol=2)
    with pytest.raises(ValueError, match=r"init must have shape .* got \(5,\)"):
        power_iteration(a, init=torch.ones(5, dtype=DT))
    with pytest.raises(ValueError, match="symmetric matrix.*symmetrize"):
        MatrixOperator(torch.triu(torch.ones(3, 3)))
    with pytest.raises(ValueError, match=r"square \[n, n\].*\(2, 3\)"):
        as_operator(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"block_size must be .*\[1, n=6\], got 0"):
        lanczos(a, block_size=0)
    with pytest.raises(ValueError, match=r"max_iter must be an int >= 1, got 0"):
        lanczos(a, max_iter=0)
    with pytest.raises(TypeError, match="LinearOperator or a dense"):
        as_operator([[1.0]])
    with pytest.raises(ValueError, match=r"num_products must be an int >= 3, got 2"):
        hutchpp(a, num_products=2)
    with pytest.raises(ValueError, match=r"matvec expects shape \[6\]"):
        as_operator(a).matvec(torch.ones(6, 1, dtype=DT))


def test_operator_counts_products():
    op = MatrixOperator(known_matrix(spectrum(n=5)))
    op.matvec(torch.ones(5, dtype=DT))
    op.matmat(torch.ones(5, 3, dtype=DT))
    assert op.num_products == 4


def test_hutchinson_converges_within_a_budget_of_products():
    lam = torch.linspace(0.5, 2.0, 50, dtype=DT)
    a = known_matrix(lam)
    exact = lam.sum().item()
    res = hutchinson(a, rtol=1e-2, max_samples=400)
    assert res.converged and res.num_products == res.num_samples <= 400
    assert res.std_error <= 1e-2 * abs(res.estimate)
    assert abs(res.estimate - exact) <= 4 * res.std_error
    tighter = hutchinson(a, rtol=2e-3, max_samples=20000)
    assert tighter.converged and tighter.num_samples > res.num_samples
    assert abs(tighter.estimate - exact) <= 4 * tighter.std_error


def test_hutchinson_warns_when_budget_is_too_small():
    a = known_matrix(torch.linspace(-1.0, 1.0, 30))
    with pytest.warns(ConvergenceWarning, match="raise max_samples or loosen rtol"):
        res = hutchinson(a, rtol=1e-6, max_samples=12)
    assert not res.converged and res.num_samples == 12


def test_hutchpp_is_exact_on_low_rank_and_beats_hutchinson():
    lam = torch.cat([torch.tensor([50.0, 30.0, 20.0, -10.0]), torch.zeros(36)]).to(DT)
    a = known_matrix(lam)
    res = hutchpp(a, num_products=30)
    assert res.num_products == 30
    assert math.isclose(res.estimate, 90.0, rel_tol=1e-10)
    # full rank with a dominant part: the deflated remainder is small
    lam2 = torch.cat([torch.tensor([50.0, 30.0, 20.0]), torch.full((37,), 0.1)]).to(DT)
    a2 = known_matrix(lam2)
    errs_pp = abs(hutchpp(a2, num_products=30).estimate - lam2.sum().item())
    assert errs_pp < 0.05 * lam2.sum().item()


def test_spectral_density_nodes_weights_moments_and_normalization():
    lam = spectrum(n=30)
    a = known_matrix(lam)
    grid = torch.linspace(-10.0, 8.0, 8001, dtype=DT)  # 40 sigma beyond the ends
    res = spectral_density(a, num_runs=4, num_steps=30, sigma=0.05, grid=grid)
    # full Krylov space: every run's nodes are the eigenvalues
    for nodes in res.nodes:
        torch.testing.assert_close(nodes, torch.sort(lam).values, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(4, dtype=DT))
    assert abs(torch.trapezoid(res.density, res.grid).item() - 1) < 1e-6
    # density moments: mean of the nodes; second moment + sigma^2
    m1 = (res.weights * res.nodes).sum(1).mean()
    m2 = (res.weights * res.nodes**2).sum(1).mean()
    torch.testing.assert_close(torch.trapezoid(res.grid * res.density, res.grid), m1)
    torch.testing.assert_close(
        torch.trapezoid(res.grid**2 * res.density, res.grid), m2 + 0.05**2
    )
    assert res.num_products == 4 * 30


def test_spectral_density_moments_estimate_normalized_traces():
    lam = spectrum(n=50)
    a = known_matrix(lam)
    res = spectral_density(a, num_runs=40, num_steps=6)
    for p in (1, 2, 3, 4):  # Gauss quadrature with 6 nodes is exact to degree 11
        per_run = (res.weights * res.nodes**p).sum(1)
        se = per_run.std() / math.sqrt(per_run.numel())
        exact = (lam**p).mean()
        assert abs(per_run.mean() - exact) <= 4 * se, (p, per_run.mean(), exact, se)


def test_batched_lanczos_matches_each_operator():
    mats = torch.stack([known_matrix(spectrum(n=12, seed=s), seed=s) for s in range(5)])
    mats[2] = torch.diag(torch.tensor([0.0] * 11 + [1.0], dtype=DT))  # zero bottom

    def matvec(x):
        return torch.einsum("bij,bj->bi", mats, x)

    res = batched_lanczos(matvec, (5, 12), which="both", tol=TOL)
    ref = torch.linalg.eigvalsh(mats)
    torch.testing.assert_close(res.top, ref[:, -1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.bottom, ref[:, 0], rtol=1e-9, atol=1e-12)
    assert res.converged.all() and (res.top_residuals <= TOL).all()
    hv = torch.einsum("bij,bj->bi", mats, res.top_vectors)
    torch.testing.assert_close(
        hv, res.top[:, None] * res.top_vectors, atol=1e-7, rtol=0
    )
    assert res.num_products <= 12


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_residual_estimate_gate_changes_no_result_and_no_product_count(
    which, monkeypatch
):
    """The Lanczos estimate only skips true-residual work; results are the same."""
    from hesslib.hessian import solvers

    a = known_matrix(spectrum(n=60))
    gated = lanczos(a, k=4, which=which, tol=TOL)
    seen = []
    original = solvers._Krylov.residual_estimate

    def checked(self, s):
        est = original(self, s)
        if est is not None:  # the estimate agrees with the true residuals
            _, _, true = self.pairs(s)
            seen.append(((est - true).abs() <= 1e-9 * a.abs().max() + 1e-3 * true)
                        .all().item())
        return None

    monkeypatch.setattr(solvers._Krylov, "residual_estimate", checked)
    plain = lanczos(a, k=4, which=which, tol=TOL)
    assert seen and all(seen)
    assert gated.num_products == plain.num_products
    torch.testing.assert_close(gated.eigenvalues, plain.eigenvalues, rtol=0, atol=0)
    torch.testing.assert_close(gated.residuals, plain.residuals, rtol=0, atol=0)


class _RoundedProducts(LinearOperator):
    """A known symmetric matrix whose products carry a fixed small error.

    ``(H + E) x`` with ``E`` non-symmetric, ``||E|| = 1e-5 ||H||``: a stand-in
    for products whose round-off is above ``tol`` (a tiny input Hessian in
    float32), which Lanczos cannot get below however many products it takes.
    """

    def __init__(self):
        spectrum = torch.cat([torch.tensor([1000.0, 500.0]),
                              torch.linspace(1.0, 100.0, 198)]).double()
        gen = torch.Generator().manual_seed(3)
        basis, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen,
                                               dtype=torch.float64))
        self.dense = basis @ torch.diag(spectrum) @ basis.T
        error = torch.randn(200, 200, generator=gen, dtype=torch.float64)
        self.error = error * (1e-5 * 1000.0 / torch.linalg.matrix_norm(error, 2))
        super().__init__(200, torch.float64, torch.device("cpu"))

    def _matmat(self, mat):
        return (self.dense + self.error) @ mat


def test_lanczos_stops_when_round_off_of_the_products_is_the_floor():
    op = _RoundedProducts()
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(ConvergenceWarning, match="stalled.*compute them in float64"):
        res = lanczos(op, k=1, tol=1e-7, max_iter=150, generator=gen)
    assert not res.converged
    assert res.num_products < 60  # stopped early, not at max_iter
    assert res.residuals[0] > 1e-7
    assert abs(res.eigenvalues[0].item() - 1000.0) < 1e-2  # still accurate
    # the same operator at a tolerance its products allow converges quietly
    res = lanczos(op, k=1, tol=1e-4, max_iter=150,
                  generator=torch.Generator().manual_seed(0))
    assert res.converged and res.residuals[0] <= 1e-4


class _LongRankOne(LinearOperator):
    """``100 u u^T + I`` in float32 with ``n = 2^21`` and a heavy-tailed ``u``.

    Its top eigenvalue is ``100 |u|^2 + 1`` exactly (for the float32 ``u``).
    The entries of ``u`` span many orders of magnitude, as those of a large
    network's Hessian eigenvectors do, which is where float32 sums over ``n``
    terms go wrong: torch's float32 norm of this ``u`` is off by 1.5e-4.
    """

    def __init__(self):
        n = 1 << 21
        gen = torch.Generator().manual_seed(0)
        scale = torch.exp(2 * torch.randn(n, generator=gen, dtype=torch.float64))
        u = torch.randn(n, generator=gen, dtype=torch.float64) * scale
        self.u = (u / u.norm()).float()
        self.top = 100 * (self.u.double() @ self.u.double()).item() + 1
        super().__init__(n, torch.float32, torch.device("cpu"))

    def _matmat(self, mat):
        along = (self.u.double() @ mat.double()).float()  # the product is exact
        return 100 * self.u[:, None] * along[None] + mat


@pytest.mark.parametrize("solver", [lanczos, power_iteration])
def test_float32_solvers_accumulate_long_sums_in_float64(solver):
    op = _LongRankOne()
    res = solver(op, k=1, tol=1e-4)
    # float32 sums put the value off by 6e-4 and the residual above 1e-4
    assert res.converged
    assert abs(res.eigenvalues[0].item() / op.top - 1) < 1e-6
