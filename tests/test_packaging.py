"""The wheel: built from this checkout, installed where no source tree is, its console scripts run from an empty folder."""

import os
import subprocess
import sys

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel installed (without its dependencies, which this environment has) into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO), "-w",
                    str(work / "dist")], check=True, capture_output=True, cwd=work)
    wheel = next((work / "dist").glob("hms-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(work / "site"), str(wheel)],
                   check=True, capture_output=True)
    empty = work / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(work / "site")}
    return work / "site", empty, env


def run(site, empty, env, script, *args):
    return subprocess.run([str(site / "bin" / script), *map(str, args)], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_ships_its_configs_and_sweeps_and_its_commands_run_from_an_empty_folder(installed, synthetic_root):
    site, empty, env = installed
    where = subprocess.run([sys.executable, "-c", "import hms, hms.config as c; print(hms.__file__, c.CONF_DIR, c.SHIPPED_SWEEPS)"],
                           cwd=empty, env=env, capture_output=True, text=True)
    module, conf, sweeps = where.stdout.split()
    assert module.startswith(str(site)) and conf == str(site / "hms" / "conf") and sweeps == str(site / "hms" / "sweeps")
    helped = run(site, empty, env, "hms-train", "--help")
    assert helped.returncode == 0 and "Configuration groups" in helped.stdout and "efficientnet_b7" in helped.stdout
    job = run(site, empty, env, "hms-train", "backbone=efficientnet_b3", "--cfg", "job")
    assert job.returncode == 0 and "name: efficientnet_b3" in job.stdout and "bn_momentum: auto" in job.stdout
    checked = run(site, empty, env, "hms-data", "check", synthetic_root)
    assert checked.returncode == 0 and "all files OK" in checked.stdout
    space = run(site, empty, env, "hms-sweep", "launch", "nosuch", "--trials", "1")
    assert space.returncode == 2 and "shipped spaces: backbone_aug_mix, lr_steps, tiny" in space.stderr
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing written where the commands ran


def test_a_users_own_config_folder_adds_options_that_are_typed_too(installed, tmp_path):
    """--config-dir adds the user's group files to the shipped ones; they start from the same schema, so a wrong
    type in them is rejected naming the key. Hydra's shell completion works through the console script."""
    site, empty, env = installed
    mine = tmp_path / "mine" / "backbone"
    mine.mkdir(parents=True)
    (mine / "my_b1.yaml").write_text("defaults:\n  - _efficientnet\n  - _self_\n\nname: efficientnet_b1\ndropout: 0.35\n")
    (mine / "broken.yaml").write_text("defaults:\n  - _efficientnet\n  - _self_\n\nname: efficientnet_b1\ndropout: lots\n")
    job = run(site, empty, env, "hms-train", "--config-dir", tmp_path / "mine", "backbone=my_b1", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "name: efficientnet_b1" in job.stdout and "dropout: 0.35" in job.stdout and "positions: auto" in job.stdout
    broken = run(site, empty, env, "hms-train", "--config-dir", tmp_path / "mine", "backbone=broken", "--cfg", "job")
    assert broken.returncode != 0 and "backbone.dropout" in broken.stderr and "lots" in broken.stderr
    completion = run(site, empty, env, "hms-train", "-sc", "install=bash")
    assert completion.returncode == 0 and "complete" in completion.stdout and "hms-train" in completion.stdout
