"""Row 4 of RESULTS.md: a Lightning fit step against a bare PyTorch loop."""

from __future__ import annotations

import statistics
import time
from typing import Dict, List, Sequence

import torch

from common import row, _cfg


def bench_loop(backbone: str, size: Sequence[int], batch: int, steps: int, warmup: int) -> List[Dict]:
    import warnings

    import lightning as L

    from zoe_lightning.losses import silog_loss
    from zoe_lightning.modules import MetricDepthModule
    from zoe_lightning.modules.base import make_adamw

    warnings.filterwarnings("ignore")
    cfg = _cfg("quickstart", backbone, size, ["data.augment=false", "logger.csv=false", f"trainer.max_steps={steps}",
                                              "model.bins=[{name: nyu, n_bins: 64, min_depth: 0.001, max_depth: 10}]"])
    g = torch.Generator().manual_seed(0)
    batch_data = {
        "image": torch.rand(batch, 3, *size, generator=g), "depth": 0.5 + 5 * torch.rand(batch, 1, *size, generator=g),
        "valid": torch.ones(batch, 1, *size, dtype=torch.bool), "domain_label": torch.zeros(batch, dtype=torch.long),
        "domain": ["nyu"] * batch,
    }
    total = warmup + steps

    class Repeat(torch.utils.data.Dataset):
        def __len__(self):
            return total

        def __getitem__(self, i):
            return batch_data

    loader = torch.utils.data.DataLoader(Repeat(), batch_size=None, num_workers=0)

    torch.manual_seed(0)
    module = MetricDepthModule(cfg)
    torch.manual_seed(0)
    bare = MetricDepthModule(cfg)
    model = bare.model.train()
    o = cfg.optim
    groups = model.parameter_groups(o.lr, o.encoder_lr_factor, o.pos_enc_lr_factor, o.decoder_lr_factor, o.same_lr)
    opt = make_adamw(groups, o)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[gr["lr"] for gr in groups], total_steps=total + 1, pct_start=o.pct_start,
        div_factor=o.div_factor, final_div_factor=o.final_div_factor, anneal_strategy="cos", cycle_momentum=True,
        base_momentum=o.base_momentum, max_momentum=o.max_momentum)
    bare_batches = iter(torch.utils.data.DataLoader(Repeat(), batch_size=None, num_workers=0))

    def bare_step():
        b = next(bare_batches)
        out = model(b["image"], domain=b["domain_label"])
        loss, _ = silog_loss(out.metric_depth, b["depth"], b["valid"], beta=cfg.loss.silog_beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    class Interleave(L.Callback):
        """Round-robin per step: at each Lightning batch start, one bare step runs (timed); the
        Lightning step is the time from the end of that bare step to the next batch start, i.e.
        everything Lightning does for a step (training_step, backward, clipping, optimizer and
        scheduler, logging, hooks, fetching the next batch)."""

        def __init__(self):
            self.lightning, self.bare, self.mark = [], [], None

        def _lap(self):
            now = time.perf_counter()
            if self.mark is not None:
                self.lightning.append(now - self.mark)
            t0 = time.perf_counter()
            bare_step()
            self.bare.append(time.perf_counter() - t0)
            self.mark = time.perf_counter()

        def on_train_batch_start(self, *args):
            self._lap()

        def on_train_end(self, *args):
            self.lightning.append(time.perf_counter() - self.mark)

    clock = Interleave()
    trainer = L.Trainer(max_steps=total, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[clock], num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    lightning_steps, bare_steps = clock.lightning[warmup:], clock.bare[warmup:]
    t_l, t_b = statistics.median(lightning_steps), statistics.median(bare_steps)
    return [row(4, f"Lightning fit step vs bare PyTorch loop ({backbone} {size[0]}x{size[1]} batch {batch})",
                t_l, t_b, "s", 1.03, f"overhead {100 * (t_l / t_b - 1):+.1f}% (median of {len(bare_steps)} steps "
                "each, round-robin: one bare step inside each Lightning step, timed apart)",
                times_ours=lightning_steps, times_ref=bare_steps)]
