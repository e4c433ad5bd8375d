"""LockstepGridSearchCV: scikit-learn's GridSearchCV, with candidates and folds trained
in stacks.

The search is GridSearchCV's: the same constructor, candidates, splits, scorers, error
handling, ``cv_results_`` (through GridSearchCV's own ``_format_results``), best
candidate and refit. Only the fits differ: the (candidate, fold) fits of a
:class:`~skdynloss.DynamicalLossClassifier` (or of a Pipeline that ends in one) that
differ only in what can be stacked are trained together by
:func:`~skdynloss._lockstep.fit_datasets`, and then scored one by one, exactly as
GridSearchCV scores them.
"""

import time
import traceback
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection import GridSearchCV, ParameterGrid, check_cv
from sklearn.model_selection._validation import (
    _fit_and_score,
    _insert_error_scores,
    _score,
    _warn_or_raise_about_fit_failures,
)
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_method_params, _num_samples, indexable

from ._lockstep import fit_datasets, hyperparameter_key


def _final(estimator):
    """(final estimator, name of its step or None) of an estimator or a Pipeline."""
    if isinstance(estimator, Pipeline):
        return estimator.steps[-1][1], estimator.steps[-1][0]
    return estimator, None


def _has_estimator(value):
    return hasattr(value, "get_params") or (
        isinstance(value, list | tuple) and any(hasattr(v, "get_params") for v in value)
    )


def _group_key(estimator, parameters, fit_params):
    """What the fits of one group share (None: fit it on its own, as GridSearchCV)."""
    final, name = _final(estimator)
    if any(_has_estimator(v) for v in parameters.values()):
        return None
    allowed = {"sample_weight" if name is None else f"{name}__sample_weight"}
    if set(fit_params) - allowed:
        return None
    try:
        key = hyperparameter_key(final)
    except Exception:
        # An invalid value: the ordinary fit raises (or records) its error.
        return None
    if key is None:
        return None
    # A Pipeline's earlier steps: the group shares their parameters (and fits them
    # once per fold); the final step's are in ``key``.
    earlier = ()
    if name is not None:
        earlier = tuple(
            sorted(
                (k, repr(v))
                for k, v in parameters.items()
                if not k.startswith(f"{name}__")
            )
        )
    return (key, earlier)


def _error_scores(scorer, error_score, return_train_score):
    if isinstance(scorer, _MultimetricScorer):
        test = {name: error_score for name in scorer._scorers}
    else:
        test = error_score
    train = (
        (test.copy() if isinstance(test, dict) else test)
        if return_train_score
        else None
    )
    return test, train


def _run_group(
    estimators,
    tasks,
    X,
    y,
    splits,
    *,
    scorer,
    fit_params,
    score_params,
    return_train_score,
    error_score,
    verbose,
    max_stack_bytes,
    label,
):
    """Fit one group's (candidate, fold) estimators in stacks, then score each.

    Returns one result dict per task, as sklearn's ``_fit_and_score`` returns it.
    """
    folds = sorted({split for _, split in tasks})
    if verbose > 0:
        n_candidates = len({c for c, _ in tasks})
        print(
            f"[lockstep] {label.strip()}: {len(tasks)} fits ({n_candidates} candidates "
            f"x {len(folds)} folds)"
        )
    train_data, pre_fitted, pre_errors, pre_times = {}, {}, {}, {}
    for split in folds:
        train = splits[split][0]
        fp = _check_method_params(X, params=fit_params, indices=train)
        w = next(iter(fp.values())) if fp else None
        train_data[split] = (_safe_indexing(X, train), _safe_indexing(y, train), w)
    datasets = []
    for est, (_, split) in zip(estimators, tasks, strict=True):
        X_train, y_train, w = train_data[split]
        if isinstance(est, Pipeline) and len(est.steps) > 1:
            # The earlier steps are the same for the whole group: fit them once per
            # fold, and share the fitted transformers.
            if split not in pre_fitted and split not in pre_errors:
                t0 = time.perf_counter()
                try:
                    pre = est[:-1]
                    Xt = pre.fit_transform(X_train, y_train)
                    pre_fitted[split] = (list(pre.steps), Xt)
                except Exception as exc:
                    if error_score == "raise":
                        raise
                    pre_errors[split] = exc
                pre_times[split] = time.perf_counter() - t0
            if split in pre_fitted:
                steps, Xt = pre_fitted[split]
                est.steps = [*steps, est.steps[-1]]
                datasets.append((Xt, y_train, w, split))
            else:
                datasets.append(None)
        else:
            datasets.append((X_train, y_train, w, split))
    live = [i for i, d in enumerate(datasets) if d is not None]
    finals = [_final(estimators[i])[0] for i in live]
    failures, fit_times = fit_datasets(
        finals,
        [datasets[i] for i in live],
        errors="raise" if error_score == "raise" else "return",
        interrupt="raise",
        verbose=verbose,
        max_stack_bytes=max_stack_bytes,
        label=label,
    )
    failure = dict(zip(live, failures, strict=True))
    times = dict(zip(live, fit_times, strict=True))
    n_per_fold = {s: sum(1 for _, f in tasks if f == s) for s in folds}
    results = []
    for i, (est, (_, split)) in enumerate(zip(estimators, tasks, strict=True)):
        train, test = splits[split]
        fit_time = times.get(i, 0.0) + pre_times.get(split, 0.0) / n_per_fold[split]
        exc = failure.get(i, pre_errors.get(split))
        result = {}
        if exc is not None:
            test_scores, train_scores = _error_scores(
                scorer, error_score, return_train_score
            )
            result["fit_error"] = "".join(traceback.format_exception(exc))
            score_time = 0.0
        else:
            result["fit_error"] = None
            t0 = time.perf_counter()
            X_test, y_test = _safe_indexing(X, test), _safe_indexing(y, test)
            sp = _check_method_params(X, params=score_params, indices=test)
            test_scores = _score(est, X_test, y_test, scorer, sp, error_score)
            score_time = time.perf_counter() - t0
            if return_train_score:
                X_train, y_train, _ = train_data[split]
                sp = _check_method_params(X, params=score_params, indices=train)
                train_scores = _score(est, X_train, y_train, scorer, sp, error_score)
        result["test_scores"] = test_scores
        if return_train_score:
            result["train_scores"] = train_scores
        result["n_test_samples"] = _num_samples(_safe_indexing(X, test))
        result["fit_time"] = fit_time
        result["score_time"] = score_time
        results.append(result)
    return results


