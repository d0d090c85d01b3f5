"""The three front doors to training default alike (dsmlr.defaults)."""

from __future__ import annotations

import dataclasses

import numpy as np

from dsmlr import DSMLRClassifier
from dsmlr.cli import build_parser
from dsmlr.engines.base import EngineConfig

# dsmlr train's options and the estimator parameters they set.
OPTION_PARAMS = {"lam": "lam", "epochs": "max_epochs", "tol": "tol", "engine": "engine",
                 "optimizer": "optimizer", "eta": "eta", "dtype": "dtype",
                 "eval_every": "eval_every", "checkpoint_every": "checkpoint_every"}  # fmt: skip


def test_the_engines_default_as_the_estimator_does():
    """EngineConfig() and the estimator's defaults resolved for a problem are one config."""
    made = DSMLRClassifier()._engine_config(n_samples=10, n_features=3, n_classes=4, seed=0)
    bare = EngineConfig(n_samples=10, n_features=3, n_classes=4)
    differ = {
        f.name: (getattr(made, f.name), getattr(bare, f.name))
        for f in dataclasses.fields(EngineConfig)
        if getattr(made, f.name) != getattr(bare, f.name)
    }
    assert differ == {}
    assert bare.dtype is np.float32


def test_dsmlr_train_defaults_as_the_estimator_does():
    args = build_parser().parse_args(["train", "data.svm"])
    params = DSMLRClassifier().get_params()
    for option, param in OPTION_PARAMS.items():
        assert getattr(args, option) == params[param], option


def test_settings_hold_every_parameter_with_its_default():
    """dsmlr.settings.Settings resolves the estimator's parameters for fit and fit_sharded:
    one field each, with the signature's default."""
    from dsmlr.settings import Settings

    bare = Settings()
    params = DSMLRClassifier().get_params()
    assert {f.name for f in dataclasses.fields(Settings)} == set(params)
    for name, value in params.items():
        assert getattr(bare, name) == value, name
