import re

import pytest

from hms.config import ConfigError, compose

from .helpers import run_module


def test_default_config_has_every_group_and_contract_key():
    cfg = compose()
    for group in ("data", "backbone", "augmentation", "schedule", "input", "trainer", "cv", "tracking"):
        assert group in cfg
    assert cfg.data.name == "synthetic"
    assert list(compose(["data=kaggle", "data.root=/x"]).input.tile) == [128, 256]  # the notebook's tiles on real data


def test_synthetic_profile_sizes_the_default_for_a_cpu_and_overrides_win():
    cfg = compose()
    assert list(cfg.input.tile) == [16, 32] and cfg.trainer.epochs > 4
    cfg = compose(["input.tile=[128,256]", "trainer.epochs=3", "schedule=cosine"])
    assert list(cfg.input.tile) == [128, 256] and cfg.trainer.epochs == 3 and "steps" not in cfg.schedule
    for key in ("precision", "strategy", "epochs", "batch_size"):
        assert key in cfg.trainer
    assert "seed" in cfg and "resume" in cfg


def test_synthetic_and_kaggle_defaults_share_one_learning_recipe():
    synthetic, kaggle = compose(), compose(["data=kaggle", "data.root=/x"])
    for group in ("backbone", "schedule", "augmentation", "cv"):
        assert synthetic[group] == kaggle[group], group
    sizes = ("epochs", "batch_size")  # a profile may size a run to its machine, nothing else
    assert {k: v for k, v in synthetic.trainer.items() if k not in sizes} == {k: v for k, v in kaggle.trainer.items() if k not in sizes}
    assert synthetic.backbone.bn_momentum == "auto" and synthetic.backbone.drop_connect == "auto"
    assert all(0 <= s[0] < 1 for s in synthetic.schedule.steps)  # fractions of the run


def test_overrides_compose_groups_and_keys():
    cfg = compose(["backbone=efficientnet_b2", "input=kaggle", "trainer.precision=mixed_float16", "cv.folds=3",
                   "input.tile=[32,64]"])
    assert cfg.backbone.name == "efficientnet_b2"
    assert cfg.input.mix == "kaggle" and list(cfg.input.tile) == [32, 64]
    assert cfg.trainer.precision == "mixed_float16" and cfg.cv.folds == 3


