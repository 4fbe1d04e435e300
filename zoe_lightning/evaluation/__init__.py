"""Evaluation and use of trained models.

* :mod:`.protocol` -- the paper's crops, prediction clamp and flip TTA (plain PyTorch)
* :mod:`.sums`, :mod:`.metrics` -- per-image metric sums and the ``DepthMetrics`` torchmetrics Metric
* :mod:`.report` -- console / Markdown / W&B reports, mRID / mRIθ, panels
* :mod:`.evaluate` -- the ``eval`` command (``Trainer.test`` over an evaluation DataModule)
* :mod:`.predict`, :mod:`.pointcloud` -- the ``predict`` command and its output files
* :mod:`.export` -- the ``export`` command (ONNX)
* :mod:`.viz` -- colourised depth and figures (also used by the training callbacks)

Modules are imported on use: importing this package loads nothing heavy.
"""
