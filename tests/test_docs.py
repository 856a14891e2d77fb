"""Docs that cannot rot (issue 29): the configuration reference is what the schemas give, the site builds with
`mkdocs build --strict` (a broken link fails it), and every command block of the README and the tutorial runs, in
order, in a copy of the repository, at tiny sizes, and prints what the page says it prints."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import REPO, end_process_group, free_port

SETUP = re.compile(r'python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e "\.\[[\w,]+\]"( && )?')
TEST_COMMAND = "tests/with_postgres.sh python -m pytest"  # the suite itself: CI runs it, this test is inside it
DATA = "path/to/hms-harmful-brain-activity-classification"  # the pages' stand-in for a Kaggle download
TINY = ["input.tile=[16,32]", "trainer.epochs=1", "cv.folds=2", "trainer.batch_size=16", "trainer.verbose=0",
        "tracking.system_metrics=null", "data.workers=1"]
SMALL_DATA = ["data.eegs=40", "data.patients=10"]  # the embedded dataset, generated small


def test_the_configuration_reference_is_what_the_schemas_give():
    from hms.reference import PAGE, page

    assert PAGE.read_text() == page(), "docs/reference/configuration.md is stale: run python -m hms.reference --write"
    text = page()
    assert "| `cv.folds` | int | `5` | >= 2 |" in text  # a key, its type, default and range
    assert "| `trainer.precision` | str | `auto` | one of auto, float32, mixed_float16, mixed_bfloat16 |" in text
    assert "`efficientnet_b7`" in text and "Options (backbone=NAME)" in text


def test_the_reference_command_says_when_the_page_is_stale(tmp_path, monkeypatch):
    from hms import reference

    stale = tmp_path / "configuration.md"
    stale.write_text(reference.page().replace("| `cv.folds` | int | `5`", "| `cv.folds` | int | `4`"))
    monkeypatch.setattr(reference, "PAGE", stale)
    assert reference.main(["--check"]) == 1
    assert reference.main(["--write"]) == 0 and reference.main(["--check"]) == 0


def test_the_site_builds_strict_and_a_broken_link_fails_it(tmp_path):
    def build(folder):
        return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(folder / "mkdocs.yml"),
                               "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})

    done = build(REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy)
    (copy / "docs" / "tutorial.md").write_text((copy / "docs" / "tutorial.md").read_text() + "\n[gone](howto/no-such-page.md)\n")
    broken = build(copy)
    assert broken.returncode != 0 and "no-such-page.md" in broken.stdout + broken.stderr


def blocks(page: Path) -> list[list[str]]:
    """The indented code blocks of a markdown page, in order, each a list of lines."""
    found, current, previous_blank = [], None, True
    for line in page.read_text().splitlines():
        if line.startswith("    ") and (current is not None or previous_blank) and not line.lstrip().startswith("- "):
            if current is None:
                current = []
                found.append(current)
            current.append(line[4:])
        elif line.strip():
            current = None
        previous_blank = not line.strip()
    return found


COMMANDS = ("python", "mlflow", "pip", "tests/")


def steps(pages) -> list[tuple[str, str, list[str]]]:
    """(page, command, what the page says it prints: the leading words of each shown output line) in order."""
    out = []
    for page in pages:
        for block in blocks(page):
            lines = [line for line in block if line.strip() and not line.lstrip().startswith("#")]
            if not lines:
                continue
            if not lines[0].startswith(COMMANDS):  # shown output: of the last command before it (not the test command)
                last = next(step for step in reversed(out) if TEST_COMMAND not in step[1])
                last[2].extend(re.split(r"[\d<(]", line, maxsplit=1)[0].strip() for line in lines if line.strip() != "...")
                continue
            for line in lines:
                out.append((page.name, line, []))
    return out


def tiny(command: str, data: Path) -> str | None:
    """The command as the test runs it: setup done, sizes tiny, the Kaggle stand-in pointed at a generated set;
    None for the test command itself."""
    setup = SETUP.match(command)
    if setup:
        command = command[setup.end():]
        if not command:
            return None
    if command.startswith(TEST_COMMAND):
        return None
    command = command.replace(DATA, str(data))
    if command.startswith("python -m hms.train"):
        command += " " + " ".join(TINY + ([] if "data=kaggle" in command else SMALL_DATA))
    elif command.startswith("python -m hms.predict --") and "data=kaggle" not in command:
        command += " " + " ".join(SMALL_DATA + ["data.workers=1"])
    elif command.startswith("python -m hms.sweep launch"):
        command = re.sub(r"--trials \d+", "--trials 2", command) + " -- " + " ".join(SMALL_DATA + ["data.workers=1"])
    return command


def serve_ui(command: str, cwd: Path) -> str:
    """Start the page's `mlflow ui` command on a free port, fetch the runs table's address, stop it."""
    port = free_port()
    process = subprocess.Popen(["bash", "-c", command.replace("--port 5000", f"--port {port}")], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10") as r:
                    return r.read().decode()
            except OSError:
                time.sleep(1)
        raise AssertionError(f"{command} did not answer in 120 s")
    finally:
        end_process_group(process)


@pytest.mark.slow  # trains: the main job, a Kaggle-layout run, a sweep, fold workers, a JAX run (all tiny)
def test_every_command_block_of_the_readme_and_the_tutorial_runs(synthetic_root, tmp_path):
    folder = tmp_path / "hms"  # a copy of the repository, as a user's clone: commands run from its root
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    ran, outputs = [], {}
    for page, command, shown in steps([REPO / "README.md", REPO / "docs" / "tutorial.md"]):
        runnable = tiny(command, synthetic_root)
        if runnable is None:
            continue
        if runnable.startswith("mlflow ui"):
            if runnable not in outputs:
                outputs[runnable] = serve_ui(runnable, folder)
                assert re.search(r'"name": ?"hms"', outputs[runnable]), outputs[runnable][:500]  # the runs' experiment
            ran.append(command)
            continue
        if runnable not in outputs:  # a command both pages give runs once; each page's shown output is checked
            result = subprocess.run(["bash", "-c", runnable], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{page}: {runnable}\n{output[-3000:]}"
            assert "Traceback" not in output, f"{page}: {runnable}\n{output[-3000:]}"
            outputs[runnable] = output
        for words in shown:
            assert any(line.strip().startswith(words) for line in outputs[runnable].splitlines()), \
                f"{page}: {runnable} did not print a line starting {words!r}:\n{outputs[runnable][-3000:]}"
        ran.append(command)
    assert len(ran) >= 12, ran  # every task of the README ran
    assert (folder / "submission.csv").is_file() and (folder / "models" / "ensemble.json").is_file()
    assert list((folder / "dist").glob("hms-*.whl"))
