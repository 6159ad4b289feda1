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


def _kill_in(event: str, step: int, sig: int) -> None:
    """Add a Trainer callback (after ows's own, so a checkpoint is marked complete first) that sends ``sig``
    to this process at ``event`` (on_step_begin or on_save) of optimizer step ``step``."""
    from transformers import TrainerCallback

    import ows.cli.train_steps as steps

    class Kill(TrainerCallback):
        pass

    def handler(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), sig)

    setattr(Kill, event, handler)
    original = steps.make_trainer

    def make_trainer(*args, **kwargs):
        setup, trainer, guards = original(*args, **kwargs)
        trainer.add_callback(Kill())
        return setup, trainer, guards

    steps.make_trainer = make_trainer


def plant(fault: str) -> None:
    kind, _, value = fault.partition(":")
    if kind in ("step", "term", "saved"):
        event = "on_save" if kind == "saved" else "on_step_begin"
        _kill_in(event, int(value), signal.SIGTERM if kind == "term" else signal.SIGKILL)
    elif kind == "final":
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


if __name__ == "__main__":
    fault, sep, *argv = sys.argv[1:]
    if fault != "none":
        plant(fault)
    from ows.cli import main

    sys.exit(main(argv))
