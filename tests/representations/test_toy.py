"""A representation registered in this file alone (one module's worth of code, nothing edited elsewhere in hms)
trains, predicts offline from an exported folder and blends with a built-in one, through the library calls the
commands make. Everything the run reads and writes lives under `paths.root`; the working directory stays empty."""

from pathlib import Path

import numpy as np
import pytest

from hms.features.files import WindowTiles
from hms.representations import Part, Representation, register

pytestmark = pytest.mark.slow  # trains two tiny runs in this process


# --- the toy representation: one module's worth of code -----------------------------------------------------------

class KaggleBandSequence(WindowTiles):
    """Kaggle's spectrogram as a sequence: its tiles at 8 x 32 (8 frequency bands, 32 steps), read as 32 steps of
    8 bands x 4 regions."""

    def __init__(self, files, file_ids, offsets):
        super().__init__(files, file_ids, offsets, (8, 32))
        self.shape, self.ndim = (len(self.file_ids), 32, 32), 3

    def __getitem__(self, rows):
        tiles = super().__getitem__(rows)  # (..., 8 bands, 32 steps, 4 regions)
        steps = np.moveaxis(tiles, -2, -3)  # (..., 32 steps, 8 bands, 4 regions)
        return np.ascontiguousarray(steps.reshape(*steps.shape[:-2], 32))


@register
class KaggleBands(Representation):
    """The Kaggle spectrogram's band sequence for the 1D backbones."""

    name = "toy_kaggle_bands"
    family = "signal"
    augmentations = ("time_flip", "mixup")

    def parts(self):
        return [Part(self.name, "kaggle", make=KaggleBandSequence)]

    def augmentation(self, seed=None):
        from hms.augment import FlipAugment

        return FlipAugment(self.cfg.augmentation, ("signal",), seed)

    def views(self):
        from hms.augment import flip_views

        return flip_views(self.cfg.augmentation, ("signal",))

    def baseline_features(self, sources, rows):
        x = sources[0][np.asarray(rows)]
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)

    def build_model(self, weights=None, recipe=None):
        from hms.models import build_signal_model

        return build_signal_model(self.cfg.backbone.name, 32, 32, weights=weights, dropout=self.cfg.backbone.dropout,
                                  bn_momentum=(recipe or {}).get("bn_momentum"))

    def picture(self, model, x):
        return np.repeat(np.asarray(x[0])[..., None], 3, axis=-1)


# --- the test ---------------------------------------------------------------------------------------------------------

def test_a_representation_registered_in_a_test_file_trains_predicts_offline_and_blends(synthetic_root, tmp_path, monkeypatch):
    from hms.config import compose
    from hms.cv import run_cv
    from hms.ensembling import run_ensemble
    from hms.inference import export, load_bundle, predict
    from hms.tracking import client_for

    store = tmp_path / "store"
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    common = ["data=kaggle", f"data.root={synthetic_root}", f"paths.root={store}", "data.workers=1", "cv.folds=2",
              "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null", "trainer.epochs=2",
              "schedule.steps=[[0,1.0e-3],[0.5,3.0e-4]]", "backbone=eeg1d_cnn"]
    toy = compose([*common, "input.mix=toy_kaggle_bands", "augmentation=flip"])
    signal = compose([*common, "input=eeg1d", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8"])
    run_cv(toy)
    run_cv(signal)
    client = client_for(toy.tracking)
    assert Path(client.tracking_uri.removeprefix("sqlite:///")).resolve() == (store / "mlflow.db").resolve()
    experiment = client.get_experiment_by_name("hms")
    runs = {r.data.params["input.mix"]: r for r in client.search_runs([experiment.experiment_id], "tags.`hms.run_type` = 'cv'")}
    assert set(runs) == {"toy_kaggle_bands", "eeg1d"}
    run = runs["toy_kaggle_bands"]
    assert run.info.status == "FINISHED" and {"cv_kl", "prior_kl", "baseline_kl"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/input_montage.png" in artifacts  # the toy's own picture

    # Offline: the exported folder predicts the test set with no store around.
    members = {}
    for name, r in runs.items():
        folder = export(client, tmp_path / f"export-{name}", run_id=r.info.run_id)
        members[name] = predict(load_bundle(folder), toy).set_index("eeg_id")
    toy_sub = members["toy_kaggle_bands"]
    assert len(toy_sub) == 8 and np.allclose(toy_sub.sum(axis=1), 1) and np.isfinite(toy_sub.to_numpy()).all()
    assert toy_sub.to_numpy().std(axis=0).max() > 1e-4  # the model's own predictions, not one constant row

    # Blended with the built-in 1D run: the ensemble's submission is its members' submissions, weighted.
    result = run_ensemble(toy.tracking.store, run_ids=[r.info.run_id for r in runs.values()], trials=10)
    folder = export(client, tmp_path / "export-ensemble", ensemble_id=result.run_id)
    bundle = load_bundle(folder)
    blended = predict(bundle, toy).set_index("eeg_id")
    names = {r.info.run_id: name for name, r in runs.items()}
    weights = {names[m["run_id"]]: m["weight"] for m in bundle["members"]}
    expected = sum(w * members[n].loc[blended.index].to_numpy() for n, w in weights.items())
    expected = expected * np.exp(bundle.get("bias", np.zeros(6)))  # a learned stack's per-class bias, if it chose one
    np.testing.assert_allclose(blended.to_numpy(), expected / expected.sum(axis=1, keepdims=True), atol=1e-6)
    assert list(here.iterdir()) == []  # nothing written where the commands ran: every place is under paths.root
