"""The shipped experiment files (``NAME.yaml``, deltas over the schema in ``zoe_lightning/config.py``)
and W&B sweep files (``sweeps/``): package data, found by ``zoe_lightning.config.experiments_dir``."""