@pytest.mark.parametrize("override", ["backbone=efficientnet_b9", "trainer.no_such_key=1"])
def test_unknown_group_or_key_is_rejected(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        compose([override])


@pytest.mark.parametrize("override,key", [("trainer.precision=fp8", "trainer.precision"), ("input.mix=audio", "input.mix"),
                                          ("cv.folds=1", "cv.folds"), ("backbone.weights=/no/such.h5", "backbone.weights"),
                                          ("data=kaggle", "data.root"),
                                          ("schedule.steps=[[0,1.0e-3],[2,1.0e-4]]", "schedule.steps"),
                                          ("schedule.steps=[[0.5,1.0e-3]]", "schedule.steps"),
                                          ("schedule.steps=[[0,-1.0e-3]]", "schedule.steps"),
                                          ("backbone.bn_momentum=1.5", "backbone.bn_momentum"),
                                          ("backbone.bn_momentum=fast", "backbone.bn_momentum"),
                                          ("backbone.drop_connect=abc", "backbone.drop_connect")])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


ISSUE15_BAD_VALUES = [  # (override, key, what the message says is allowed)
    ("trainer.workers=abc", "trainer.workers", "Integer"),
    ("seed=abc", "seed", "Integer"),
    ("backbone.dropout=abc", "backbone.dropout", "Float"),
    ("cv.stage2=maybe", "cv.stage2", "not a valid bool"),
    ("augmentation.time_flip=2.0", "augmentation.time_flip", r"in \[0.0, 1.0\]"),
    ("data.eegs=-5", "data.eegs", "at least 1"),
]


@pytest.mark.parametrize("override,key,allowed", ISSUE15_BAD_VALUES)
def test_issue15_wrong_types_and_ranges_are_rejected_when_composing(override, key, allowed):
    """Each of these once gave a late crash or a silent wrong run; the schemas reject them, naming key, value and rule."""
    with pytest.raises(ConfigError) as error:
        compose([override])
    message = str(error.value)
    assert key in message and override.split("=")[1] in message
    assert re.search(allowed, message), message


@pytest.mark.parametrize("override,key", [("trainer.workers=0", "trainer.workers"), ("trainer.cpu_devices=0", "trainer.cpu_devices"),
                                          ("augmentation.hemisphere=-0.1", "augmentation.hemisphere"),
                                          ("augmentation.coarse_dropout=1.5", "augmentation.coarse_dropout"),
                                          ("backbone.dropout=1.0", "backbone.dropout"), ("cv.stage2_epochs=0", "cv.stage2_epochs"),
                                          ("data.patients=0", "data.patients"), ("data.sampling=every", "data.sampling"),
                                          ("data.workers=0", "data.workers"), ("tracking.system_metrics=0", "tracking.system_metrics"),
                                          ("trainer.verbose=true", "trainer.verbose"), ("input.tile=[16,abc]", "input.tile")])
def test_schema_ranges_and_choices(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


def test_every_group_option_starts_from_its_schema():
    """A config file that forgets `defaults: [_schema, _self_]` would escape type checking: each one is typed."""
    from dataclasses import is_dataclass

    from omegaconf import OmegaConf

    from hms.config import CONF_DIR

    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "profile"):
        for option in sorted(f.stem for f in folder.glob("*.yaml") if not f.stem.startswith("_")):
            extra = ["data.root=/x"] if (folder.name, option) == ("data", "kaggle") else []
            if option.startswith("eeg1d") or option == "signal":  # the raw-EEG family's parts need each other
                extra = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal"]
            cfg = compose([f"{folder.name}={option}", *extra])
            schema = OmegaConf.get_type(cfg[folder.name])
            assert is_dataclass(schema), f"conf/{folder.name}/{option}.yaml has no schema"
            with pytest.raises(ConfigError, match=f"{folder.name}.no_such_key"):
                compose([f"{folder.name}={option}", *extra, f"{folder.name}.no_such_key=1"])


def test_train_command_rejects_a_wrong_type_before_any_run(tmp_path):
    result = run_module("hms.train", "trainer.workers=abc", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.workers" in result.stderr and "abc" in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "data").exists()


def test_train_command_rejects_a_bad_key_before_doing_anything(tmp_path):
    result = run_module("hms.train", "trainer.precision=fp8", cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.precision" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("only,message", [("[]", "names no fold"), ("[0,0]", "names a fold twice")])
def test_item14_cv_only_empty_or_repeated_is_refused(only, message):
    """Issue 14, item 14: cv.only=[] crashed; cv.only=[0,0] trained and counted fold 0 twice."""
    with pytest.raises(ConfigError, match=rf"cv.only=.*{message}"):
        compose([f"cv.only={only}"])


def test_item17_a_password_in_tracking_uri_is_never_recorded(tmp_path):
    """Issue 14, item 17: the run's params and config.yaml show the tracking URI with its password as ***."""
    from mlflow import MlflowClient

    from hms import tracking
    from hms.cv import open_parent

    cfg = compose(["tracking.uri=postgresql://hms:s3cret@db.example:5432/runs"])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")  # the records go to a real store here
    parent = open_parent(client, cfg)
    run = client.get_run(parent.run_id)
    assert run.data.params["tracking.uri"] == "postgresql://hms:***@db.example:5432/runs"
    from pathlib import Path

    config = Path(client.download_artifacts(parent.run_id, "config.yaml", str(tmp_path))).read_text()
    assert "s3cret" not in config and "hms:***@db.example" in config
    assert "s3cret" not in str(run.data.params) and cfg.tracking.uri.endswith("s3cret@db.example:5432/runs")  # own copy untouched
    assert tracking.redact("http://user:p%40ss@host/x") == "http://user:***@host/x"


def test_item18_artifacts_go_beside_the_sqlite_store_not_into_the_working_folder(tmp_path, monkeypatch):
    """Issue 14, item 18: a store named by tracking.uri keeps its artifacts beside it."""
    from omegaconf import OmegaConf

    from hms import tracking

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    client = tracking.client_for(OmegaConf.create({"uri": f"sqlite:///{tmp_path}/store/mlflow.db"}))
    run = client.create_run(tracking.experiment_id(client, "hms"))
    (tmp_path / "note.txt").write_text("x")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    assert not (tmp_path / "elsewhere" / "mlruns").exists()
    assert list((tmp_path / "store" / "mlruns").rglob("note.txt"))


def test_progress_output_is_a_bar_on_a_terminal_and_a_line_per_epoch_in_a_file(tmp_path):
    """trainer.verbose=auto: Keras' animated bar only where a terminal shows it; a log file gets one line per epoch."""
    import os

    from hms.cv import progress_verbosity

    leader, follower = os.openpty()  # a real terminal device
    with open(follower, "w") as terminal, open(tmp_path / "run.log", "w") as logfile:
        assert terminal.isatty() and progress_verbosity("auto", terminal) == 1
        assert progress_verbosity("auto", logfile) == 2
        assert progress_verbosity(0, terminal) == 0 and progress_verbosity(2, terminal) == 2
    os.close(leader)
    assert compose([]).trainer.verbose == "auto"
    with pytest.raises(ConfigError, match="trainer.verbose='loud' is not one of auto, 0, 1, 2"):
        compose(["trainer.verbose=loud"])


def test_a_multirun_writes_no_folders_where_it_runs(tmp_path):
    """Hydra's -m bookkeeping (multirun.yaml, job folders) goes to the temp folder, not the working folder."""
    import os

    result = run_module("hms.train", "-m", "cv.folds=1", cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert result.returncode != 0 and "cv.folds=1 must be at least 2" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and list((tmp_path / "tmp" / "hms-multirun").iterdir())


@pytest.mark.parametrize("overrides,message", [
    (["input=eeg1d"], "backbone=efficientnet_b0 (efficientnet) does not take input.mix=eeg1d"),
    (["backbone=eeg1d_gru"], "backbone=eeg1d_gru (eeg1d) does not take input.mix=both"),
    (["augmentation=signal"], "augmentation.time_shift=0.5 does not apply to input.mix=both"),
    (["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=flip_dropout"], "augmentation.coarse_dropout=0.5 does not apply to input.mix=eeg1d"),
    (["input=eeg1d", "backbone=eeg1d_cnn", "input.signal.rate=40"], "rate / 2 (20.0), or the downsampling aliases"),
    (["input=eeg1d", "backbone=eeg1d_cnn", "input.signal.rate=30"], "input.signal.rate=30: must divide the EEG's 200 Hz"),
])
def test_raw_eeg_parts_that_do_not_fit_together_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose(overrides)
