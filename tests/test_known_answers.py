"""Checks on the exact reduced-rank-regression learning coefficient in ``known_answers``."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from numpyro_slt.theory import rrr_case, rrr_learning_coefficient, rrr_multiplicity

DIMS = range(1, 9)


def _shapes(max_dim: int = 8):
    for M, N, H in itertools.product(range(1, max_dim + 1), repeat=3):
        for r in range(min(M, N, H) + 1):
            yield M, N, H, r


ALL_SHAPES = list(_shapes())


def test_regular_full_rank_truth():
    # H <= min(M, N) and r = H: the truth is a smooth point of the rank-H variety,
    # whose dimension is H(M + N - H), so lambda = d/2 (and multiplicity 1).
    for M, N in itertools.product(DIMS, repeat=2):
        for H in range(1, min(M, N) + 1):
            assert rrr_learning_coefficient(M, N, H, H) == H * (M + N - H) / 2
            assert rrr_multiplicity(M, N, H, H) == 1


def test_rank_one_product_at_zero():
    # H = 1, r = 0: K = |b|^2 |a|^2 restricted to products b a^T -> min(M, N)/2,
    # with multiplicity 2 exactly when M == N.
    for M, N in itertools.product(DIMS, repeat=2):
        assert rrr_learning_coefficient(M, N, 1, 0) == min(M, N) / 2
        assert rrr_multiplicity(M, N, 1, 0) == (2 if M == N else 1)


def test_bounded_by_half_parameter_count():
    for M, N, H, r in ALL_SHAPES:
        lam = rrr_learning_coefficient(M, N, H, r)
        assert lam > 0
        assert lam <= H * (M + N) / 2
        # and never more than half the dimension of the full M x N map space
        assert lam <= M * N / 2


def test_nondecreasing_in_true_rank():
    for M, N, H in itertools.product(DIMS, repeat=3):
        lams = [rrr_learning_coefficient(M, N, H, r) for r in range(min(M, N, H) + 1)]
        assert all(a <= b for a, b in itertools.pairwise(lams)), (M, N, H, lams)


def test_nondecreasing_in_hidden_units():
    for M, N in itertools.product(DIMS, repeat=2):
        for r in range(min(M, N) + 1):
            lams = [rrr_learning_coefficient(M, N, H, r) for H in range(max(r, 1), 12)]
            assert all(a <= b for a, b in itertools.pairwise(lams)), (M, N, r, lams)


def test_input_output_symmetry():
    # Transposing the model (x <-> y) swaps M and N and leaves lambda unchanged.
    for M, N, H, r in ALL_SHAPES:
        assert rrr_learning_coefficient(M, N, H, r) == rrr_learning_coefficient(N, M, H, r)


# Drton & Plummer (2017), Table 1: M = 3 covariates, N = 5 responses, model rank H,
# true rank r; multiplicity 1 except (H, r) = (3, 0), where it is 2.
DRTON_PLUMMER = {
    (1, 0): Fraction(3, 2),
    (1, 1): Fraction(7, 2),
    (2, 0): Fraction(3),
    (2, 1): Fraction(9, 2),
    (2, 2): Fraction(6),
    (3, 0): Fraction(9, 2),
    (3, 1): Fraction(11, 2),
    (3, 2): Fraction(13, 2),
    (3, 3): Fraction(15, 2),
}


@pytest.mark.parametrize(("H", "r"), sorted(DRTON_PLUMMER))
def test_drton_plummer_table(H, r):
    assert rrr_learning_coefficient(3, 5, H, r) == float(DRTON_PLUMMER[(H, r)])
    assert rrr_multiplicity(3, 5, H, r) == (2 if (H, r) == (3, 0) else 1)


# Hand-computed from the theorem (M, N, H, r) -> (case, lambda).
HAND = [
    ((5, 5, 3, 1), 1, 8.0),  # (2*4*10 - 0 - 16)/8, even parity
    ((3, 3, 2, 1), 1, 3.5),  # (2*3*6 - 0 - 9 + 1)/8, odd parity
    ((4, 4, 4, 2), 1, 7.5),  # (2*6*8 - 0 - 36)/8, even parity
    ((6, 4, 2, 1), 3, 6.0),  # (8 - 2 + 6)/2
    ((5, 5, 3, 3), 1, 10.5),  # regular: 3*7/2
    ((3, 8, 4, 1), 2, 8.0),  # (12 - 4 + 8)/2
    ((8, 3, 4, 1), 3, 8.0),  # (12 - 4 + 8)/2
    ((2, 2, 5, 1), 4, 2.0),  # MN/2
    ((10, 6, 4, 2), 3, 18.0),  # (24 - 8 + 20)/2
]


@pytest.mark.parametrize(("shape", "case", "lam"), HAND)
def test_hand_computed(shape, case, lam):
    assert rrr_case(*shape) == case
    assert rrr_learning_coefficient(*shape) == lam


def test_every_case_reachable():
    seen = {(rrr_case(*s), rrr_multiplicity(*s)) for s in ALL_SHAPES}
    assert seen == {(1, 1), (1, 2), (2, 1), (3, 1), (4, 1)}


def test_cases_are_exclusive():
    for M, N, H, r in ALL_SHAPES:
        violated = [M + H < N + r, N + H < M + r, M + N < H + r]
        assert sum(violated) <= 1
        assert (rrr_case(M, N, H, r) == 1) == (not any(violated))


def test_continuity_across_case_boundaries():
    # On the boundary of case 1 (e.g. N + r == M + H) both neighbouring formulas agree.
    for M, N, H, r in ALL_SHAPES:
        if rrr_case(M, N, H, r) != 1:
            continue
        lam = rrr_learning_coefficient(M, N, H, r)
        if N + r == M + H:
            assert lam == (H * M - H * r + N * r) / 2
        if M + r == N + H:
            assert lam == (H * N - H * r + M * r) / 2
        if H + r == M + N:
            assert lam == M * N / 2


@pytest.mark.parametrize("bad", [(3, 3, 2, 3), (3, 3, 2, -1), (0, 3, 2, 0), (2, 4, 5, 3)])
def test_rejects_invalid_rank(bad):
    with pytest.raises(ValueError):
        rrr_learning_coefficient(*bad)


def test_regular_and_normal_crossing_coefficients():
    from numpyro_slt.theory import (
        normal_crossing_learning_coefficient,
        regular_learning_coefficient,
    )

    assert regular_learning_coefficient(5) == 2.5
    assert normal_crossing_learning_coefficient((1, 2)) == (0.25, 1)
    assert normal_crossing_learning_coefficient((1, 1)) == (0.5, 2)
    assert normal_crossing_learning_coefficient((3,)) == (1 / 6, 1)
    with pytest.raises(ValueError, match="powers"):
        normal_crossing_learning_coefficient((0, 1))
    with pytest.raises(ValueError, match="num_parameters"):
        regular_learning_coefficient(0)


def test_normal_crossing_expectation_by_quadrature():
    from numpyro_slt.theory import normal_crossing_expected_excess

    # One parameter, flat enough prior: E[nβ·c·w^(2k)] = 1/(2k) exactly when γ → 0.
    assert normal_crossing_expected_excess((1,), 0.5, 1e4, 1e-6) == pytest.approx(0.5, rel=1e-4)
    assert normal_crossing_expected_excess((3,), 0.5, 1e6, 1e-6) == pytest.approx(1 / 6, rel=1e-3)
    # Localization pulls the expectation down; the grid resolution does not matter.
    value = normal_crossing_expected_excess((1, 2), 0.5, 1e4, 1.0)
    assert 0.2 < value < 0.25
    assert value == pytest.approx(
        normal_crossing_expected_excess((1, 2), 0.5, 1e4, 1.0, num_points=6001), rel=1e-4)
    with pytest.raises(ValueError, match="powers"):
        normal_crossing_expected_excess((1, 1, 1), 0.5, 1e4, 1.0)
