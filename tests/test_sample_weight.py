"""`cv.sample_weight`: rows weighted by their vote count, capped, averaging 1; each row's KL in the loss multiplied by its
weight (the batch's loss is the mean of the weighted row losses). Checked on a hand-computed batch."""

import keras
import numpy as np
import pytest

from hms.batches import TileBatches
from hms.cv import vote_weights
from hms.metrics import kl_loss


def test_vote_weights_are_capped_votes_scaled_to_average_one():
    votes = np.array([1, 3, 20, 10, 6])
    capped = np.array([1, 3, 10, 10, 6])  # min(votes, 10)
    np.testing.assert_allclose(vote_weights(votes, 10), capped / 6.0, rtol=1e-6)  # their mean is 30 / 5 = 6
    assert vote_weights(votes, 0) is None  # off


def test_batches_carry_each_rows_weight_through_shuffling_and_mixup():
    n = 10
    source = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 4), np.float32)
    y = np.eye(6, dtype=np.float32)[np.arange(n) % 6]
    w = np.linspace(0.5, 2.0, n).astype(np.float32)
    batches = TileBatches([source], np.arange(n), y, batch_size=4, shuffle=True, seed=1, weights=w)
    for i in range(len(batches)):
        x, yb, wb = batches[i]
        rows = x[:, 0, 0, 0].astype(int)  # each tile holds its row number
        np.testing.assert_array_equal(wb, w[rows])
        np.testing.assert_array_equal(yb, y[rows])
    mixed = TileBatches([source], np.arange(n), y, batch_size=n, shuffle=False, seed=1, weights=w, mixup=0.4)
    x, yb, wb = mixed[0]
    # Inputs are mixed rows a*r + (1-a)*s; the weight is mixed with the same a: w_r + (x - r)/(s - r) * ... solved here:
    # the mixed input value v = a*r + (1-a)*s and the mixed weight a*w_r + (1-a)*w_s both lie on the line through
    # (r, w_r) and (s, w_s), and w is linear in r, so the weight is w's linear map applied to v.
    np.testing.assert_allclose(wb, np.interp(x[:, 0, 0, 0], np.arange(n), w), rtol=1e-5)
    assert not np.allclose(wb, w)  # mixing happened


def test_the_loss_weights_each_rows_kl_by_its_weight_on_a_hand_computed_batch():
    """One SGD step on a model whose output is softmax(b) from b = 0: the gradient of mean_i(w_i * KL_i) in b is
    mean_i(w_i * (q - y_i)) with q the uniform distribution, so b after the step is -lr times that."""
    n, lr = 4, 0.5
    source = np.zeros((n, 1, 1, 1), np.float32)
    y = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0], [0, 0, 0, 0, 0, 1]], np.float32)
    votes = np.array([1, 20, 5, 2])
    w = vote_weights(votes, 10)  # [1, 10, 5, 2] / 4.5
    inputs = keras.Input((1, 1, 1))
    logits = keras.layers.Dense(6, kernel_initializer="zeros", bias_initializer="zeros")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=kl_loss)
    batches = TileBatches([source], np.arange(n), y, batch_size=n, weights=w)
    model.fit(batches, epochs=1, verbose=0)
    q = np.full(6, 1 / 6)
    expected = -lr * np.mean(w[:, None] * (q - y), axis=0)
    np.testing.assert_allclose(model.layers[2].bias.numpy(), expected, atol=1e-6)
    unweighted = -lr * np.mean(q - y, axis=0)
    assert not np.allclose(expected, unweighted, atol=1e-3)  # the weights change the step


@pytest.mark.parametrize("bad", [np.ones(3), np.ones((4, 1))])
def test_weights_of_the_wrong_shape_are_refused(bad):
    with pytest.raises(ValueError, match="one per sample"):
        TileBatches([np.zeros((4, 1, 1, 1), np.float32)], np.arange(4), np.zeros((4, 6)), batch_size=2, weights=bad)
