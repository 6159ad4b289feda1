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
                                "--max_steps", "3", "--sampling_granularity", "layer")])  # gamma whole layers
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


# --- checks of each tracker's configuration, before the model loads (offline, fast) -----------------------------------
def _no_wandb_login(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


def test_wandb_needs_credentials_online_and_a_known_mode(monkeypatch, tmp_path):
    _needs("wandb")
    from ows.errors import UsageError
    from ows.recipe.trackers import check_trackers

    _no_wandb_login(monkeypatch, tmp_path)
    with pytest.raises(UsageError, match="no W&B credentials were found .* set WANDB_MODE=offline"):
        check_trackers({"report_to": ["wandb"]})
    if importlib.util.find_spec("wandb"):
        with pytest.raises(UsageError, match="no W&B credentials"):  # 'all' takes every installed tracker
            check_trackers({"report_to": "all"})
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "0" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    check_trackers({"report_to": ["wandb"]})  # a wandb login
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    check_trackers({"report_to": ["wandb"]})
    monkeypatch.delenv("WANDB_API_KEY")
    for mode in ("offline", "disabled"):
        monkeypatch.setenv("WANDB_MODE", mode)
        check_trackers({"report_to": ["wandb"]})
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(UsageError, match="WANDB_MODE='ofline' is invalid"):
        check_trackers({"report_to": ["wandb"]})


def test_mlflow_uri_scheme_and_server_answer(monkeypatch):
    import socket

    _needs("mlflow")
    from ows.errors import UsageError
    from ows.recipe.trackers import ANSWER_SECONDS, check_trackers

    for uri in ("file:///tmp/mlruns", "/tmp/mlruns", "sqlite:///tmp/m.db", ""):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        check_trackers({"report_to": "mlflow"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://x")
    with pytest.raises(UsageError, match="scheme 'nosuch', which mlflow does not know"):
        check_trackers({"report_to": "mlflow"})
    with socket.socket() as server:  # a server that accepts connections passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        check_trackers({"report_to": "mlflow"})
    started = time.monotonic()
    with pytest.raises(UsageError, match=f"http://127.0.0.1:{port}' does not answer"):  # closed now
        check_trackers({"report_to": "mlflow"})
    assert time.monotonic() - started < ANSWER_SECONDS + 5


def test_an_unknown_tracker_name_gets_the_nearest_known_one():
    from ows.errors import UsageError
    from ows.recipe.trackers import check_trackers

    with pytest.raises(UsageError, match=r"report_to='tensorbord' is not a tracker the Trainer knows \(did you mean "
                                         "'tensorboard'"):
        check_trackers({"report_to": "none,tensorbord"})
    check_trackers({"report_to": "none"})
