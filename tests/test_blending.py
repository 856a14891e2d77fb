"""The blend functions on arrays worked out by hand: modes, weight fitting, nested estimates (no training)."""

import numpy as np
import pytest

from hms.blending import blend, fit_best_single, fit_equal, fit_greedy, fit_optuna, nested_predictions
from hms.metrics import kl_divergence


def test_blend_modes_and_weight_fitting_on_arrays():
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(6), 200)
    noisy = lambda scale: np.clip(y + rng.normal(0, scale, y.shape), 1e-3, None)  # noqa: E731
    p = np.stack([q / q.sum(axis=1, keepdims=True) for q in (noisy(0.1), noisy(0.1), noisy(0.4))])
    assert np.allclose(blend(p, [1, 1, 1]), p.mean(axis=0))
    assert np.allclose(blend(p, [0, 2, 0], "log"), p[1])
    best = fit_best_single(p, y)
    assert best.tolist() == [0, 1, 0] or best.tolist() == [1, 0, 0]
    greedy = fit_greedy(p, y)
    assert kl_divergence(y, blend(p, greedy)) < kl_divergence(y, blend(p, best))  # two independent errors average out
    assert greedy[0] > 0 and greedy[1] > 0 and greedy.sum() == pytest.approx(1)
    assert (fit_greedy(p, y, max_members=1) > 0).sum() == 1
    optuna_w = fit_optuna(p, y, trials=40, max_members=2)
    assert (optuna_w > 0).sum() <= 2 and kl_divergence(y, blend(p, optuna_w)) <= kl_divergence(y, blend(p, best)) + 1e-12
    assert np.allclose(fit_equal(p), 1 / 3)


def test_nested_estimate_uses_weights_fitted_on_the_other_folds():
    # Run 0 is right on fold 0 and on 5 rows of fold 1, run 1 on fold 1 only: run 0 is the best single run
    # in-sample. Nested, fold 0 is blended by what fold 1 prefers (run 1) and fold 1 by what fold 0 prefers (run 0).
    y = np.tile(np.eye(6)[0], (40, 1))
    folds = np.repeat([0, 1], 20)
    good, bad = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), np.array([0.1, 0.18, 0.18, 0.18, 0.18, 0.18])
    right = [np.arange(40) < 25, folds == 1]
    p = np.stack([np.where(r[:, None], good, bad) for r in right])
    assert fit_best_single(p, y).tolist() == [1, 0]
    nested = nested_predictions(fit_best_single, p, y, folds)
    assert np.allclose(nested[folds == 0], p[1, folds == 0]) and np.allclose(nested[folds == 1], p[0, folds == 1])
    assert kl_divergence(y, nested) > kl_divergence(y, p[0])


def test_log_blend_uses_its_weights():
    # Two rows, two runs with unequal weights 1 and 3: the weighted geometric mean, renormalised, by hand.
    a = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
    b = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2]])
    expected = a ** 0.25 * b ** 0.75
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(blend(np.stack([a, b]), [1, 3], "log"), expected)
    assert np.allclose(blend(np.stack([a, b]), [1, 3], "prob"), 0.25 * a + 0.75 * b)
    assert not np.allclose(blend(np.stack([a, b]), [1, 3], "log"), blend(np.stack([a, b]), [1, 1], "log"))


def mirrored_runs(n=40):
    """Two runs that err on opposite halves of the rows, as mirror images: by symmetry and convexity of the
    KL in the blend weight, the equal blend is the best blend, strictly better than either run or a 2:1 mix."""
    y = np.tile(np.eye(6)[0], (n, 1))
    good, bad = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), np.array([0.1, 0.18, 0.18, 0.18, 0.18, 0.18])
    first = np.arange(n) < n // 2
    return np.stack([np.where(first[:, None], good, bad), np.where(first[:, None], bad, good)]), y


def test_greedy_keeps_its_best_prefix_not_its_last_step():
    p, y = mirrored_runs()
    # Step 1 takes either run, step 2 the other (the equal blend, the best), step 3 must add a third pick: 2:1.
    assert kl_divergence(y, blend(p, [1, 1])) < kl_divergence(y, blend(p, [2, 1])) < kl_divergence(y, p[0])
    assert np.allclose(fit_greedy(p, y, steps=3), [0.5, 0.5])


def test_optuna_blend_starts_from_the_best_single_run_and_equal_weights():
    # Run 2 is much the best; with only the two warm-start trials the best single run must be found.
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(6), 100)
    p = np.stack([rng.dirichlet(np.ones(6), 100), rng.dirichlet(np.ones(6), 100), 0.9 * y + 0.1 / 6])
    assert np.allclose(fit_optuna(p, y, trials=2), [0, 0, 1])
    assert np.allclose(fit_optuna(p[::-1], y, trials=2), [1, 0, 0])  # the best single run first: only it is used
    mirrored, truth = mirrored_runs()
    assert np.allclose(fit_optuna(mirrored, truth, trials=2), [0.5, 0.5])  # the second warm start: equal weights


