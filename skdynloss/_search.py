"""scikit-learn's searches, with the candidates and folds trained in stacks.

:class:`LockstepGridSearchCV`, :class:`LockstepRandomizedSearchCV`,
:class:`LockstepHalvingGridSearchCV` and :class:`LockstepHalvingRandomSearchCV` are
scikit-learn's GridSearchCV, RandomizedSearchCV, HalvingGridSearchCV and
HalvingRandomSearchCV: each subclasses its twin and keeps its constructor (plus
``max_stack_bytes``), its ``_run_search`` (the candidate schedule: the grid, the
samples, the halving rounds), its ``_format_results`` (``cv_results_``), its best
candidate and refit. Only the fits differ. One ``fit``, shared by the four (in
:class:`_LockstepSearch`), builds the ``evaluate_candidates`` callback that
``_run_search`` drives, with scikit-learn's signature; it trains the (candidate, fold)
fits of a :class:`~skdynloss.DynamicalLossClassifier` (or of a Pipeline that ends in
one) that differ only in what can be stacked as stacks, through
:func:`~skdynloss._lockstep.fit_datasets`, and scores them one by one, as scikit-learn's
``_fit_and_score`` scores them. The stacks, not the groups, are the units of work that
joblib sends to the ``n_jobs`` workers (or to a dask cluster).

scikit-learn's private names this module relies on (tested with scikit-learn 1.9.x
only; where an older version lacks the callbacks API or ``_check_input_parameters``,
``fit`` skips them):

* ``sklearn.base._fit_context``;
* ``BaseSearchCV``'s ``_get_scorers``, ``_get_routed_params_for_fit``,
  ``_check_input_parameters``, ``_run_search``, ``_format_results``,
  ``_select_best_index``, ``_check_refit_for_multimetric``, ``_checked_cv_orig``,
  ``_parameter_constraints`` and ``_init_callback_context`` (the callbacks API of 1.9,
  whose root context the halving searches' ``_run_search`` needs);
* ``sklearn.model_selection._search_successive_halving`` (the halving searches,
  imported without enabling the experimental module globally);
* ``sklearn.model_selection._validation``'s ``_fit_and_score``, ``_score``,
  ``_insert_error_scores`` and ``_warn_or_raise_about_fit_failures``;
* ``sklearn.metrics._scorer._MultimetricScorer``;
* ``sklearn.utils._param_validation.Interval`` and
  ``sklearn.utils.validation._check_method_params``.

``fit`` mirrors ``BaseSearchCV.fit`` of scikit-learn 1.9 step for step, with its
``evaluate_candidates`` replaced; nothing else of scikit-learn's search logic is
repeated here.
"""

import inspect
import time
import traceback
from collections import defaultdict
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, check_cv
from sklearn.model_selection._search import BaseSearchCV
from sklearn.model_selection._search_successive_halving import (
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
)
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

from ._lockstep import (
    fit_datasets,
    hyperparameter_key,
    stack_units,
)
from ._net import steps_per_epoch

_STACK_CONSTRAINT = {
    "max_stack_bytes": [Interval(Integral, 1, None, closed="left"), None],
}


# ------------------------------------------------------------------------ grouping


def _final(estimator):
    """(final estimator, name of its step or None) of an estimator or a Pipeline."""
    if isinstance(estimator, Pipeline):
        return estimator.steps[-1][1], estimator.steps[-1][0]
    return estimator, None


def _has_estimator(value):
    return hasattr(value, "get_params") or (
        isinstance(value, list | tuple) and any(hasattr(v, "get_params") for v in value)
    )


