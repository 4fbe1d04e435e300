"""Stage 2: metric fine-tuning with SILog (+ gradient loss, + domain loss for a trained router);
evaluation with the paper's protocol (``test_step``) and prediction (``predict_step``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..evaluation.metrics import METRIC_NAMES, DepthMetrics, RoutedCounts
from ..inference import needs_labels, tta_depth
from ..losses import domain_loss, grad_l1_loss, metric_silog, silog_loss
from ..metric_keys import DEPTH_METRICS, domain_key
from .base import DepthModule


class MetricDepthModule(DepthModule):
    """``flip_tta``: flip test-time augmentation in ``test_step`` / ``predict_step`` (on by default).
    After ``Trainer.test``, ``test_results`` holds ``{set name: {metric: float, ...}}``."""

    def __init__(self, cfg: Any, model: Optional[torch.nn.Module] = None) -> None:
        super().__init__(cfg, model)
        self.flip_tta = True
        self.test_sets: List[Any] = []
        self.test_results: Dict[str, Dict[str, Any]] = {}
        self.domain_names = [b.name for b in self.cfg.model.bins]
        self.val_metrics = torch.nn.ModuleDict({
            b.name: DepthMetrics(float(b.min_depth), float(b.max_depth)) for b in self.cfg.model.bins
        })
        self.empty_batches = 0

    def _labels(self, batch: Dict[str, Any]):
        labels = batch.get("domain_label")
        if labels is None or (labels < 0).any():
            return None
        return labels

    def forward(self, image: torch.Tensor, domain=None):
        return self.model(image, domain=domain)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        labels = self._labels(batch)
        out = self.model(batch["image"], domain=labels)
        loss_cfg = self.cfg.loss
        silog, n_valid = metric_silog(loss_cfg, out.metric_depth, batch["depth"], batch["valid"])
        loss = loss_cfg.w_silog * silog
        bs = batch["image"].shape[0]
        self.log("train/silog", silog, prog_bar=True, batch_size=bs)
        if int(n_valid) == 0:
            self.empty_batches += 1
            self.log("train/empty_batches", float(self.empty_batches), batch_size=bs)
        if loss_cfg.w_grad > 0:
            pred = F.interpolate(out.metric_depth, size=batch["depth"].shape[-2:], mode="bilinear", align_corners=True)
            grad = grad_l1_loss(pred, batch["depth"], batch["valid"])
            loss = loss + loss_cfg.w_grad * grad
            self.log("train/grad_l1", grad, batch_size=bs)
        if out.domain_logits is not None and labels is not None and self.cfg.model.router.type == "trained":
            dom = domain_loss(out.domain_logits, labels)
            loss = loss + loss_cfg.w_domain * dom
            self.log("train/domain_loss", dom, batch_size=bs)
            acc = (out.domain_logits.argmax(1) == labels).float().mean()
            self.log("train/router_accuracy", acc, batch_size=bs)
        self.log("train/loss", loss, batch_size=bs)
        return loss

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, Any]:
        labels = self._labels(batch)
        out = self.model(batch["image"], domain=labels if needs_labels(self.model) else None)
        gt, valid = batch["depth"], batch["valid"]
        pred = F.interpolate(out.metric_depth, size=gt.shape[-2:], mode="bilinear", align_corners=True)
        silog, _ = silog_loss(pred, gt, valid, beta=self.cfg.loss.silog_beta)
        self.log("val/silog_loss", silog, batch_size=gt.shape[0], sync_dist=True)
        for name, metric in self.val_metrics.items():
            sel = [i for i, d in enumerate(batch["domain"]) if d == name]
            if sel:
                idx = torch.tensor(sel, device=gt.device)
                metric.update(pred.index_select(0, idx), gt.index_select(0, idx))
        return {
            "image": batch["image"], "depth": gt, "valid": valid, "pred": pred, "bin_centers": out.bin_centers,
            "domain_names": self.domain_names, "domain_label": labels, "domain_index": out.domain_index,
            "min_depth": batch["min_depth"], "max_depth": batch["max_depth"], "dataset": batch["dataset"],
            "domain": batch["domain"],
        }

    def on_validation_epoch_end(self) -> None:
        results = {}
        for name, metric in self.val_metrics.items():
            # domain absent from the validation data; under DDP every rank computes (the sync is a
            # collective: a rank whose shard lacks the domain must still take part)
            world = self._trainer.world_size if self._trainer is not None else 1
            if metric.update_count == 0 and world == 1:
                continue
            values = metric.compute()
            metric.reset()
            if int(values["n_images"]) == 0:
                continue
            single = len(self.domain_names) == 1  # its own keys are the headline (shown in the progress bar)
            for key in DEPTH_METRICS:
                results.setdefault(key, []).append(values[key])
                self.log(domain_key(name, key), values[key].float(), sync_dist=False,
                         prog_bar=single and key in ("abs_rel", "a1"))
        if len(self.domain_names) > 1:  # headline: mean over the domains seen (one domain: its keys only)
            for key, vals in results.items():
                self.log(f"val/{key}", torch.stack(vals).float().mean(), prog_bar=key in ("abs_rel", "a1"))

    # ------------------------------------------------------------------ evaluation protocol
    def heads(self) -> List[str]:
        """The model's head names (a loaded model's own, else the config's bins)."""
        return list(getattr(self.model, "domains", None) or self.domain_names)

    def setup(self, stage: str) -> None:
        """``test`` / ``predict``: one :class:`DepthMetrics` (the set's range and crop) and one
        routing counter per evaluation set of the DataModule (``trainer.datamodule.sets``)."""
        if stage not in ("test", "predict"):
            return
        sets = getattr(getattr(self.trainer, "datamodule", None), "sets", None)
        if sets is None:
            raise ValueError("test / predict need an evaluation DataModule (data_modules.evaluation.EvalDataModule)")
        self.test_sets = list(sets)
        self.test_metrics = torch.nn.ModuleList([DepthMetrics(s.min_depth, s.max_depth, s.crop) for s in sets])
        self.test_routes = torch.nn.ModuleList([RoutedCounts(64) for _ in sets])

    def _set_label(self, dataloader_idx: int) -> Optional[int]:
        heads = self.heads()
        domain = self.test_sets[dataloader_idx].domain
        return heads.index(domain) if domain in heads else None

    def _tta(self, group: Dict[str, Any], dataloader_idx: int):
        return tta_depth(self.model, group["image"], self.flip_tta, self._set_label(dataloader_idx))

    def test_step(self, batch: List[Dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> Dict[str, Any]:
        """Flip-TTA depth at network resolution per group of one size, scored by the set's
        :class:`DepthMetrics` (bilinear to the GT size, clamp, crop, per-image averages)."""
        preds = []
        for group in batch:
            pred, index = self._tta(group, dataloader_idx)
            if index is not None:
                self.test_routes[dataloader_idx].update(index)
            self.test_metrics[dataloader_idx].update(pred, group["depth"], group.get("valid"))
            preds.append(pred)
        return {"pred": preds}

    def on_test_epoch_end(self) -> None:
        heads = self.heads()
        self.test_results = {}
        for s, metric, routes in zip(self.test_sets, self.test_metrics, self.test_routes):
            values = metric.compute()  # collective under DDP: every rank takes part
            counts = routes.compute().tolist()
            metric.reset()
            routes.reset()
            res: Dict[str, Any] = {k: float(values[k]) for k in METRIC_NAMES}
            res["n_images"], res["n_empty"] = int(values["n_images"]), int(values["n_empty"])
            last = max((i for i, c in enumerate(counts) if c), default=-1)
            res["routed"] = counts[: last + 1]
            res.update({"n_samples": len(s.dataset), "crop": s.crop, "min_depth": s.min_depth,
                        "max_depth": s.max_depth, "domain": s.domain, "flip": self.flip_tta, "heads": heads})
            self.test_results[s.name] = res
            for k in METRIC_NAMES:
                self.log(f"test/{s.name}/{k}", values[k].float(), sync_dist=True)

    def predict_step(self, batch: List[Dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> List[Dict]:
        """Per sample: ``index`` in its set and ``depth`` (H, W), the flip-TTA prediction upsampled
        (bilinear) to its ground truth's size and clamped to the set's range."""
        from ..evaluation.protocol import clamp_prediction

        s = self.test_sets[dataloader_idx]
        out = []
        for group in batch:
            pred, _ = self._tta(group, dataloader_idx)
            pred = F.interpolate(pred.float(), size=group["depth"].shape[-2:], mode="bilinear", align_corners=True)
            pred = clamp_prediction(pred, s.min_depth, s.max_depth)
            out += [{"index": int(i), "depth": p[0]} for i, p in zip(group["index"], pred)]
        return out
