"""scikit-learn's own estimator checks, all of them, with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skdynloss import DynamicalLossClassifier


@parametrize_with_checks([DynamicalLossClassifier()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