def test_evaluate_scores_each_method_in_sample_and_nested_and_times_it():
    import dataclasses

    from hms.blending import MethodResult, evaluate

    rng = np.random.default_rng(5)
    y = rng.dirichlet(np.ones(6), 60)
    p = np.stack([rng.dirichlet(np.ones(6), 60) for _ in range(3)])
    folds = np.arange(60) % 3
    results = evaluate(p, y, folds, "prob", {"equal": (fit_equal, {}), "best_single": (fit_best_single, {})})
    assert list(results) == ["equal", "best_single"]
    for name, fit in (("equal", fit_equal), ("best_single", fit_best_single)):
        result = results[name]
        w = fit(p, y)
        assert np.allclose(result.weights, w) and result.kl == pytest.approx(kl_divergence(y, blend(p, w)), abs=1e-12)
        assert result.nested_kl == pytest.approx(kl_divergence(y, nested_predictions(fit, p, y, folds)), abs=1e-12)
        assert 0 <= result.seconds < 0.5  # a fit of milliseconds, timed as a difference of clock readings
    with pytest.raises(dataclasses.FrozenInstanceError):
        results["equal"].kl = 0.0  # a method's result is a record, not a scratch pad
    assert isinstance(results["equal"], MethodResult)


def test_a_blend_mode_that_does_not_exist_is_refused_and_optuna_weights_stay_on_the_simplex():
    rng = np.random.default_rng(6)
    y = rng.dirichlet(np.ones(6), 50)
    p = np.stack([rng.dirichlet(np.ones(6), 50) for _ in range(4)])
    for mode in ("geometric", "abc", "zzz"):  # modes sorting before and after "log" and "prob": matched by name, not order
        with pytest.raises(ValueError, match="blend mode must be one of"):
            blend(p, [1, 1, 1, 1], mode)
    w = fit_optuna(p, y, trials=30, seed=1)
    assert (w >= 0).all() and w.sum() == pytest.approx(1)
    one = fit_optuna(p, y, trials=30, max_members=1, seed=2)
    assert (one > 0).sum() == 1 and one.max() == pytest.approx(1)


def test_nested_estimate_with_three_folds_fits_each_fold_on_the_two_others():
    # Run k is right on fold k only, and wrong in its own way elsewhere. Nested, a fold's rows are blended with the
    # run that is best on the other two folds (never the fold's own run), so each fold shows another run's mistake.
    y = np.tile(np.eye(6)[0], (30, 1))
    folds = np.repeat([0, 1, 2], 10)
    good = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])
    bad = [np.array([0.2 - 0.05 * k, 0.2 + 0.05 * k, 0.15, 0.15, 0.15, 0.15]) for k in range(3)]  # run 0 the least wrong
    p = np.stack([np.where((folds == k)[:, None], good, bad[k] / bad[k].sum()) for k in range(3)])
    nested = nested_predictions(fit_best_single, p, y, folds)
    for fold in range(3):
        others = folds != fold
        best_elsewhere = int(np.argmin([kl_divergence(y[others], q[others]) for q in p]))  # worked out here
        assert best_elsewhere != fold
        np.testing.assert_allclose(nested[folds == fold], p[best_elsewhere, folds == fold])


def test_greedy_returns_the_best_single_run_when_no_blend_beats_it():
    # Run 0 is close to the votes, runs 1 and 2 are noise: every blend with them is worse, so greedy's best prefix is
    # run 0 alone (a step that scored blends by the wrong weights would still pair it with another run).
    rng = np.random.default_rng(7)
    y = rng.dirichlet(np.ones(6), 80)
    p = np.stack([0.95 * y + 0.05 / 6, rng.dirichlet(np.ones(6), 80), rng.dirichlet(np.ones(6), 80)])
    assert kl_divergence(y, p[0]) < min(kl_divergence(y, blend(p, w)) for w in ([1, 1, 0], [1, 0, 1], [2, 1, 0]))
    assert np.allclose(fit_greedy(p, y), [1, 0, 0])


def test_blend_mode_is_matched_by_value_not_identity():
    # A mode read from a config file or a command line is a string built at run time, not the interned literal.
    a = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])
    b = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.1]])
    log = "".join(["lo", "g"])
    expected = np.sqrt(a * b) / np.sqrt(a * b).sum()  # equal weights: the renormalised geometric mean, by hand
    assert np.allclose(blend(np.stack([a, b]), [1, 1], log), expected)
    assert np.allclose(blend(np.stack([a, b]), [1, 1], "".join(["pr", "ob"])), (a + b) / 2)


