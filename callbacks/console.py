"""What a run shows on the console, and the step its validation metrics are logged at.

* :class:`EpochProgressBar` / :class:`RichEpochProgressBar`: Lightning's plain and Rich progress
  bars with a 1-based epoch counter ("Epoch 1/3" for three epochs) and without ``v_num`` (the
  logger's version, which names nothing the user sees).
* :class:`QuietModelSummary` / :class:`RichQuietModelSummary`: the model summary without the FLOPs
  column, which Lightning fills only for modules with an ``example_input_array`` (0 otherwise).
* :class:`ValidationStep`: validation metrics are logged at ``trainer.global_step`` (the optimizer
  steps done), the step of the checkpoint, of ``summary.json`` and of the media file names.
* :func:`quiet_lightning`: drops Lightning's info lines that are advertisements or restate the
  config (litlogger / litmodels tips, "validation will run at the end of the training epoch").
* :func:`quiet_wandb_logger`: no "anonymous setting has no effect" warning from W&B.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence, Tuple

from lightning.pytorch.callbacks import Callback, ModelSummary, RichModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

__all__ = ["epoch_text", "EpochProgressBar", "RichEpochProgressBar", "QuietModelSummary", "RichQuietModelSummary",
           "ValidationStep", "quiet_lightning", "quiet_wandb_logger", "QUIET_MESSAGES"]


def epoch_text(current_epoch: int, max_epochs: Any) -> str:
    """``Epoch 1/3`` for the first of three epochs; ``Epoch 5`` without an epoch limit."""
    limit = int(max_epochs) if max_epochs is not None else -1
    return f"Epoch {current_epoch + 1}/{limit}" if limit > 0 else f"Epoch {current_epoch + 1}"


def _without_version(items: Dict[str, Any]) -> Dict[str, Any]:
    items.pop("v_num", None)
    return items


class EpochProgressBar(TQDMProgressBar):
    """Lightning's plain (tqdm) progress bar, 1-based epochs, no ``v_num``."""

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        # Lightning's own, with the description set once (a log file keeps every refresh)
        from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.reset()
        bar.total = convert_inf(self.total_train_batches)
        bar.initial = 0
        bar.set_description(epoch_text(trainer.current_epoch, trainer.max_epochs))

    def get_metrics(self, trainer, pl_module) -> Dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class RichEpochProgressBar(RichProgressBar):
    """Lightning's Rich progress bar, 1-based epochs, no ``v_num``."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_text(current_epoch, self.trainer.max_epochs)
        width = len(self.validation_description)  # as Lightning: equal widths, no flicker
        return f"{text:{width}}" if width > len(text) else text

    def get_metrics(self, trainer, pl_module) -> Dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


def _columns(summary_data: Sequence[Tuple[str, List[str]]], total_flops: int) -> List[Tuple[str, List[str]]]:
    return [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops > 0]


def _totals(total_parameters: int, trainable_parameters: int, model_size: float,
            modes: Dict[str, int], total_flops: int) -> List[Tuple[str, str]]:
    count = lambda n: get_human_readable_count(int(n)).strip()  # noqa: E731
    rows = [("Trainable params", count(trainable_parameters)),
            ("Non-trainable params", count(total_parameters - trainable_parameters)),
            ("Total params", count(total_parameters)),
            ("Total estimated model params size (MB)", f"{model_size:,.3f}"),
            ("Modules in train mode", str(modes.get("train", 0))), ("Modules in eval mode", str(modes.get("eval", 0)))]
    if total_flops > 0:
        rows.append(("Total FLOPs", count(total_flops)))
    return rows


class QuietModelSummary(ModelSummary):
    """The plain-text model summary without the FLOPs column (kept when FLOPs were measured)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs: Any) -> None:
        cols = _columns(summary_data, total_flops)
        widths = [max([len(name)] + [len(str(v)) for v in values]) for name, values in cols]
        lines = [" | ".join(f"{name:<{w}}" for (name, _), w in zip(cols, widths))]
        rule = "-" * len(lines[0])
        lines.append(rule)
        for i in range(len(cols[0][1]) if cols else 0):
            lines.append(" | ".join(f"{str(values[i]):<{w}}" for (_, values), w in zip(cols, widths)))
        lines.append(rule)
        lines += [f"{value:<10} {label}" for label, value in
                  _totals(total_parameters, trainable_parameters, model_size, total_training_modes, total_flops)]
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + "\n".join(lines))


class RichQuietModelSummary(RichModelSummary):
    """The Rich model summary without the FLOPs column (kept when FLOPs were measured)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        cols = _columns(summary_data, total_flops)
        for name, _ in cols:
            right = name in ("Params", "Params per Device", "FLOPs", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if right else "left", style="dim" if name == " " else None,
                             no_wrap=name == "Name")
        for row in zip(*(values for _, values in cols)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        for label, value in _totals(total_parameters, trainable_parameters, model_size, total_training_modes,
                                    total_flops):
            console.print(f"[bold]{label}[/]: {value}")


class ValidationStep(Callback):
    """Validation metrics go to the loggers at ``trainer.global_step``.

    Lightning logs them at its count of batches stepped *before* the current one is counted, one
    less than ``trainer.global_step`` after the same batches (the CSV said 449 where the checkpoint,
    the media files and ``summary.json`` say 450). Logging a ``step`` value sets the loggers' step;
    Lightning then adds no ``epoch`` value of its own, so that is logged too. ``step``: the step of
    the last validation (None before the first)."""

    def __init__(self) -> None:
        self.step = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.step = int(trainer.global_step)
            for key, value in (("step", trainer.global_step), ("epoch", trainer.current_epoch)):
                pl_module.log(key, float(value), on_step=False, on_epoch=True, logger=True, prog_bar=False,
                              sync_dist=False)


# Lightning info lines that say nothing to a user of this project (matched by their text)
QUIET_MESSAGES = (
    "💡 Tip: For seamless cloud logging",  # litlogger advertisement
    "💡 Tip: For seamless cloud uploads",  # litmodels advertisement
    "was configured so validation will run at the end of the training epoch",
    "Loading `train_dataloader` to estimate number of stepping batches",  # internal to the LR schedule
)


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(part in text for part in QUIET_MESSAGES)


_FILTER = _DropMessages()


def quiet_lightning() -> None:
    """Drop :data:`QUIET_MESSAGES` from Lightning's rank-zero info log (idempotent), and two known
    warnings that are not the user's to act on: augmentation deliberately lives in the module's
    ``on_after_batch_transfer``, and Lightning's own pytree deprecation. Other messages and
    warnings pass."""
    import warnings

    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")

    for logger in {logging.getLogger("lightning.pytorch.utilities.rank_zero"),
                   logging.getLogger("lightning_utilities.core.rank_zero")}:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def quiet_wandb_logger(logger: Any) -> Any:
    """Lightning's ``WandbLogger`` passes ``anonymous=None`` to ``wandb.init`` when anonymous logging
    is off; recent W&B versions warn that the setting "has no effect" whatever its value. Left out before the
    run starts. Returns ``logger``."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger
