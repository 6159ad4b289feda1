"""``report_to``: every tracker name and its obvious configuration checked before the model loads.

A name the Trainer does not know is refused with the nearest known one; a tracker that is not installed is
refused; wandb online needs credentials (``WANDB_API_KEY``, an identity token file or a ``.netrc`` entry for
its host) and a valid ``WANDB_MODE``; mlflow's ``MLFLOW_TRACKING_URI`` needs a scheme mlflow knows, and an
http(s) server must accept a connection within :data:`ANSWER_SECONDS`. Nothing here contacts a tracker
beyond that one connection.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import UsageError, did_you_mean

# report_to names whose package is not the name itself; the others import as named
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
                   "comet_ml": "comet_ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
                   "swanlab": "swanlab", "codecarbon": "codecarbon", "azure_ml": "azureml", "flyte": "flytekit",
                   "dagshub": "dagshub"}
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "shared", "run")  # wandb's Settings.mode
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")
# mlflow's tracking-store schemes, when its registry cannot be read ('' is a local path)
MLFLOW_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc", "sqlite", "postgresql", "mysql",
                  "mssql")
ANSWER_SECONDS = 3.0


def trackers(training: dict[str, Any]) -> list[str]:
    """The tracker names of ``report_to`` (a string, comma-separated or not, or a list; none: [])."""
    value = training.get("report_to")
    parts = [value] if isinstance(value, str) else list(value or [])
    names = [name.strip() for part in parts for name in str(part).split(",") if name.strip()]
    return [n for n in names if n != "none"]


def known_trackers() -> list[str]:
    """The names ``report_to`` accepts: the Trainer's integrations (read from transformers), ``all`` and ``none``."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        names = set(INTEGRATION_TO_CALLBACK)
    except ImportError:  # pragma: no cover - an older or newer layout
        names = set(TRACKER_MODULES)
    return sorted(names | {"all", "none"})


def _installed_trackers() -> list[str]:
    """What ``report_to: all`` reports to: the installed trackers, as the Trainer finds them."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    return list(get_available_reporting_integrations())


def check_trackers(training: dict[str, Any]) -> None:
    """Every tracker of ``report_to`` is known and installed, and its configuration is usable (``UsageError``)."""
    names = trackers(training)
    known = known_trackers()
    for name in names:
        if name not in known:
            raise UsageError(f"report_to={name!r} is not a tracker the Trainer knows{did_you_mean(name, known)}: use "
                             f"one of {', '.join(known)}")
    if "all" in names:
        names = [n for n in names if n != "all"] + _installed_trackers()
    for name in dict.fromkeys(names):
        module = TRACKER_MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            package = "mlflow-skinny" if name == "mlflow" else module
            raise UsageError(f"report_to={name!r} needs the {module} package, which is not installed: pip install "
                             f"{package}, or leave {name} out of report_to")
        check = {"wandb": check_wandb, "mlflow": check_mlflow}.get(name)
        if check is not None:
            check()


def check_wandb() -> None:
    """``WANDB_MODE`` is a mode wandb knows; online, credentials are there (nothing is sent to check them)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode.strip().lower() not in WANDB_MODES:
        raise UsageError(f"WANDB_MODE={mode!r} is invalid for report_to wandb: use online, offline or disabled, or "
                         "unset it")
    if mode is not None and mode.strip().lower() in WANDB_LOCAL_MODES:
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE") or _wandb_netrc():
        return
    raise UsageError("report_to wandb logs online and no W&B credentials were found (WANDB_API_KEY, ~/.netrc): run "
                     "`wandb login`, or set WANDB_MODE=offline to log locally and `wandb sync` later")


def _wandb_netrc() -> bool:
    """Whether the ``.netrc`` wandb reads (``NETRC``, else ``~/.netrc``) holds a password for its host."""
    import netrc

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(os.environ["NETRC"]).expanduser() if os.environ.get("NETRC") else Path("~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def _mlflow_schemes() -> list[str]:
    """The tracking-store schemes mlflow knows: its registry (with its plugins) when it can be read."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as registry

        return sorted(set(registry._registry) | set(MLFLOW_SCHEMES))
    except Exception:  # pragma: no cover - mlflow's internals moved: the known list
        return list(MLFLOW_SCHEMES)


def check_mlflow() -> None:
    """``MLFLOW_TRACKING_URI``, when set, has a scheme mlflow knows; an http(s) server accepts a connection."""
    import socket

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # unset or empty: the run's local store (prepare_trackers)
        return
    fix = "unset MLFLOW_TRACKING_URI to log to OUTPUT_DIR/mlruns"
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()  # postgresql+psycopg2 is postgresql's
    if scheme not in _mlflow_schemes():
        raise UsageError(f"MLFLOW_TRACKING_URI={uri!r} has the scheme {scheme!r}, which mlflow does not know: give "
                         f"http(s)://HOST:PORT, file:PATH, a database URI or databricks, or {fix}")
    if scheme in ("http", "https"):
        port = parsed.port or (443 if scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=ANSWER_SECONDS).close()
        except OSError as err:
            why = err.strerror or type(err).__name__
            raise UsageError(f"MLFLOW_TRACKING_URI={uri!r} does not answer ({why}, waited up to {ANSWER_SECONDS:g} s): "
                             f"start the tracking server, or {fix}") from None


def prepare_trackers(training: dict[str, Any], out: Path) -> str | None:
    """mlflow without a tracking URI logs to a local store in ``out/mlruns`` (mlflow 3 refuses a file store unless
    allowed, and the default ./mlruns is wherever the run was started); returns a line saying so, else None."""
    if "mlflow" not in trackers(training) or os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    store = (out / "mlruns").resolve()
    os.environ["MLFLOW_TRACKING_URI"] = store.as_uri()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (f"mlflow: MLFLOW_TRACKING_URI is not set: logging to the local store {store} (view it with "
            f"`mlflow ui --backend-store-uri {store.as_uri()}`)")