def _value_key(value):
    """A hashable key equal for two values only when they are equal in value and type.

    Arrays compare by dtype, shape and bytes (never by their printed form, which
    elides the middle of a long array); sequences and dicts element by element; other
    objects by identity (two distinct objects are never taken for one another).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return ("object-array", value.shape, tuple(map(_value_key, value.ravel())))
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return ("numpy", value.dtype.str, value.tobytes())
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_value_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((_value_key(k), _value_key(v)) for k, v in value.items()))
    if isinstance(value, bool | int | float | complex | str | bytes | type(None)):
        # The type too: True, 1 and 1.0 are equal in Python, not as parameters.
        return (type(value).__name__, value)
    return ("object", id(value))


def _group_key(estimator, parameters, fit_params):
    """What the fits of one group share (None: fit it on its own, as scikit-learn)."""
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
                (k, _value_key(v))
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


# --------------------------------------------------------------- units of work


def _prepare_group(estimators, folds, X, y, splits, fit_params, error_score):
    """Each fit's training data, with a Pipeline's earlier steps fitted once per fold.

    The fits of one group share the earlier steps' parameters: the steps are fitted
    once per fold (here, before the group is cut into stacks) and the fitted
    transformers are shared. Returns, per fit, ``(X, y, sample_weight, fold)`` (None
    when its earlier steps failed), the earlier steps' error per fold and the seconds
    they took per fold.
    """
    train_data, pre, errors, seconds = {}, {}, {}, {}
    for split in sorted(set(folds)):
        train = splits[split][0]
        fp = _check_method_params(X, params=fit_params, indices=train)
        w = next(iter(fp.values())) if fp else None
        train_data[split] = (_safe_indexing(X, train), _safe_indexing(y, train), w)
    datasets = []
    for est, split in zip(estimators, folds, strict=True):
        X_train, y_train, w = train_data[split]
        if not (isinstance(est, Pipeline) and len(est.steps) > 1):
            datasets.append((X_train, y_train, w, split))
            continue
        if split not in pre and split not in errors:
            t0 = time.perf_counter()
            try:
                head = est[:-1]
                Xt = head.fit_transform(X_train, y_train)
                pre[split] = (list(head.steps), Xt)
            except Exception as exc:
                if error_score == "raise":
                    raise
                errors[split] = exc
            seconds[split] = time.perf_counter() - t0
        if split in pre:
            steps, Xt = pre[split]
            est.steps = [*steps, est.steps[-1]]
            datasets.append((Xt, y_train, w, split))
        else:
            datasets.append(None)
    return datasets, errors, seconds


def _unit_cost(estimator, datasets):
    """A rough relative cost of a unit (to hand out the longest first)."""
    final = _final(estimator)[0]
    try:
        n = max(_num_samples(d[0]) for d in datasets if d is not None)
        return (
            int(final.max_epochs)
            * steps_per_epoch(int(final.batch_size), n)
            * len(datasets)
        )
    except Exception:
        return 0


def _run_stack(
    estimators,
    datasets,
    pre_errors,
    pre_seconds,
    X,
    y,
    splits,
    *,
    scorer,
    score_params,
    return_train_score,
    error_score,
    verbose,
    max_stack_bytes,
    label,
    threads,
):
    """Fit one stack's (candidate, fold) estimators, then score each (a worker).

    Returns one result dict per estimator, as scikit-learn's ``_fit_and_score``
    returns it.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        live = [i for i, d in enumerate(datasets) if d is not None]
        failures, fit_times = fit_datasets(
            [_final(estimators[i])[0] for i in live],
            [datasets[i] for i in live],
            errors="raise" if error_score == "raise" else "return",
            interrupt="raise",
            verbose=verbose,
            max_stack_bytes=max_stack_bytes,
            label=label,
        )
    finally:
        torch.set_num_threads(previous)
    failure = dict(zip(live, failures, strict=True))
    times = dict(zip(live, fit_times, strict=True))
    results = []
    for i, est in enumerate(estimators):
        split = datasets[i][3] if datasets[i] is not None else pre_errors[i][0]
        train, test = splits[split]
        fit_time = times.get(i, 0.0) + pre_seconds[i]
        exc = failure.get(i, pre_errors.get(i, (None, None))[1])
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
                X_train, y_train = _safe_indexing(X, train), _safe_indexing(y, train)
                sp = _check_method_params(X, params=score_params, indices=train)
                train_scores = _score(est, X_train, y_train, scorer, sp, error_score)
        result["test_scores"] = test_scores
        if return_train_score:
            result["train_scores"] = train_scores
        result["n_test_samples"] = _num_samples(test)
        result["fit_time"] = fit_time
        result["score_time"] = score_time
        results.append(result)
    return results


