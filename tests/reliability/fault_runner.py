"""Runs `ows train` in this process with a planted fault; used by test_fault_injection.py.

    python fault_runner.py FAULT -- ARGS...      FAULT: none | step:N | save:N | term:N | saved:N | final

term:N sends SIGTERM (a graceful stop) as optimizer step N begins; step:N kills the process (SIGKILL) as
optimizer step N begins; save:N kills it halfway through writing the optimizer file of checkpoint-N,
leaving that checkpoint half-written; saved:N kills it right after checkpoint-N is marked complete;
final kills it while the fine-tuned model is being written (after training), inside the staging folder.
"""

import os
import signal
import sys

import torch


def _kill_in(event: str, step: int, sig: int) -> list:
    """A Trainer callback, for ``ows.train(callbacks=...)`` (after ows's own, so a checkpoint is marked complete
    first), that sends ``sig`` to this process at ``event`` (on_step_begin or on_save) of optimizer step ``step``."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        pass

    def handler(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), sig)

    setattr(Kill, event, handler)
    return [Kill()]


def plant(fault: str) -> list:
    """Plant ``fault``; returns the Trainer callbacks the run needs for it."""
    kind, _, value = fault.partition(":")
    if kind in ("step", "term", "saved"):
        event = "on_save" if kind == "saved" else "on_step_begin"
        return _kill_in(event, int(value), signal.SIGTERM if kind == "term" else signal.SIGKILL)
    if kind == "final":
        import transformers.modeling_utils as modeling_utils

        real_save = modeling_utils.safe_save_file

        def save(tensors, filename, *args, **kwargs):
            if ".ows-final-" in str(filename):
                with open(filename, "wb") as file:
                    file.write(b"\x00" * 1024)  # a torn model file in the staging folder
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(tensors, filename, *args, **kwargs)

        modeling_utils.safe_save_file = save
    elif kind == "save":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            path = str(f)
            if f"checkpoint-{value}" in path and path.endswith("optimizer.pt"):
                with open(path, "wb") as file:
                    file.write(b"\x00" * 1024)  # a torn write
                    file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    return []


def main(fault: str, argv: list) -> int:
    """``ows train ARGS`` with the fault planted (as ``ows.cli.main`` runs it: the same exit codes)."""
    import ows
    from ows.cli import main as ows_main
    from ows.cli.common import setup_logging
    from ows.cli.train import parse

    callbacks = plant(fault) if fault != "none" else []
    if not callbacks:
        return ows_main(argv)
    setup_logging()
    script, config, training = parse(argv[1:])
    return ows.train(script, config, training, callbacks=callbacks, echo=print).exit_code


if __name__ == "__main__":
    fault, sep, *argv = sys.argv[1:]
    sys.exit(main(fault, argv))
