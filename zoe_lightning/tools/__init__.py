"""Tools around training: ``sweeps`` (run a W&B sweep file locally or as a SLURM array),
``compare`` (table and plots over runs) and ``slurm`` (sbatch scripts for one experiment)."""
