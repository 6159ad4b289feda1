"""Training a person can follow: one INFO line per logging step, the bar only where it belongs."""

import io
import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")
from ows.integrations.progress import ProgressCallback  # noqa: E402


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _state(step=5):
    return SimpleNamespace(is_world_process_zero=True, max_steps=60, global_step=step)


def test_every_logging_step_is_one_info_line_with_loss_lr_grad_norm_and_active_layers(caplog):
    controller = SimpleNamespace(active=(3, 7, 12))
    callback = ProgressCallback(controller)
    with caplog.at_level(logging.INFO, logger="ows"):
        callback.on_log(SimpleNamespace(), _state(), None, logs={"loss": 2.18341, "learning_rate": 2.93e-4,
                                                                   "grad_norm": 1.2734, "epoch": 0.1})
    lines = [r for r in caplog.records if r.name == "ows.integrations.progress"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    text = lines[0].getMessage()
    assert text.startswith("step 5/60: loss 2.1834, lr 0.000293, grad_norm 1.27, active layers 3,7,12,")
    assert "peak memory" in text


@pytest.mark.parametrize("disable, terminal, drawn", [(False, True, True), (True, True, False),
                                                      (False, False, False), (None, True, True)])
def test_the_bar_is_drawn_only_on_a_terminal_and_without_disable_tqdm(monkeypatch, disable, terminal, drawn):
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    callback = ProgressCallback()
    callback.on_train_begin(SimpleNamespace(disable_tqdm=disable), _state(0), None)
    assert (callback.bar is not None) == drawn
    callback.on_train_end(SimpleNamespace(), _state(), None)
