"""Intra-class FD / KID: closed-form values, label sensitivity the marginal metric lacks, clear errors."""
import numpy as np
import pytest

from domain_guidance.pipelines.metrics import frechet_distance_from_features
from domain_guidance.pipelines.metrics.intra_class import intra_class, intra_class_fd, intra_class_kid


def _two_classes(rng: np.random.Generator, n: int = 60, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(2n, d) features of two well separated classes and their labels."""
    a = rng.normal(0.0, 1.0, (n, d))
    b = rng.normal(5.0, 1.0, (n, d))
    return np.concatenate([a, b]), np.repeat([0, 1], n)


def test_intra_fd_of_shifted_classes_is_the_unweighted_mean_squared_shift() -> None:
    # samples of class k = reference of class k + d_k: equal covariances, so FD_k = |d_k|^2 exactly;
    # class 1 has 3x the samples of class 0 (repeated rows) and must still count once (unweighted mean)
    rng = np.random.default_rng(0)
    ref, lab = _two_classes(rng)
    d0, d1 = np.full(8, 0.5), np.zeros(8)
    d1[0] = 3.0
    f0 = ref[lab == 0] + d0
    f1 = np.concatenate([ref[lab == 1] + d1] * 3)
    feats, labels = np.concatenate([f0, f1]), np.repeat([0, 1], [len(f0), len(f1)])
    out = intra_class(lambda r, f: frechet_distance_from_features(f, r, method="svd"), ref, lab, feats, labels)
    assert out["per_class"][0] == pytest.approx(8 * 0.25, rel=1e-6)  # |d0|^2 = 2.0
    # repeating rows changes the ddof-1 covariance by 60/59 vs 180/179: a trace term of about 2e-4 here
    assert out["per_class"][1] == pytest.approx(9.0, rel=1e-4)
    assert out["counts"] == {0: (60, 60), 1: (60, 180)}
    assert intra_class_fd(ref, lab, feats, labels) == pytest.approx((2.0 + 9.0) / 2, rel=1e-4)  # not (2 + 3*9) / 4


def test_swapped_labels_leave_the_marginal_metric_at_zero_but_not_the_intra_class_one() -> None:
    rng = np.random.default_rng(1)
    ref, lab = _two_classes(rng)
    swapped = 1 - lab  # the same features, every sample asked for the other class
    assert frechet_distance_from_features(ref, ref, method="svd") == pytest.approx(0.0, abs=1e-6)
    assert intra_class_fd(ref, lab, ref, lab) == pytest.approx(0.0, abs=1e-6)
    assert intra_class_fd(ref, lab, ref, swapped) > 150.0  # |mean shift|^2 = 8 * 25 = 200 (+ sampling noise)
    kid_right = intra_class_kid(ref, lab, rng.normal(0, 1, (60, 8)) + np.repeat([[0.0], [5.0]], 30, 0), lab[::2])
    kid_wrong = intra_class_kid(ref, lab, ref, swapped)
    assert abs(kid_right) < 0.05 * kid_wrong


def test_intra_kid_is_the_mean_of_per_class_kid() -> None:
    from domain_guidance.pipelines.metrics import kid

    rng = np.random.default_rng(2)
    ref, lab = _two_classes(rng, n=40)
    feats = ref + rng.normal(0, 0.3, ref.shape)
    per = [kid(ref[lab == k], feats[lab == k], n_subsets=20, seed=3)["kid_mean"] for k in (0, 1)]
    assert intra_class_kid(ref, lab, feats, lab, n_subsets=20, seed=3) == pytest.approx(np.mean(per), rel=1e-12)


def test_a_class_without_samples_is_named() -> None:
    rng = np.random.default_rng(3)
    ref, lab = _two_classes(rng, n=10)
    with pytest.raises(ValueError, match="class 1 has 10 reference and 0 sample"):
        intra_class_fd(ref, lab, ref[lab == 0], lab[lab == 0])
    with pytest.raises(ValueError, match="differ in length"):
        intra_class_fd(ref, lab, ref, lab[:5])
