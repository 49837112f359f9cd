"""Weights saved and read back keep each layer's canonical order (a recurrent layer's too)."""

import numpy as np

import xgrad


def test_a_recurrent_layers_weights_come_back_in_param_names_order(tmp_path):
    spec = xgrad.MLP((4, 3), [xgrad.LSTM(5), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=0)
    path = tmp_path / "w.npz"
    xgrad.save_params(path, params)
    back = xgrad.load_params(path)
    assert list(back) == list(params)
    assert all(np.array_equal(back[k], params[k]) for k in params)
