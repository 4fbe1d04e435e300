"""Run guards: skip and count non-finite steps, never checkpoint non-finite weights, stop cleanly
on SIGINT / SIGTERM.

* ``DivergenceGuard``: a step whose loss or gradient is not finite takes no optimizer step and is
  counted (``train/skipped_steps``); ``max_bad_steps`` such steps in a row raise
  ``TrainingDiverged`` naming the step.
* ``GuardedCheckpoint``: Lightning's ``ModelCheckpoint`` that writes nothing (best or last) while
  any weight or buffer is not finite, and that writes ``last.ckpt`` when Lightning stops the run
  for a signal after at least one step.
* ``SignalGuard``: SIGINT joins Lightning's SIGTERM path (stop at the end of the current batch,
  ``SIGTERMException``); it records which signal stopped the run for the exit code.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoe_lightning.errors import TrainingDiverged

__all__ = ["DivergenceGuard", "GuardedCheckpoint", "SignalGuard", "first_non_finite"]


def first_non_finite(module: torch.nn.Module) -> Optional[str]:
    """Name of the first floating-point parameter or buffer of ``module`` that holds a NaN or inf."""
    for name, tensor in module.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _uses_grad_scaler(trainer) -> bool:
    """16-bit mixed precision: the GradScaler itself skips steps with inf gradients."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None


class DivergenceGuard(Callback):
    def __init__(self, max_bad_steps: int = 5) -> None:
        self.max_bad_steps = max(1, int(max_bad_steps))
        self.skipped = 0  # steps skipped in this process's run
        self.consecutive = 0
        self._loss: Optional[torch.Tensor] = None
        self._step_skipped = False

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        loss = getattr(self, "_loss", None)
        if not grads and loss is None:
            return
        device = grads[0].device if grads else loss.device
        bad = torch.zeros((), dtype=torch.bool, device=device)
        if loss is not None:
            bad |= ~torch.isfinite(loss.to(device)).all()
        if grads and not _uses_grad_scaler(trainer):  # DDP: gradients are already the same on every rank
            bad |= ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if not bool(bad):  # one host sync per step
            self._step_skipped = False
            return
        self._step_skipped = True
        self.skipped += 1
        self.consecutive += 1
        if not _uses_grad_scaler(trainer):  # no gradient, no optimizer update for this step
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        step = int(trainer.global_step)
        rank_zero_warn(f"step {step}: non-finite loss or gradient (loss={float(loss) if loss is not None else 'n/a'}); "
                       f"step skipped ({self.consecutive} in a row)")
        if self.consecutive >= self.max_bad_steps:
            raise TrainingDiverged(
                f"training diverged at step {step}: {self.consecutive} steps in a row with a non-finite loss or "
                f"gradient (trainer.max_bad_steps={self.max_bad_steps}); lower optim.lr or keep "
                f"trainer.gradient_clip_val > 0")

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._step_skipped:
            self.consecutive = 0
        self._step_skipped = False
        self._loss = None
        if self.skipped:
            pl_module.log("train/skipped_steps", float(self.skipped), batch_size=1)


class GuardedCheckpoint(ModelCheckpoint):
    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        if super()._should_skip_saving_checkpoint(trainer):
            return True
        bad = first_non_finite(trainer.lightning_module)
        if bad is not None:
            rank_zero_warn(f"checkpoint at step {trainer.global_step} not written: tensor '{bad}' is not finite")
            return True
        return False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A signal stop after at least one step: ``last.ckpt`` of the state at the end of the last batch."""
        super().on_exception(trainer, pl_module, exception)
        if not isinstance(exception, SIGTERMException) or not self.save_last or trainer.sanity_checking:
            return
        if trainer.global_step == 0 or self._last_global_step_saved == trainer.global_step:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        rank_zero_info(f"stopped by a signal at step {trainer.global_step}: saved {self.last_model_path}")


class SignalGuard(Callback):
    """``signum``: the signal that stopped the run (None while none did)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.step: Optional[int] = None

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        lightning_handler = signal.getsignal(signal.SIGTERM)  # registered by Lightning's signal connector

        def stop(signum, frame):
            if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl+C: stop at once
                raise KeyboardInterrupt
            self.signum = self.signum or signum
            if callable(lightning_handler):
                lightning_handler(signum, frame)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)  # Lightning's teardown restores the previous handlers

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signum = self.signum or int(signal.SIGINT)
        elif isinstance(exception, SIGTERMException):
            self.signum = self.signum or int(signal.SIGTERM)
        else:
            return
        self.step = int(trainer.global_step)
