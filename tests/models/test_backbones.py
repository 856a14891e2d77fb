import numpy as np
import pytest

from hms.models import TileMontage, build_model, create_backbone, list_backbones


def test_registry_lists_b0_to_b7_for_both_sources():
    expected = [f"efficientnet_b{i}" for i in range(8)]
    assert list_backbones("efficientnet") == expected and list_backbones("keras") == expected
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        create_backbone("resnet50", (64, 64, 3))


@pytest.mark.parametrize("source", ["efficientnet", "keras"])
def test_every_source_builds_and_runs(source):
    backbone = create_backbone("efficientnet_b0", (64, 64, 3), source=source)
    out = backbone(np.zeros((1, 64, 64, 3), np.float32))
    assert out.shape[0] == 1 and out.shape[-1] == 1280


def test_local_weights_file_is_loaded(tmp_path):
    first = create_backbone("efficientnet_b0", (64, 64, 3))
    path = tmp_path / "b0_offline.weights.h5"
    first.save_weights(path)
    second = create_backbone("efficientnet_b0", (64, 64, 3), weights=str(path))
    fresh = create_backbone("efficientnet_b0", (64, 64, 3))
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(first.get_weights(), fresh.get_weights()))
    with pytest.raises(FileNotFoundError, match="no_such.h5"):
        create_backbone("efficientnet_b0", (64, 64, 3), weights=str(tmp_path / "no_such.h5"))
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not weights")
    with pytest.raises(ValueError, match="garbage.weights.h5: cannot be loaded"):
        create_backbone("efficientnet_b0", (64, 64, 3), weights=str(garbage))


def test_montage_lays_tiles_out_as_the_seed():
    x = np.zeros((1, 2, 3, 8), np.float32)
    for channel in range(8):
        x[..., channel] = channel
    image = np.asarray(TileMontage(2)(x))[0]
    assert image.shape == (8, 6, 3)
    # Kaggle tiles (channels 0-3) stacked top to bottom on the left, EEG tiles (4-7) on the right.
    assert image[:, :3, 0].tolist() == [[0] * 3, [0] * 3, [1] * 3, [1] * 3, [2] * 3, [2] * 3, [3] * 3, [3] * 3]
    assert image[:, 3:, 0].tolist() == [[4] * 3, [4] * 3, [5] * 3, [5] * 3, [6] * 3, [6] * 3, [7] * 3, [7] * 3]
    assert (image[..., 0] == image[..., 2]).all()
    assert (image[..., 1] == image[..., 0]).all()  # without positions: the grey image in all three channels
    single = np.asarray(TileMontage(1)(x[..., :4]))[0]
    assert single.shape == (8, 3, 3)


