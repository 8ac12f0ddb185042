"""scikit-learn estimator families: linear, random forest, histogram gradient boosting."""

from __future__ import annotations

from mlservice.models.base import ModelSpec, register

__all__ = ["HIST_GRADIENT_BOOSTING", "LINEAR", "RANDOM_FOREST", "RIDGE"]

LINEAR = register(
    ModelSpec(
        name="logistic_regression",
        classes={"classification": "sklearn.linear_model.LogisticRegression"},
        defaults={"max_iter": 2000},
        search_space={"C": {"float": [1e-3, 100.0], "log": True}},
    )
)

RIDGE = register(
    ModelSpec(
        name="ridge",
        classes={
            "regression": "sklearn.linear_model.Ridge",
            "time_series": "sklearn.linear_model.Ridge",
            "classification": "sklearn.linear_model.RidgeClassifier",
        },
        search_space={"alpha": {"float": [1e-3, 100.0], "log": True}},
    )
)

RANDOM_FOREST = register(
    ModelSpec(
        name="random_forest",
        classes={
            "classification": "sklearn.ensemble.RandomForestClassifier",
            "regression": "sklearn.ensemble.RandomForestRegressor",
            "time_series": "sklearn.ensemble.RandomForestRegressor",
        },
        defaults={"n_estimators": 200},
        search_space={
            "n_estimators": {"int": [50, 500]},
            "max_depth": {"int": [2, 32], "log": True},
            "min_samples_leaf": {"int": [1, 20]},
        },
    )
)

HIST_GRADIENT_BOOSTING = register(
    ModelSpec(
        name="hist_gradient_boosting",
        classes={
            "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
            "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
            "time_series": "sklearn.ensemble.HistGradientBoostingRegressor",
        },
        aliases={"n_estimators": "max_iter"},
        search_space={
            "max_iter": {"int": [50, 500]},
            "learning_rate": {"float": [0.01, 0.3], "log": True},
            "max_leaf_nodes": {"int": [8, 64]},
        },
    )
)