class LockstepGridSearchCV(GridSearchCV):
    """GridSearchCV that trains a DynamicalLossClassifier's candidates and folds at once.

    A drop-in for :class:`sklearn.model_selection.GridSearchCV` (the same parameters,
    the same fitted attributes, ``cv_results_`` with the same keys) for a
    :class:`~skdynloss.DynamicalLossClassifier`, or a
    :class:`~sklearn.pipeline.Pipeline` that ends in one. The (candidate, fold) fits
    that differ only in what can be stacked (``amplitude``, ``period``, ``shape``,
    ``order``, ``static_last_period``, a named ``loss``, ``random_state``, and the
    fold's rows) train together as one stacked network, and each model computes what
    its own fit would compute (same initialisation, batches and clock), so that the
    scores are GridSearchCV's. The fits that differ in anything else (``lr``, the
    optimizer, the widths, ``batch_size``, ``max_epochs``, the earlier steps'
    parameters) form separate groups, run one after another or over ``n_jobs``
    workers through joblib (``joblib.parallel_config(backend="dask")`` spreads them
    over a cluster). A group larger than ``max_stack_bytes`` is split into several
    stacks. What cannot be stacked at all (a CNN or custom module, a callable loss,
    user callbacks, ``sharpness_every``, ``early_stopping``, fit parameters other than
    ``sample_weight``, estimators as grid values) is fitted by ``_fit_and_score``, as
    GridSearchCV fits it.

    Parameters
    ----------
    estimator : DynamicalLossClassifier or Pipeline
        The estimator, or a Pipeline whose last step is one.
    param_grid : dict or list of dicts
        As for GridSearchCV.
    scoring, n_jobs, refit, cv, verbose, pre_dispatch, error_score, return_train_score
        As for GridSearchCV; ``n_jobs`` runs groups (not single fits) in parallel, and
        ``verbose >= 1`` also prints a line per group and per stack and shows a
        progress bar over each stack's epochs.
    max_stack_bytes : int, default=None
        Most memory one stack may use (estimated per model by
        :func:`skdynloss._lockstep.model_bytes`: parameters, gradients, optimizer
        moments and the divergence guard's copies, 6 numbers per parameter, plus one
        batch's activations); None is a quarter of the device's memory.

    Attributes
    ----------
    cv_results_, best_estimator_, best_score_, best_params_, best_index_, scorer_, \
n_splits_, refit_time_, multimetric_
        As for GridSearchCV. ``mean_fit_time`` of a stacked fit is its share of its
        stack's time (the stack's time divided by its models), plus its own
        preparation and record.

    See Also
    --------
    sklearn.model_selection.GridSearchCV : the search this one reproduces.
    skdynloss.fit_lockstep : the stacked fits, for any list of estimators.

    Examples
    --------
    >>> from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV, make_spiral
    >>> X, y = make_spiral(30)
    >>> clf = DynamicalLossClassifier(hidden_layer_sizes=(8,), max_epochs=10,
    ...                               random_state=0)
    >>> search = LockstepGridSearchCV(clf, {"amplitude": [1, 5], "period": [1, 2]},
    ...                               cv=3).fit(X, y)
    >>> len(search.cv_results_["params"])
    4
    """

    _parameter_constraints: dict = {
        **GridSearchCV._parameter_constraints,
        "max_stack_bytes": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
        max_stack_bytes=None,
    ):
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.max_stack_bytes = max_stack_bytes

    def _evaluate(self, base, X, y, candidates, splits, scorers, routed):
        """Every (candidate, split) result, in GridSearchCV's order."""
        tasks = [(c, s) for c in range(len(candidates)) for s in range(len(splits))]
        fit_params = routed.estimator.fit
        score_params = routed.scorer.score
        kwargs = dict(
            scorer=scorers,
            fit_params=fit_params,
            score_params=score_params,
            return_train_score=self.return_train_score,
            error_score=self.error_score,
        )
        groups, alone = {}, []
        for i, (c, _) in enumerate(tasks):
            est = clone(base).set_params(**clone(candidates[c], safe=False))
            key = _group_key(est, candidates[c], fit_params)
            if key is None:
                alone.append(i)
            else:
                groups.setdefault(key, []).append((i, est))
        jobs, order = [], []
        for g, members in enumerate(groups.values(), 1):
            label = f"group {g}/{len(groups)} "
            jobs.append(
                delayed(_run_group)(
                    [est for _, est in members],
                    [tasks[i] for i, _ in members],
                    X,
                    y,
                    splits,
                    verbose=self.verbose,
                    max_stack_bytes=self.max_stack_bytes,
                    label=label,
                    **kwargs,
                )
            )
            order.append([i for i, _ in members])
        for i in alone:
            c, s = tasks[i]
            train, test = splits[s]
            jobs.append(
                delayed(_single)(
                    clone(base),
                    X,
                    y,
                    train=train,
                    test=test,
                    parameters=candidates[c],
                    verbose=self.verbose,
                    return_n_test_samples=True,
                    return_times=True,
                    split_progress=(s, len(splits)),
                    candidate_progress=(c, len(candidates)),
                    **kwargs,
                )
            )
            order.append([i])
        outputs = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(jobs)
        out = [None] * len(tasks)
        for indices, results in zip(order, outputs, strict=True):
            for i, result in zip(indices, results, strict=True):
                out[i] = result
        return out

    @_fit_context(
        # *SearchCV.estimator is not validated yet
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, stacking the fits that can be stacked.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (a DataFrame keeps its column names).
        y : array-like of shape (n_samples,)
            Labels.
        **params : dict of str -> object
            Parameters for the estimator's fit (``sample_weight``, or
            ``<last step>__sample_weight`` for a Pipeline, are stacked; others make
            the fits ordinary ones), the scorer and the splitter (``groups``), as for
            GridSearchCV.

        Returns
        -------
        self : LockstepGridSearchCV
            The fitted search.
        """
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._checked_cv_orig = cv
        n_splits = cv.get_n_splits(X, y, **routed.splitter.split)
        base = clone(self.estimator)
        candidates = list(ParameterGrid(self.param_grid))
        splits = list(cv.split(X, y, **routed.splitter.split))
        if len(splits) != n_splits:
            raise ValueError(
                "cv.split and cv.get_n_splits return inconsistent results. "
                f"Expected {n_splits} splits, got {len(splits)}"
            )
        if self.verbose > 0:
            print(
                f"Fitting {n_splits} folds for each of {len(candidates)} candidates, "
                f"totalling {n_splits * len(candidates)} fits"
            )
        out = self._evaluate(base, X, y, candidates, splits, scorers, routed)
        if len(out) < 1:
            raise ValueError(
                "No fits were performed. Was the CV iterator empty? Were there no "
                "candidates?"
            )
        _warn_or_raise_about_fit_failures(out, self.error_score)
        if callable(self.scoring):
            _insert_error_scores(out, self.error_score)
        results = self._format_results(candidates, n_splits, out, {})
        self.multimetric_ = isinstance(out[0]["test_scores"], dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(out[0]["test_scores"])
            refit_metric = self.refit
        self.n_splits_ = n_splits
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(
                self.refit, refit_metric, results
            )
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][
                    self.best_index_
                ]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(base).set_params(
                **clone(self.best_params_, safe=False)
            )
            start = time.time()
            if y is not None:
                self.best_estimator_.fit(X, y, **routed.estimator.fit)
            else:
                self.best_estimator_.fit(X, **routed.estimator.fit)
            self.refit_time_ = time.time() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = (
            scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        )
        self.cv_results_ = results
        return self


def _single(estimator, X, y, **kwargs):
    """One ordinary fit, as GridSearchCV runs it (in a list, like a group's results)."""
    return [_fit_and_score(estimator, X, y, **kwargs)]
