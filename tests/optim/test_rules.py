"""The NumPy referee against steps computed by hand from each published rule (no framework)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from xgrad import InputError
from xgrad.optim import SGD, Adam, AdamW, RMSprop, Rule

W = {"w": np.array([1.0, -2.0])}
G1 = {"w": np.array([0.5, -0.25])}
G2 = {"w": np.array([-0.1, 0.3])}


def steps(rule, grads, params=W):
    """The weights after each update."""
    p = {k: v.copy() for k, v in params.items()}
    state = rule.init(p)
    out = []
    for count, g in enumerate(grads):
        u, state = rule.update(g, p, state, count)
        p = {k: p[k] + u[k] for k in p}
        out.append(p["w"])
    return out


def test_sgd_plain():
    (w,) = steps(SGD(0.1), [G1])
    assert np.allclose(w, [1.0 - 0.05, -2.0 + 0.025], rtol=0, atol=1e-15)


def test_sgd_momentum_torch_form_first_step_is_undampened():
    # PyTorch: buf_1 = g_1 (no dampening), buf_2 = 0.9 buf_1 + 0.5 g_2; w -= lr buf
    w1, w2 = steps(SGD(0.1, momentum=0.9, dampening=0.5), [G1, G2])
    b1 = np.array([0.5, -0.25])
    b2 = 0.9 * b1 + 0.5 * np.array([-0.1, 0.3])
    assert np.allclose(w1, W["w"] - 0.1 * b1, rtol=0, atol=1e-15)
    assert np.allclose(w2, W["w"] - 0.1 * b1 - 0.1 * b2, rtol=0, atol=1e-15)


def test_sgd_nesterov_and_keras_velocity_agree_at_constant_lr():
    # Nesterov, step 1: g + 0.9 * buf = 1.9 g
    (w,) = steps(SGD(0.1, momentum=0.9, nesterov=True), [G1])
    assert np.allclose(w, W["w"] - 0.1 * 1.9 * G1["w"], rtol=0, atol=1e-15)
    torch_form = steps(SGD(0.1, momentum=0.9, nesterov=True), [G1, G2])
    keras_form = steps(SGD(0.1, momentum=0.9, nesterov=True, lr_in_velocity=True), [G1, G2])
    assert np.allclose(torch_form, keras_form, rtol=0, atol=1e-15)


def test_sgd_keras_velocity_differs_when_the_learning_rate_changes():
    def schedule(count):
        return 0.1 / (1 + count)

    torch_form = steps(SGD(schedule, momentum=0.9), [G1, G2])
    keras_form = steps(SGD(schedule, momentum=0.9, lr_in_velocity=True), [G1, G2])
    # step 2: PyTorch: w -= 0.05 * (0.9 g1 + g2); Keras: v = 0.9 * (-0.1 g1) - 0.05 g2
    g1, g2 = G1["w"], G2["w"]
    assert np.allclose(torch_form[1], W["w"] - 0.1 * g1 - 0.05 * (0.9 * g1 + g2), atol=1e-15)
    assert np.allclose(keras_form[1], W["w"] - 0.1 * g1 + (-0.09 * g1 - 0.05 * g2), atol=1e-15)


def test_adam_first_step_by_hand():
    # Algorithm 1: m_hat = g, v_hat = g^2, so the step is -lr * g / (|g| + eps)
    (w,) = steps(Adam(0.01, eps=1e-3), [G1])
    g = G1["w"]
    assert np.allclose(w, W["w"] - 0.01 * g / (np.abs(g) + 1e-3), rtol=0, atol=1e-15)


def test_adam_second_step_by_hand():
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-3
    g1, g2 = G1["w"], G2["w"]
    m = 0.9 * (0.1 * g1) + 0.1 * g2
    v = 0.999 * (0.001 * g1**2) + 0.001 * g2**2
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    want = W["w"] - lr * g1 / (np.abs(g1) + eps) - lr * m_hat / (np.sqrt(v_hat) + eps)
    assert np.allclose(steps(Adam(lr, eps=eps), [G1, G2])[1], want, rtol=0, atol=1e-14)


def test_adam_epsilon_hat_is_eps_over_sqrt_one_minus_b2_t():
    # Keras: lr * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps) at step 1
    g = G1["w"]
    (w,) = steps(Adam(0.01, eps=1e-3, epsilon_hat=True), [G1])
    alpha = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9)
    want = W["w"] - alpha * (0.1 * g) / (np.sqrt(0.001 * g**2) + 1e-3)
    assert np.allclose(w, want, rtol=0, atol=1e-15)
    # the same as Algorithm 1 with eps / sqrt(1 - b2)
    (paper,) = steps(Adam(0.01, eps=1e-3 / math.sqrt(1 - 0.999)), [G1])
    assert np.allclose(w, paper, rtol=0, atol=1e-14)


def test_adam_eps_root_is_inside_the_square_root():
    g = G1["w"]
    (w,) = steps(Adam(0.01, eps=0.0, eps_root=1e-2), [G1])
    assert np.allclose(w, W["w"] - 0.01 * g / np.sqrt(g**2 + 1e-2), rtol=0, atol=1e-15)


def test_adam_without_bias_correction():
    g = G1["w"]
    (w,) = steps(Adam(0.01, eps=1e-3, bias_correction=False), [G1])
    want = W["w"] - 0.01 * (0.1 * g) / (np.sqrt(0.001 * g**2) + 1e-3)
    assert np.allclose(w, want, rtol=0, atol=1e-15)


def test_adamw_decays_decoupled_and_adam_l2_through_the_gradient():
    g, w0 = G1["w"], W["w"]
    (w,) = steps(AdamW(0.01, eps=1e-3, weight_decay=0.1), [G1])
    assert np.allclose(w, w0 - 0.01 * 0.1 * w0 - 0.01 * g / (np.abs(g) + 1e-3), atol=1e-15)
    (w,) = steps(Adam(0.01, eps=1e-3, weight_decay=0.1, decoupled=False), [G1])
    g2 = g + 0.1 * w0
    assert np.allclose(w, w0 - 0.01 * g2 / (np.abs(g2) + 1e-3), atol=1e-15)
    (w,) = steps(AdamW(0.01, eps=1e-3, weight_decay=0.1, decay_scaled_by_lr=False), [G1])
    assert np.allclose(w, w0 - 0.1 * w0 - 0.01 * g / (np.abs(g) + 1e-3), atol=1e-15)


def test_amsgrad_keeps_the_largest_second_moment():
    big, small = {"w": np.array([1.0, 1.0])}, {"w": np.array([0.0, 0.0])}
    a = steps(Adam(0.01, amsgrad=True), [big, small])
    b = steps(Adam(0.01), [big, small])
    assert np.abs(a[1] - b[1]).max() > 1e-7
    v1 = 0.001
    v2 = max(v1, 0.999 * v1)
    m2 = 0.9 * 0.1
    want = a[0] - 0.01 * (m2 / (1 - 0.81)) / (np.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
    assert np.allclose(a[1], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("inside", [True, False], ids=["eps-in-root", "eps-outside"])
def test_rmsprop_first_step(inside):
    g = G1["w"]
    nu = 0.1 * g**2
    denom = np.sqrt(nu + 1e-3) if inside else np.sqrt(nu) + 1e-3
    (w,) = steps(RMSprop(0.01, decay=0.9, eps=1e-3, eps_in_sqrt=inside), [G1])
    assert np.allclose(w, W["w"] - 0.01 * g / denom, rtol=0, atol=1e-15)


def test_rmsprop_centered_and_momentum():
    g = G1["w"]
    var = 0.1 * g**2 - (0.1 * g) ** 2
    (w,) = steps(RMSprop(0.01, decay=0.9, eps=1e-3, centered=True), [G1])
    assert np.allclose(w, W["w"] - 0.01 * g / np.sqrt(var + 1e-3), rtol=0, atol=1e-15)
    keras_like = steps(RMSprop(0.01, momentum=0.5), [G1, G2])
    torch_like = steps(RMSprop(0.01, momentum=0.5, lr_in_momentum=False), [G1, G2])
    assert np.allclose(keras_like, torch_like, rtol=0, atol=1e-15)  # constant learning rate


def test_rmsprop_bias_correction_and_initial_scale():
    g = G1["w"]
    (w,) = steps(RMSprop(0.01, decay=0.9, eps=1e-3, bias_correction=True), [G1])
    assert np.allclose(w, W["w"] - 0.01 * g / np.sqrt(g**2 + 1e-3), rtol=0, atol=1e-15)
    (w,) = steps(RMSprop(0.01, decay=0.9, eps=0.0, initial_scale=1.0), [G1])
    assert np.allclose(w, W["w"] - 0.01 * g / np.sqrt(0.9 + 0.1 * g**2), rtol=0, atol=1e-15)


def test_clipping_value_norm_and_global_norm():
    two = {"a": np.array([3.0, 4.0]), "b": np.array([0.0, 12.0])}  # norms 5 and 12; global 13
    p = {k: np.zeros(2) for k in two}
    u, _ = SGD(1.0, clip_value=2.0).update(two, p, {}, 0)
    assert np.array_equal(u["a"], [-2.0, -2.0]) and np.array_equal(u["b"], [0.0, -2.0])
    u, _ = SGD(1.0, clip_norm=6.5).update(two, p, {}, 0)
    assert np.allclose(u["a"], [-3.0, -4.0]) and np.allclose(u["b"], [0.0, -6.5])
    u, _ = SGD(1.0, clip_global_norm=6.5).update(two, p, {}, 0)
    assert np.allclose(u["a"], [-1.5, -2.0]) and np.allclose(u["b"], [0.0, -6.0])


def test_a_schedule_is_called_with_the_updates_made_before():
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1

    steps(SGD(schedule), [G1, G2])
    assert seen == [0, 1]


def test_float32_constants_round_as_keras_does():
    rule = Adam(0.001, eps=1e-3, float32_constants=True)
    assert rule.lr(0) == float(np.float32(0.001)) != 0.001
    g = G1["w"]
    (w,) = steps(rule, [G1])
    c1 = 1 - float(np.float32(0.9))  # bias corrections from float32 betas
    c2 = 1 - float(np.float32(0.999))
    lr = float(np.float32(0.001))
    want = W["w"] - lr * ((0.1 * g) / c1) / (np.sqrt((1 - 0.999) * g**2 / c2) + 1e-3)
    assert np.allclose(w, want, rtol=0, atol=1e-15)


def test_float32_arrays_stay_float32():
    p = {"w": W["w"].astype(np.float32)}
    u, _ = Adam(1e-3).update({"w": G1["w"].astype(np.float32)}, p, Adam(1e-3).init(p), 0)
    assert u["w"].dtype == np.float32


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SGD(-0.1), "sgd learning_rate must be >= 0, got -0.1"),
        (lambda: Adam(1e-3, b2=1.5), "adam b2 must be in [0, 1], got 1.5"),
        (lambda: SGD(0.1, clip_norm=1.0, clip_value=1.0), "give at most one of clip_value, "),
        (lambda: SGD(0.1, dampening=0.5, lr_in_velocity=True), "Keras' velocity form has none"),
        (lambda: Adam(float("nan")), "adam learning_rate must be a finite number, got nan"),
        (lambda: Rule(0.1), "use SGD, Adam, AdamW or RMSprop"),
    ],
)
def test_bad_rules_say_what_is_wrong(make, message):
    with pytest.raises(InputError, match=re.escape(message)):
        make()


def test_describe_names_what_differs_from_a_plain_rule():
    assert AdamW(1e-3).describe() == (
        "adamw(learning_rate=0.001, weight_decay=0.0001, b1=0.9, b2=0.999, eps=1e-08)"
    )
    assert Adam(1e-3, eps=1e-7, epsilon_hat=True).to_dict()["epsilon_hat"] is True
