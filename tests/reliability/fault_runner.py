"""Runs `ows train` in this process with a planted fault; used by test_fault_injection.py.

    python fault_runner.py FAULT -- ARGS...      FAULT: none | step:N | save:N | term:N

term:N sends SIGTERM (a graceful stop) as optimizer step N begins; step:N kills the process (SIGKILL) as optimizer step N begins; save:N kills it halfway through writing
the optimizer file of checkpoint-N, leaving that checkpoint half-written.
"""

import os
import signal
import sys

import torch


def plant(fault: str) -> None:
    kind, _, value = fault.partition(":")
    if kind in ("step", "term"):
        from transformers import TrainerCallback

        import ows.cli.train_steps as steps

        class KillAt(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == int(value):
                    os.kill(os.getpid(), signal.SIGKILL if kind == "step" else signal.SIGTERM)

        original = steps.make_trainer

        def make_trainer(*args, **kwargs):
            setup, trainer, guards = original(*args, **kwargs)
            trainer.add_callback(KillAt())
            return setup, trainer, guards

        steps.make_trainer = make_trainer
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