def test_montage_positions_channel_is_each_tiles_frequency_row():
    """positions=True: channel 1 says which row (frequency) of its tile a pixel is, -1 at row 0 to +1 at the
    last row, the same in each of the 4 stacked tiles, both kinds and every time column; 0 and 2 stay the image."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    plain, placed = np.asarray(TileMontage(2)(x)), np.asarray(TileMontage(2, positions=True)(x))
    assert placed.shape == plain.shape == (2, 20, 6, 3)
    assert np.array_equal(placed[..., 0], plain[..., 0]) and np.array_equal(placed[..., 2], plain[..., 0])
    rows = [-1.0, -0.5, 0.0, 0.5, 1.0]  # 5 rows spread evenly over [-1, 1]
    assert np.allclose(placed[..., 1], np.array(rows * 4)[None, :, None])
    restored = TileMontage.from_config(TileMontage(2, positions=True).get_config())
    assert restored.positions is True


def test_model_outputs_float32_probabilities_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("efficientnet_b0", (16, 32), kinds=2)
        assert model.get_layer("montage").compute_dtype == "float16"
        out = model(np.random.default_rng(0).normal(size=(2, 16, 32, 8)).astype(np.float32))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == "float32" and out.shape == (2, 6)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("source", ["efficientnet", "keras"])
def test_drop_connect_scales_the_backbones_stochastic_depth(source):
    import keras

    def block_rates(model):
        backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        return [layer.rate for layer in backbone.layers if isinstance(layer, keras.layers.Dropout) and layer.name.endswith("drop")]

    default = block_rates(build_model("efficientnet_b0", (16, 32), 1, source=source))
    assert len(default) == 9 and default == sorted(default) and max(default) == pytest.approx(0.2 * 14 / 16)
    assert block_rates(build_model("efficientnet_b0", (16, 32), 1, source=source, drop_connect=0.1)) == pytest.approx(
        [r / 2 for r in default])
    model = build_model("efficientnet_b0", (16, 32), 1, source=source, drop_connect=0.0)
    assert block_rates(model) == [0.0] * 9
    x = np.random.default_rng(0).normal(size=(2, 16, 32, 4)).astype(np.float32)
    assert np.allclose(model(x, training=True).numpy().sum(axis=1), 1, atol=1e-5)


def test_auto_recipe_resolves_for_the_run():
    import keras

    from hms.config import compose
    from hms.models import resolved_recipe
    from hms.representations import model_for

    cfg = compose(["input.tile=[16,32]"])
    # 100 steps per epoch: the running statistics keep 1% of their start after one epoch (m ** 100 = 0.01).
    model = model_for(cfg, 2, steps_per_epoch=100)
    momenta = {layer.momentum for layer in model.get_layer("efficientnet-b0").layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert len(momenta) == 1 and momenta.pop() == pytest.approx(np.exp(np.log(0.01) / 100))
    assert resolved_recipe(cfg.backbone, 2000)["bn_momentum"] == 0.99  # long epochs keep the backbones' own
    assert resolved_recipe(cfg.backbone, 30)["bn_momentum"] == 0.9  # short ones average over 10 batches at least
    assert resolved_recipe(cfg.backbone, 2)["bn_momentum"] == 0.9
    assert resolved_recipe(cfg.backbone, None)["bn_momentum"] is None  # prediction only: the package's
    assert resolved_recipe(compose(["backbone.bn_momentum=0.95"]).backbone, 30)["bn_momentum"] == 0.95
    # Stochastic depth: off from scratch, the packages' 0.2 from pretrained weights, or as set.
    assert resolved_recipe(cfg.backbone, 30)["drop_connect"] == 0.0
    assert resolved_recipe(compose(["backbone.weights=imagenet"]).backbone, 30)["drop_connect"] == 0.2
    assert resolved_recipe(compose(["backbone.drop_connect=0.1"]).backbone, 30)["drop_connect"] == 0.1
    # The frequency-row channel: on from scratch, off with pretrained weights, or as set.
    assert resolved_recipe(cfg.backbone, 30)["positions"] is True
    assert model.get_layer("montage").positions is True
    assert resolved_recipe(compose(["backbone.weights=imagenet"]).backbone, 30)["positions"] is False
    assert resolved_recipe(compose(["backbone.positions=false"]).backbone, 30)["positions"] is False
    assert resolved_recipe(compose(["backbone.weights=imagenet", "backbone.positions=true"]).backbone, 30)["positions"] is True
    # A run logged before the key existed trained without the channel: its models are rebuilt without it.
    from omegaconf import OmegaConf

    older = OmegaConf.create({k: v for k, v in OmegaConf.to_container(compose().backbone).items()
                              if k not in ("positions", "zero_residual")})
    assert resolved_recipe(older, None)["positions"] is False and resolved_recipe(older, None)["zero_residual"] is False
    # Residual blocks starting as identities: on from scratch, off with pretrained weights, or as set.
    assert resolved_recipe(cfg.backbone, 30)["zero_residual"] is True
    assert resolved_recipe(compose(["backbone.weights=imagenet"]).backbone, 30)["zero_residual"] is False
    assert resolved_recipe(compose(["backbone.zero_residual=false"]).backbone, 30)["zero_residual"] is False


def test_zero_residual_starts_every_residual_block_as_the_identity():
    """EfficientNet-B0 has 16 MBConv blocks in stages of 1, 2, 2, 3, 3, 4, 1 (Tan and Le 2019, table 1); each stage's
    blocks after its first add their input back: 9 residual blocks. Each one's last batch-norm scale starts at 0,
    so the block outputs its input; every other scale keeps its initial 1."""
    import keras

    plain = build_model("efficientnet_b0", (16, 32), 2, weights=None, zero_residual=False).get_layer("efficientnet-b0")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="backbone.zero_residual")  # its blocks are found: no "nothing changed"
        zeroed = build_model("efficientnet_b0", (16, 32), 2, weights=None, zero_residual=True).get_layer("efficientnet-b0")
    residual = {f"block{stage}{'abcd'[k]}" for stage, blocks in enumerate((1, 2, 2, 3, 3, 4, 1), start=1) for k in range(1, blocks)}
    assert len(residual) == 9
    for net, zero in ((plain, set()), (zeroed, {f"{b}_project_bn" for b in residual})):
        for layer in net.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                expected = 0.0 if layer.name in zero else 1.0
                assert np.all(layer.gamma.numpy() == expected), layer.name
    # The block's output is its input: the residual branch adds exactly zero (inference mode).
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    probe = keras.Model(zeroed.inputs, [zeroed.get_layer("block2a_project_bn").output, zeroed.get_layer("block2b_add").output])
    before, after = probe(x, training=False)
    np.testing.assert_array_equal(before.numpy(), after.numpy())


def test_batch_norm_recalibration_sets_each_layers_statistics_to_the_mean_over_batches():
    """After recalibration a batch-norm layer's moving mean and variance are the average, over the batches, of the
    per-channel mean and (biased) variance of that layer's input, worked out here with numpy from a sub-model;
    the layers' momentum is left as it was."""
    import keras

    from hms.models import batch_norm_layers, recalibrate_batch_norm

    model = build_model("efficientnet_b0", (16, 32), 2, weights=None, bn_momentum=0.9, drop_connect=0.0)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 16, 32, 8)).astype(np.float32), None) for _ in range(3)]
    norms = batch_norm_layers(model)
    assert len(norms) > 40 and all(layer.momentum == 0.9 for layer in norms)
    backbone = model.get_layer("efficientnet-b0")
    probe = [layer for layer in norms if layer.name in ("stem_bn", "block3a_bn")]
    inputs = keras.Model(backbone.inputs, [layer.input for layer in probe])
    montage = model.get_layer("montage")
    before = [np.asarray(layer.moving_mean).copy() for layer in probe]
    assert recalibrate_batch_norm(model, batches) == 3
    after = [(np.asarray(layer.moving_mean).copy(), np.asarray(layer.moving_variance).copy()) for layer in probe]
    # Each layer's input as the recalibration saw it: training mode, so the layers before it normalise with
    # their batch's own statistics (this pass moves the running values again; they were read above).
    feeds = [inputs(montage(x), training=True) for x, _ in batches]
    for i, layer in enumerate(probe):
        values = [np.asarray(feed[i], np.float64) for feed in feeds]
        mean = np.mean([v.mean(axis=(0, 1, 2)) for v in values], axis=0)
        variance = np.mean([v.var(axis=(0, 1, 2)) for v in values], axis=0)
        assert np.allclose(after[i][0], mean, atol=1e-4), layer.name
        assert np.allclose(after[i][1], variance, rtol=1e-3, atol=1e-4), layer.name
        assert not np.allclose(before[i], mean, atol=1e-4)
    assert all(layer.momentum == 0.9 for layer in norms)


def test_zero_residual_on_a_backbone_without_such_blocks_warns_instead_of_doing_nothing_silently():
    import keras

    from hms.models import register

    @register("plain_test_net", "tests")
    def plain(input_shape, weights):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs), name="plain_test_net")

    try:
        with pytest.warns(UserWarning, match="plain_test_net has no residual blocks"):
            build_model("plain_test_net", (16, 32), 2, source="tests", weights=None, zero_residual=True)
    finally:
        from hms.models.backbones import _REGISTRY

        _REGISTRY.pop(("plain_test_net", "tests"))
    # EfficientNet's residual blocks are found, so it builds without that warning: see the test above.
