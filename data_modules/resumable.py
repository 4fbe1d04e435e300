"""A training ``DataLoader`` whose position is saved in checkpoints and restored on resume.

The state is the epoch of the next batch and how many batches of that epoch were already trained
on. The data module stores it in the checkpoint (``DepthDataModule.state_dict``) and, when a run
resumes, hands it to ``load_state_dict`` of the first loader it builds, before Lightning's first
``iter()``; loading tells the mixture sampler (``data_modules/mixing.py``, ``resume_at``) to set
that epoch and start its next pass after those batches. A run resumed from a mid-epoch checkpoint
(``val_check_interval < 1``) thus sees exactly the batches the uninterrupted run would have seen,
with any number of workers: the indices are drawn in the main process, and the epoch is set before
worker prefetching starts (which is before Lightning's own ``set_epoch``). Having ``state_dict`` /
``load_state_dict``, the loader is also one Lightning recognises as resumable.

How many batches were trained on comes from ``progress``, a callable returning
``(batches done in this epoch, batches per epoch)``; the data module passes the trainer's counters
(the loader itself cannot know: Lightning fetches one batch ahead, workers several). Without it
the loader counts the batches its current pass handed out.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from torch.utils.data import DataLoader

__all__ = ["ResumableLoader"]

Progress = Callable[[], Optional[Tuple[int, int]]]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a sampler (or batch sampler) with ``epoch`` and ``resume_at``."""

    def __init__(self, *args: Any, progress: Optional[Progress] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress
        self._handed_out = 0

    def _order(self) -> Any:
        """The sampler that owns the order: the batch sampler when it has one, else the sampler."""
        for candidate in (self.batch_sampler, self.sampler):
            if hasattr(candidate, "resume_at"):
                return candidate
        raise TypeError("ResumableLoader needs a sampler or batch sampler with resume_at()")

    def _samples_per_item(self) -> int:
        """1 when the order sampler yields batches, else the batch size (its items are samples)."""
        return 1 if self._order() is self.batch_sampler else int(self.batch_size or 1)

    def __iter__(self) -> Iterator[Any]:
        self._handed_out = 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> Dict[str, int]:
        order = self._order()
        counts = self._progress() if self._progress is not None else None
        done, per_epoch = counts if counts is not None else (self._handed_out, len(self))
        epoch = int(order.epoch)
        if done >= per_epoch:  # the epoch is over: the next batch is the first of the next one
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches": int(done)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        self._order().resume_at(epoch, batches * self._samples_per_item())
