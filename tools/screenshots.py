"""Screenshots of a real `mlflow ui` for the tutorial: the runs table with a CV run and its folds, the CV run's page
(description, metrics) and a comparison of its folds, taken in headless Chromium. Runs outside CI.

    pip install -e ".[screenshots]"   # Playwright; the browser is Debian's chromium (apt-get install chromium)
    python tools/screenshots.py       # a tiny 3-fold run in a temporary folder, then docs/mlflow_*.png
    python tools/screenshots.py --store path/to/mlflow.db --run RUN_ID

The images replace docs/mlflow_runs.png, docs/mlflow_run.png and docs/mlflow_compare.png.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
RUN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "cv.folds=3", "trainer.epochs=3", "data.eegs=120",
       "data.patients=24", "tracking.system_metrics=null", "trainer.verbose=0"]


def tiny_run(folder: Path) -> tuple[Path, str]:
    done = subprocess.run([sys.executable, "-m", "hms.train", *RUN, f"paths.root={folder}"], cwd=folder, capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"the run failed:\n{done.stderr[-3000:]}")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("hms").experiment_id], "tags.`hms.run_type` = 'cv'")
    return folder / "mlflow.db", run.info.run_id


def _try(action) -> None:
    """A click the UI may not offer (its layout changes between MLflow versions): skipped if it is not there."""
    try:
        action(timeout=3000)
    except Exception:  # noqa: BLE001 - a screenshot without the click is still one
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=None, help="an mlflow.db (default: a tiny run made here)")
    parser.add_argument("--run", default=None, help="the CV run to show (with --store)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--browser", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from hms.tracking import table_address

    with tempfile.TemporaryDirectory(prefix="hms-shots-") as tmp:
        store, run_id = (args.store, args.run) if args.store else tiny_run(Path(tmp))
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{store.resolve()}")
        run = client.get_run(run_id)
        experiment = run.info.experiment_id
        folds = sorted(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'"),
                       key=lambda r: r.data.tags.get("hms.fold", ""))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ui = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", f"sqlite:///{store.resolve()}", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(base, timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            compare = urllib.parse.quote(json.dumps([f.info.run_id for f in folds]))
            pages = {
                "mlflow_runs.png": table_address({"uri": f"sqlite:///{store.resolve()}"}, experiment).replace(
                    "http://127.0.0.1:5000", base),  # the address a run prints: hms's shared view of the table
                "mlflow_run.png": f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning",
                "mlflow_compare.png": f"{base}/#/compare-runs?runs={compare}&experiments={urllib.parse.quote(json.dumps([experiment]))}"
                                      "&workflowType=machine_learning",
            }
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.browser, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1680, "height": 900})
                for name, url in pages.items():
                    page.goto(url)
                    page.wait_for_load_state("load")
                    time.sleep(6)  # the tables and charts draw after their data arrives (the UI polls: never idle)
                    for close in page.locator("button[aria-label='Close']").all()[:1]:  # the assistant's side panel
                        _try(close.click)
                    if name == "mlflow_runs.png":
                        if not page.get_by_text("cv_kl", exact=True).count():
                            sys.exit(f"{url}: the runs table has no cv_kl column: hms's shared view did not open")
                        # unfold the CV run to show its folds: the expander beside its name
                        _try(page.locator("button[data-component-id*='runnamecellrenderer']").first.click)
                        time.sleep(2)
                    if name == "mlflow_compare.png":  # the folds side by side: their names, then their metrics
                        for section in ("Visualizations", "Parameters"):
                            _try(page.get_by_text(section, exact=True).first.click)
                            time.sleep(1)
                    page.screenshot(path=str(args.out / name), full_page=False)
                    print(f"wrote {args.out / name} ({url})")
                browser.close()
        finally:
            os.killpg(ui.pid, 15)
            ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