def _single(estimator, X, y, **kwargs):
    """One ordinary fit, as scikit-learn runs it (in a list, like a stack's results)."""
    return [_fit_and_score(estimator, X, y, **kwargs)]


# --------------------------------------------------------------- the shared base


class _LockstepSearch(BaseSearchCV):
    """The ``fit`` of the lockstep searches: BaseSearchCV's, with stacked fits.

    Subclasses put their scikit-learn twin first among their bases (so that its
    ``_run_search``, ``fit`` and constructor come first) and this class second.
    """

    def _lockstep_evaluate(self, parallel, base, X, y, candidates, splits, scorers,
                           routed):  # fmt: skip
        """Every (candidate, split) result, in scikit-learn's order."""
        tasks = [(c, s) for c in range(len(candidates)) for s in range(len(splits))]
        fit_params = routed.estimator.fit
        score_kwargs = dict(
            scorer=scorers,
            score_params=routed.scorer.score,
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
        # Each worker trains with one torch thread when there are several workers
        # (the small networks of a stack run fastest that way, and the workers do not
        # compete for cores); one worker keeps the caller's setting.
        threads = 1 if effective_n_jobs(self.n_jobs) != 1 else None
        units = []
        for g, members in enumerate(groups.values(), 1):
            # Fold-major: the models of one stack mostly share their fold's rows.
            members.sort(key=lambda m: (tasks[m[0]][1], tasks[m[0]][0]))
            indices = [i for i, _ in members]
            estimators = [est for _, est in members]
            folds = [tasks[i][1] for i in indices]
            if self.verbose > 0:
                print(
                    f"[lockstep] group {g}/{len(groups)}: {len(indices)} fits "
                    f"({len({tasks[i][0] for i in indices})} candidates x "
                    f"{len(set(folds))} folds)"
                )
            datasets, errors, seconds = _prepare_group(
                estimators, folds, X, y, splits, fit_params, self.error_score
            )
            per_fold = {s: folds.count(s) for s in set(folds)}
            # The engine's one grouping cuts the group into stacks (fits whose
            # earlier Pipeline steps failed go together, to report their error).
            live = [k for k, d in enumerate(datasets) if d is not None]
            chunks = [
                [live[j] for j in unit]
                for unit in stack_units(
                    [_final(estimators[k])[0] for k in live],
                    [datasets[k] for k in live],
                    max_stack_bytes=self.max_stack_bytes,
                )
            ]
            dead = [k for k, d in enumerate(datasets) if d is None]
            chunks += [dead] if dead else []
            for j, chunk in enumerate(chunks, 1):
                label = f"group {g}/{len(groups)}" + (
                    f" part {j}/{len(chunks)} " if len(chunks) > 1 else " "
                )
                part = [datasets[k] for k in chunk]
                job = delayed(_run_stack)(
                    [estimators[k] for k in chunk],
                    part,
                    {
                        n: (folds[k], errors[folds[k]])
                        for n, k in enumerate(chunk)
                        if folds[k] in errors
                    },
                    [seconds.get(folds[k], 0.0) / per_fold[folds[k]] for k in chunk],
                    X,
                    y,
                    splits,
                    verbose=self.verbose,
                    max_stack_bytes=self.max_stack_bytes,
                    label=label,
                    threads=threads,
                    **score_kwargs,
                )
                cost = _unit_cost(estimators[chunk[0]], part)
                units.append((cost, [indices[k] for k in chunk], job))
        # The longest stacks first, so that the workers end together.
        units.sort(key=lambda u: -u[0])
        for i in alone:
            c, s = tasks[i]
            train, test = splits[s]
            job = delayed(_single)(
                clone(base),
                X,
                y,
                train=train,
                test=test,
                parameters=candidates[c],
                fit_params=fit_params,
                verbose=self.verbose,
                return_n_test_samples=True,
                return_times=True,
                split_progress=(s, len(splits)),
                candidate_progress=(c, len(candidates)),
                **score_kwargs,
            )
            units.append((0, [i], job))
        outputs = parallel(job for _, _, job in units)
        out = [None] * len(tasks)
        for (_, indices, _), results in zip(units, outputs, strict=True):
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
            the scikit-learn search.

        Returns
        -------
        self : object
            The fitted search.
        """
        # The steps of BaseSearchCV.fit (scikit-learn 1.9), in its order.
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        sample_weight = params.get("sample_weight")
        metadata = None if sample_weight is None else {"sample_weight": sample_weight}
        root_ctx = None
        if hasattr(self, "_init_callback_context"):
            root_ctx = self._init_callback_context(
                max_subtasks=1 + (self.refit is not False)
            ).call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
        self._checked_cv_orig = check_cv(
            self.cv, y, classifier=is_classifier(self.estimator)
        )
        check_input = getattr(self, "_check_input_parameters", None)
        if check_input is not None:  # not in every older BaseSearchCV
            check_input(X=X, y=y, split_params=routed.splitter.split)
        self.n_splits_ = self._checked_cv_orig.get_n_splits(
            X, y, **routed.splitter.split
        )
        base = clone(self.estimator)
        parallel = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)
        all_candidates, all_out = [], []
        all_more_results = defaultdict(list)
        results = {}

        def evaluate_candidates(
            candidate_params, cv=None, more_results=None, callback_ctx=None
        ):
            # scikit-learn's callback, but the fits of each call are stacked. The
            # callbacks context is not passed to the fits: scikit-learn's callbacks
            # see the search begin and end, not each fit.
            nonlocal results
            cv = cv or self._checked_cv_orig
            candidate_params = list(candidate_params)
            splits = list(cv.split(X, y, **routed.splitter.split))
            if len(splits) != self.n_splits_:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {self.n_splits_} splits, got {len(splits)}"
                )
            if self.verbose > 0:
                print(
                    f"Fitting {self.n_splits_} folds for each of "
                    f"{len(candidate_params)} candidates, totalling "
                    f"{self.n_splits_ * len(candidate_params)} fits"
                )
            out = self._lockstep_evaluate(
                parallel, base, X, y, candidate_params, splits, scorers, routed
            )
            if len(out) < 1:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no "
                    "candidates?"
                )
            _warn_or_raise_about_fit_failures(out, self.error_score)
            if callable(self.scoring):
                _insert_error_scores(out, self.error_score)
            all_candidates.extend(candidate_params)
            all_out.extend(out)
            for key, value in (more_results or {}).items():
                all_more_results[key].extend(value)
            results = self._format_results(
                all_candidates, self.n_splits_, all_out, all_more_results
            )
            return results

        with parallel:
            if "callback_ctx" in inspect.signature(self._run_search).parameters:
                self._run_search(evaluate_candidates, callback_ctx=root_ctx)
            else:
                self._run_search(evaluate_candidates)
            if not all_out:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no "
                    "candidates?"
                )
            self.multimetric_ = isinstance(all_out[0]["test_scores"], dict)
            if callable(self.scoring) and self.multimetric_:
                self._check_refit_for_multimetric(all_out[0]["test_scores"])
                refit_metric = self.refit
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
        if root_ctx is not None:
            root_ctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return self


_COMMON_DOC = """
    The search is scikit-learn's {twin}: the same constructor (plus
    ``max_stack_bytes``), candidates, splits, scorers, error handling,
    ``cv_results_`` (the same keys), best candidate and refit. Only the fits differ:
    the (candidate, fold) fits of a :class:`~skdynloss.DynamicalLossClassifier` (or
    of a :class:`~sklearn.pipeline.Pipeline` that ends in one) that differ only in
    what can be stacked (``amplitude``, ``period``, ``shape``, ``order``,
    ``static_last_period``, a named ``loss``, ``random_state``, and the fold's rows)
    train together as stacked networks, and each model computes what its own fit
    would compute (same initialisation, batches and clock), so that the scores are
    {twin}'s. Fits that differ in anything else (``lr``, the optimizer, the widths,
    ``batch_size``, ``max_epochs``, the earlier steps' parameters) form separate
    groups. Each group is cut into stacks of at most ``max_stack_bytes``, and the
    stacks are the units of work: joblib runs them over ``n_jobs`` workers (each
    with one torch thread when there are several), and
    ``joblib.parallel_config(backend="dask")`` spreads them over a dask cluster.
    The stacks are the same whatever ``n_jobs``, and so are the results. What
    cannot be stacked (a CNN or custom module, a callable loss, user callbacks,
    ``sharpness_every``, ``early_stopping``, fit parameters other than
    ``sample_weight``, estimators as parameter values) is fitted by scikit-learn's
    ``_fit_and_score``, as {twin} fits it.
"""

_PARAMS_DOC = """
    max_stack_bytes : int, default=None
        Most memory one stack may use (estimated per model by
        :func:`skdynloss._lockstep.model_bytes`: parameters, gradients, optimizer
        moments and the divergence guard's copies, 6 numbers per parameter, plus
        one batch's activations). None is
        :func:`skdynloss._lockstep.default_max_stack_bytes`: on a CPU one core's
        share of the last-level cache (the stack size measured fastest per model and
        step), on CUDA a quarter of the free memory.
    {others}
        As for {twin}. ``n_jobs`` runs the stacks (and the fits that are not
        stacked) in parallel, and ``verbose >= 1`` also prints a line per group and
        per stack and shows a progress bar over each stack's epochs.

    Attributes
    ----------
    {attributes}
        As for {twin}. ``mean_fit_time`` of a stacked fit is its share of its
        stack's time (the stack's time divided by its models), plus its own
        preparation and record.
"""

_ATTRIBUTES = (
    "cv_results_, best_estimator_, best_score_, best_params_, best_index_, scorer_, "
    "n_splits_, refit_time_, multimetric_"
)
_HALVING_ATTRIBUTES = (
    ", n_resources_, n_candidates_, n_remaining_candidates_, max_resources_, "
    "min_resources_, n_iterations_, n_possible_iterations_, n_required_iterations_"
)


def _doc(summary, twin, example):
    others = ", ".join(list(inspect.signature(twin).parameters)[1:])
    attributes = _ATTRIBUTES + (
        _HALVING_ATTRIBUTES if "Halving" in twin.__name__ else ""
    )
    name = twin.__name__
    return (
        f"{summary}\n{_COMMON_DOC.format(twin=name)}\n    Parameters\n    ----------"
        f"\n    estimator : DynamicalLossClassifier or Pipeline\n        The estimator, "
        f"or a Pipeline whose last step is one."
        f"{_PARAMS_DOC.format(twin=name, others=others, attributes=attributes)}\n"
        f"    See Also\n    --------\n    sklearn.model_selection.{name} : the search "
        f"this one reproduces.\n    skdynloss.fit_lockstep : the stacked fits, for any "
        f"list of estimators.\n\n    Examples\n    --------\n{example}"
    )


class LockstepGridSearchCV(GridSearchCV, _LockstepSearch):
    __doc__ = _doc(
        "GridSearchCV that trains a DynamicalLossClassifier's candidates and folds at "
        "once.",
        GridSearchCV,
        """\
    >>> from skdynloss import DynamicalLossClassifier, LockstepGridSearchCV, make_spiral
    >>> X, y = make_spiral(30)
    >>> clf = DynamicalLossClassifier(hidden_layer_sizes=(8,), max_epochs=10,
    ...                               random_state=0)
    >>> search = LockstepGridSearchCV(clf, {"amplitude": [1, 5], "period": [1, 2]},
    ...                               cv=3).fit(X, y)
    >>> len(search.cv_results_["params"])
    4
""",
    )

    _parameter_constraints: dict = {
        **GridSearchCV._parameter_constraints,
        **_STACK_CONSTRAINT,
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


class LockstepRandomizedSearchCV(RandomizedSearchCV, _LockstepSearch):
    __doc__ = _doc(
        "RandomizedSearchCV that trains a DynamicalLossClassifier's candidates and "
        "folds at once.",
        RandomizedSearchCV,
        """\
    >>> from scipy.stats import loguniform, uniform
    >>> from skdynloss import (DynamicalLossClassifier, LockstepRandomizedSearchCV,
    ...                        make_spiral)
    >>> X, y = make_spiral(30)
    >>> clf = DynamicalLossClassifier(hidden_layer_sizes=(8,), max_epochs=10,
    ...                               random_state=0)
    >>> space = {"amplitude": loguniform(1, 50), "period": uniform(1, 4)}
    >>> search = LockstepRandomizedSearchCV(clf, space, n_iter=6, cv=3,
    ...                                     random_state=0).fit(X, y)
    >>> len(search.cv_results_["params"])
    6
""",
    )

    _parameter_constraints: dict = {
        **RandomizedSearchCV._parameter_constraints,
        **_STACK_CONSTRAINT,
    }

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_iter=10,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        random_state=None,
        error_score=np.nan,
        return_train_score=False,
        max_stack_bytes=None,
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.max_stack_bytes = max_stack_bytes


class LockstepHalvingGridSearchCV(HalvingGridSearchCV, _LockstepSearch):
    __doc__ = _doc(
        "HalvingGridSearchCV that trains each round's candidates and folds at once.",
        HalvingGridSearchCV,
        """\
    >>> from skdynloss import (DynamicalLossClassifier, LockstepHalvingGridSearchCV,
    ...                        make_spiral)
    >>> X, y = make_spiral(30)
    >>> clf = DynamicalLossClassifier(hidden_layer_sizes=(8,), random_state=0)
    >>> search = LockstepHalvingGridSearchCV(
    ...     clf, {"amplitude": [1, 5, 20], "period": [0.5, 1, 2]},
    ...     resource="max_epochs", min_resources=3, max_resources=27, cv=3,
    ... ).fit(X, y)
    >>> search.n_resources_
    [3, 9, 27]
""",
    )

    _parameter_constraints: dict = {
        **HalvingGridSearchCV._parameter_constraints,
        **_STACK_CONSTRAINT,
    }

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="exhaust",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        max_stack_bytes=None,
    ):
        super().__init__(
            estimator,
            param_grid,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.max_stack_bytes = max_stack_bytes


class LockstepHalvingRandomSearchCV(HalvingRandomSearchCV, _LockstepSearch):
    __doc__ = _doc(
        "HalvingRandomSearchCV that trains each round's candidates and folds at once.",
        HalvingRandomSearchCV,
        """\
    >>> from scipy.stats import loguniform
    >>> from skdynloss import (DynamicalLossClassifier,
    ...                        LockstepHalvingRandomSearchCV, make_spiral)
    >>> X, y = make_spiral(30)
    >>> clf = DynamicalLossClassifier(hidden_layer_sizes=(8,), random_state=0)
    >>> search = LockstepHalvingRandomSearchCV(
    ...     clf, {"amplitude": loguniform(1, 50)}, n_candidates=9,
    ...     resource="max_epochs", min_resources=3, max_resources=27, cv=3,
    ...     random_state=0,
    ... ).fit(X, y)
    >>> search.n_candidates_
    [9, 3, 1]
""",
    )

    _parameter_constraints: dict = {
        **HalvingRandomSearchCV._parameter_constraints,
        **_STACK_CONSTRAINT,
    }

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_candidates="exhaust",
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="smallest",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        max_stack_bytes=None,
    ):
        super().__init__(
            estimator,
            param_distributions,
            n_candidates=n_candidates,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.max_stack_bytes = max_stack_bytes
