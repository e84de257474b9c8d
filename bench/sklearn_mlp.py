"""python -m bench --scenarios sklearn: fastnn.sklearn.MLPClassifier / MLPRegressor against
scikit-learn's own, with identical parameters (same seed, so the same initial weights and
minibatch order), for adam, sgd and lbfgs.

Data: scikit-learn's bundled digits, breast cancer and wine (classifier), diabetes
(regressor), make_classification(n_samples=50_000, n_features=100) and
make_regression(n_samples=50_000, n_features=100); standardized, 80/20 split.  Each fit runs
a fixed number of epochs (tol=0, n_iter_no_change=max_iter).  The two contenders take turns
(`repeats` fits each, starting contender alternating); the table shows the median wall time
and the ratio sklearn / fastnn (> 1: fastnn faster), and the test accuracy (R² for the
regressor) of both; a case whose scores differ by more than 0.01 is flagged.
"""
import statistics
import time
import warnings



def _cases(quick):
    from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_wine,
                                  make_classification, make_regression)
    small, large = (10, 3) if quick else (50, 10)
    yield "digits", "clf", load_digits(return_X_y=True), small
    yield "breast_cancer", "clf", load_breast_cancer(return_X_y=True), small
    yield "wine", "clf", load_wine(return_X_y=True), small
    yield ("classification-50k", "clf",
           make_classification(n_samples=50_000, n_features=100, n_informative=30,
                               n_classes=5, random_state=0), large)
    yield "diabetes", "reg", load_diabetes(return_X_y=True), small
    yield ("regression-50k", "reg",
           make_regression(n_samples=50_000, n_features=100, n_informative=30, noise=10.0,
                           random_state=0), large)


def _split(X, y, kind):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0,
                                          stratify=y if kind == "clf" else None)
    sc = StandardScaler().fit(Xtr)
    Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
    if kind == "reg":
        m, s = ytr.mean(), ytr.std()
        ytr, yte = (ytr - m) / s, (yte - m) / s
    return Xtr, Xte, ytr, yte


def run(threads=(1,), quick=False, repeats=None, log=print):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from threadpoolctl import threadpool_limits

    import fastnn
    from fastnn import sklearn as fsk
    repeats = repeats or (1 if quick else 3)
    rows = []
    for name, kind, (X, y), epochs in _cases(quick):
        Xtr, Xte, ytr, yte = _split(X, y, kind)
        for solver in ("adam", "sgd", "lbfgs"):
            params = dict(hidden_layer_sizes=(100,), solver=solver, max_iter=epochs,
                          tol=0.0, n_iter_no_change=epochs, random_state=0)
            if solver == "sgd":
                params["learning_rate_init"] = 0.01
            ests = {"sklearn": MLPClassifier if kind == "clf" else MLPRegressor,
                    "fastnn": fsk.MLPClassifier if kind == "clf" else fsk.MLPRegressor}
            for nt in threads:
                times = {k: [] for k in ests}
                score = {}
                with threadpool_limits(nt), warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    fastnn.set_num_threads(nt)
                    order = list(ests)
                    for r in range(repeats):
                        for k in (order if r % 2 == 0 else order[::-1]):
                            est = ests[k](**params)
                            t = time.perf_counter()
                            est.fit(Xtr, ytr)
                            times[k].append(time.perf_counter() - t)
                            score[k] = est.score(Xte, yte)
                med = {k: statistics.median(v) for k, v in times.items()}
                row = {"case": name, "kind": kind, "solver": solver, "threads": nt,
                       "epochs": epochs, "n_train": len(Xtr),
                       "sklearn_s": med["sklearn"], "fastnn_s": med["fastnn"],
                       "ratio": med["sklearn"] / med["fastnn"],
                       "sklearn_score": score["sklearn"], "fastnn_score": score["fastnn"],
                       "score_ok": abs(score["sklearn"] - score["fastnn"]) <= 0.01}
                rows.append(row)
                log(f"  {name:19s} {solver:5s} {nt}t  sklearn {med['sklearn']:8.3f} s  "
                    f"fastnn {med['fastnn']:8.3f} s  x{row['ratio']:5.2f}  "
                    f"{'acc' if kind == 'clf' else 'R2 '} {score['sklearn']:.4f} / "
                    f"{score['fastnn']:.4f}{'' if row['score_ok'] else '  SCORE DIFFERS'}")
    return {"key": "sklearn", "title": "fastnn.sklearn vs scikit-learn MLP fits",
            "repeats": repeats, "rows": rows, "ok": all(r["score_ok"] for r in rows)}
