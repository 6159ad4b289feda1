"""report_to offline: tensorboard, wandb (offline mode), mlflow (a local store) and trackio each receive the
Trainer's loss and OWS's own metrics (active layers, visits, memory, SVD seconds) from a real ows train run."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from ows.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_train import fast  # noqa: E402

OWS_KEY = "ows/active/00"


def _train(tiny_model_dir, out, tracker):
    code = main(["train", *fast(tiny_model_dir, out, "--report_to", tracker, "--heldout_generate", "0",
                                "--max_steps", "3")])
    assert code == 0


def _needs(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (the dev extra installs it)")


def test_tensorboard(tiny_model_dir, tmp_path, monkeypatch):
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    _train(tiny_model_dir, tmp_path / "run", "tensorboard")
    events = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", f"train/{OWS_KEY}", "train/ows/visits/00", "train/ows/svd_seconds",
            "train/ows/memory/peak_rss_gib"} <= tags
    active = [sum(events.Scalars(f"train/ows/active/{i:02d}")[-1].value for i in range(4))]
    assert active == [2.0]  # gamma = 2 of the tiny model's 4 layers


def test_wandb_offline(tiny_model_dir, tmp_path, monkeypatch):
    _needs("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "ows-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _train(tiny_model_dir, tmp_path / "run", "wandb")
    import wandb

    wandb.finish()  # the run stays open until the process exits (the Trainer does not finish it): flush it here
    records = _wandb_records(tmp_path, [OWS_KEY.encode(), b"train/loss"])
    assert OWS_KEY.encode() in records and b"train/loss" in records, f"{len(records)} bytes: {records[:80]!r}"


def _wandb_records(root, wanted, deadline_s=60.0):
    """The offline run file's bytes, once they hold every `wanted` key or after `deadline_s`: wandb's service
    process writes the file after finish() returns, so on a loaded machine the first read can see only its header."""
    start = time.monotonic()
    while True:
        records = next(root.rglob("offline-run-*/run-*.wandb")).read_bytes()
        if all(key in records for key in wanted) or time.monotonic() - start > deadline_s:
            return records
        time.sleep(0.5)


def test_mlflow_local_store_by_default(tiny_model_dir, tmp_path, monkeypatch, capsys):
    _needs("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    _train(tiny_model_dir, tmp_path / "run", "mlflow")
    assert "logging to the local store" in capsys.readouterr().out
    store = tmp_path / "run" / "mlruns"
    metrics = {p.relative_to(p.parents[3]).as_posix() for p in store.rglob("metrics/ows/active/*")}
    assert any(name.endswith(OWS_KEY) for name in metrics), sorted(store.rglob("metrics/*"))[:5]
    assert list(store.rglob("metrics/loss"))


def test_trackio_local(tiny_model_dir, tmp_path, monkeypatch):
    _needs("trackio")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _train(tiny_model_dir, tmp_path / "run", "trackio")
    database = next((tmp_path / "trackio").rglob("*.db"))
    with sqlite3.connect(database) as db:
        rows = " ".join(str(r) for table, in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                        for r in db.execute(f"SELECT * FROM {table}"))
    assert OWS_KEY in rows and "loss" in rows


def test_a_tracker_that_is_not_installed_is_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import ows.recipe.checks as checks

    monkeypatch.setitem(checks.TRACKER_MODULES, "wandb", "no_such_module_for_ows_tests")
    assert main(["train", *fast(tiny_model_dir, tmp_path / "run", "--report_to", "wandb")]) == 2
    err = capsys.readouterr().err
    assert "report_to='wandb' needs the no_such_module_for_ows_tests package" in err
    assert not (tmp_path / "run").exists()