def test_a_trial_over_max_members_keeps_its_largest_weights():
    import optuna

    from hms.blending import _trial_weights

    trial = optuna.trial.FixedTrial({"use_0": True, "w_0": 0.2, "use_1": True, "w_1": 0.9, "use_2": False,
                                     "use_3": True, "w_3": 0.5})
    assert _trial_weights(trial, 4, max_members=2).tolist() == [0.0, 0.9, 0.0, 0.5]
    trial = optuna.trial.FixedTrial({"use_0": True, "w_0": 0.2, "use_1": True, "w_1": 0.9, "use_2": False, "use_3": False})
    assert _trial_weights(trial, 4, max_members=2).tolist() == [0.2, 0.9, 0.0, 0.0]  # within the limit: untouched


def test_optuna_searches_each_weight_in_its_documented_range():
    import optuna

    rng = np.random.default_rng(8)
    y = rng.dirichlet(np.ones(6), 40)
    p = np.stack([rng.dirichlet(np.ones(6), 40) for _ in range(3)])
    study = optuna.create_study(direction="minimize")
    fit_optuna(p, y, trials=12, study=study, warm_start=False)
    ranges = {(d.low, d.high) for t in study.trials for name, d in t.distributions.items() if name.startswith("w_")}
    assert ranges == {(0.01, 1.0)}
    assert len(study.trials) == 12  # exactly the trials asked for


def test_greedy_does_not_add_a_run_that_leaves_the_kl_unchanged():
    # Run 1 is a copy of run 0 (the best): adding it changes nothing, so the best prefix is run 0 alone.
    rng = np.random.default_rng(9)
    y = rng.dirichlet(np.ones(6), 50)
    good = 0.9 * y + 0.1 / 6
    p = np.stack([good, good.copy(), rng.dirichlet(np.ones(6), 50)])
    assert np.allclose(fit_greedy(p, y), [1, 0, 0])


def test_fitting_with_optuna_leaves_its_verbosity_and_the_warning_filters_as_they_were():
    import warnings

    import optuna

    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(6), 30)
    p = np.stack([rng.dirichlet(np.ones(6), 30) for _ in range(2)])
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    filters = list(warnings.filters)
    try:
        fit_optuna(p, y, trials=3)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
        assert list(warnings.filters) == filters
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)


def _members_with_a_class_bias(seed=0, rows=600, shift=1.0):
    """Three noisy members of the truth that all under-predict class 2 by exp(-shift)."""
    rng = np.random.default_rng(seed)
    y = rng.dirichlet(np.ones(6) * 0.5, size=rows)
    out = []
    for noise in (0.5, 1.5, 1.0):
        q = np.log(np.clip(y, 1e-3, 1)) + rng.normal(0, noise, size=y.shape)
        q[:, 2] -= shift
        out.append(np.exp(q) / np.exp(q).sum(axis=1, keepdims=True))
    return np.stack(out), y


def test_kl_weights_are_the_best_point_of_the_simplex():
    """Against a brute-force grid over the 3-member simplex (an independent search): no grid point blends better."""
    from hms.blending import fit_kl

    p, y = _members_with_a_class_bias()
    w = fit_kl(p, y)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    grid = [(a, b, 1 - a - b) for a in np.linspace(0, 1, 41) for b in np.linspace(0, 1, 41) if a + b <= 1 + 1e-12]
    best_grid = min(kl_divergence(y, blend(p, np.clip(g, 0, None))) for g in grid if sum(g) > 0)
    assert kl_divergence(y, blend(p, w)) <= best_grid + 1e-6


def test_the_ridge_pulls_the_weights_towards_equal():
    from hms.blending import fit_kl, fit_kl_ridge

    p, y = _members_with_a_class_bias()
    equal = np.ones(3) / 3
    assert np.abs(fit_kl_ridge(p, y, ridge=0.5) - equal).sum() < np.abs(fit_kl(p, y) - equal).sum()


def test_a_learned_stack_recovers_a_class_bias_the_members_share():
    """Every member under-predicts class 2 by a factor e: the stack's bias for class 2 stands about 1 above the
    others' and its KL is well below the best weights-only blend's; in nested CV too."""
    from hms.blending import Fit, fit_kl, fit_stack, methods

    p, y = _members_with_a_class_bias()
    fitted = fit_stack(p, y)
    assert isinstance(fitted, Fit) and fitted.weights.sum() == pytest.approx(1.0)
    others = np.delete(fitted.bias, 2)
    assert fitted.bias[2] - others.mean() == pytest.approx(1.0, abs=0.2)
    assert kl_divergence(y, blend(p, fitted)) < 0.8 * kl_divergence(y, blend(p, fit_kl(p, y)))
    folds = np.arange(len(y)) % 3
    from hms.blending import evaluate

    results = evaluate(p, y, folds, "prob", {k: v for k, v in methods(trials=10).items() if k in ("kl", "stack")})
    assert results["stack"].nested_kl < results["kl"].nested_kl and results["stack"].bias is not None
