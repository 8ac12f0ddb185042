"""LightGBM and XGBoost families (in the ``train`` extra)."""

from __future__ import annotations

from mlservice.models.base import ModelSpec, register

__all__ = ["LIGHTGBM", "XGBOOST"]

_COMMON_BOUNDS = {
    "n_estimators": (1.0, True),
    "learning_rate": (0.0, False),
    "subsample": (0.0, False),
    "colsample_bytree": (0.0, False),
    "reg_alpha": (0.0, True),
    "reg_lambda": (0.0, True),
}

LIGHTGBM = register(
    ModelSpec(
        name="lightgbm",
        classes={
            "classification": "lightgbm.LGBMClassifier",
            "regression": "lightgbm.LGBMRegressor",
            "time_series": "lightgbm.LGBMRegressor",
            "ranking": "lightgbm.LGBMRanker",
        },
        defaults={"verbose": -1, "n_jobs": 1},
        lower_bounds={**_COMMON_BOUNDS, "num_leaves": (2.0, True), "min_child_samples": (0, True)},
        search_space={
            "n_estimators": {"int": [50, 600]},
            "learning_rate": {"float": [0.01, 0.3], "log": True},
            "num_leaves": {"int": [8, 128], "log": True},
            "min_child_samples": {"int": [5, 50]},
        },
    )
)

XGBOOST = register(
    ModelSpec(
        name="xgboost",
        classes={
            "classification": "xgboost.XGBClassifier",
            "regression": "xgboost.XGBRegressor",
            "time_series": "xgboost.XGBRegressor",
            "ranking": "xgboost.XGBRanker",
        },
        defaults={"n_jobs": 1, "tree_method": "hist"},
        lower_bounds={**_COMMON_BOUNDS, "max_depth": (0.0, True)},
        search_space={
            "n_estimators": {"int": [50, 600]},
            "learning_rate": {"float": [0.01, 0.3], "log": True},
            "max_depth": {"int": [2, 10]},
        },
    )
)
