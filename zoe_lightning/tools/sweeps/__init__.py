"""Sweeps: ``grid`` (the sweep file and its grid), ``runner`` (per-run state, local launcher),
``local`` (the ``sweep-local`` verb, SLURM job arrays) and ``sweep_run`` (the ``sweep-run`` verb,
the program a sweep file's ``command:`` runs)."""
