"""The wheel: built from this checkout, installed where no source tree is, its console scripts run from an empty folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel installed into a fresh virtual environment. There is no internet here, so the venv sees this
    environment's installed dependencies through a .pth line (a path, not a site folder: this checkout's editable
    install of hms is not among what it adds); hms itself comes only from the wheel."""
    import sysconfig

    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO), "-w",
                    str(work / "dist")], check=True, capture_output=True, cwd=work)
    wheel = next((work / "dist").glob("hms-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    empty = work / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return venv, site, empty, env


def run(venv, empty, env, script, *args, timeout=300):
    return subprocess.run([str(venv / "bin" / script), *map(str, args)], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_ships_its_configs_and_sweeps_and_its_commands_run_from_an_empty_folder(installed, synthetic_root, tmp_path):
    venv, site, empty, env = installed
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import hms, hms.config as c; print(hms.__file__, c.CONF_DIR, c.SHIPPED_SWEEPS)"],
                           cwd=empty, env=env, capture_output=True, text=True)
    module, conf, sweeps = where.stdout.split()
    assert module.startswith(str(site)) and conf == str(site / "hms" / "conf") and sweeps == str(site / "hms" / "sweeps")
    helped = run(venv, empty, env, "hms-train", "--help")
    assert helped.returncode == 0 and "Configuration groups" in helped.stdout and "efficientnet_b7" in helped.stdout
    job = run(venv, empty, env, "hms-train", "backbone=efficientnet_b3", "--cfg", "job")
    assert job.returncode == 0 and "name: efficientnet_b3" in job.stdout and "bn_momentum: auto" in job.stdout
    checked = run(venv, empty, env, "hms-data", "check", synthetic_root)
    assert checked.returncode == 0 and "all files OK" in checked.stdout
    space = run(venv, empty, env, "hms-sweep", "launch", "nosuch", "--trials", "1")
    shipped = ", ".join(sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")))  # every space in the checkout, in the wheel
    assert space.returncode == 2 and f"shipped spaces: {shipped}" in space.stderr and "eeg1d" in shipped
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing written where the commands ran
    # A tiny training from the empty folder, with the installed commands only.
    store = tmp_path / "store"
    trained = run(venv, empty, env, "hms-train", "data=kaggle", f"data.root={synthetic_root}", f"data.cache_dir={tmp_path / 'cache'}",
                  f"tracking.uri=sqlite:///{store}/mlflow.db", "cv.folds=2", "cv.only=[0]", "trainer.epochs=1", "input.tile=[16,32]",
                  "trainer.batch_size=8", "tracking.system_metrics=null", "trainer.verbose=0", timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "fold 0: KL" in trained.stdout and (store / "mlflow.db").is_file()
    assert sorted(p.name for p in empty.iterdir()) == []  # artifacts went beside the store, caches where asked


def test_a_users_own_config_folder_adds_options_that_are_typed_too(installed, tmp_path):
    """--config-dir adds the user's group files to the shipped ones; they start from the same schema, so a wrong
    type in them is rejected naming the key. Hydra's shell completion works through the console script."""
    venv, site, empty, env = installed
    mine = tmp_path / "mine" / "backbone"
    mine.mkdir(parents=True)
    (mine / "my_b1.yaml").write_text("defaults:\n  - _efficientnet\n  - _self_\n\nname: efficientnet_b1\ndropout: 0.35\n")
    (mine / "broken.yaml").write_text("defaults:\n  - _efficientnet\n  - _self_\n\nname: efficientnet_b1\ndropout: lots\n")
    job = run(venv, empty, env, "hms-train", "--config-dir", tmp_path / "mine", "backbone=my_b1", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "name: efficientnet_b1" in job.stdout and "dropout: 0.35" in job.stdout and "positions: auto" in job.stdout
    broken = run(venv, empty, env, "hms-train", "--config-dir", tmp_path / "mine", "backbone=broken", "--cfg", "job")
    assert broken.returncode != 0 and "backbone.dropout" in broken.stderr and "lots" in broken.stderr
    completion = run(venv, empty, env, "hms-train", "-sc", "install=bash")
    assert completion.returncode == 0 and "complete" in completion.stdout and "hms-train" in completion.stdout
