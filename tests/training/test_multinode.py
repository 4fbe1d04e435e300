"""Multi-node training shown on one machine: 2 "nodes" x 1 process on localhost (gloo).

1. Lightning's own environment variables (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE,
   LOCAL_RANK) and ``trainer.num_nodes=2``: two processes started by hand, as a cluster launcher
   would start them on two hosts. The validation metrics gathered over both must equal a
   single-process validation of the same checkpoint.
2. The SLURM path: the script ``zoe-lightning slurm --nodes 2 --gpus 0 --dry-run`` writes is run
   with bash, with a stand-in ``srun`` that starts its 2 tasks with the variables SLURM sets
   (SLURM_PROCID, SLURM_NODEID, SLURM_NTASKS, SLURM_NODELIST, ...): both ranks must join one
   process group and the run must finish like the first.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .test_ddp import DDP_RUN, ROOT, _clean_env, _last_validation

TWO_NODES = [o for o in DDP_RUN if not o.startswith("trainer.devices=")] + ["trainer.devices=1",
                                                                             "trainer.num_nodes=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_validation(run: Path):
    import lightning as L
    from omegaconf import OmegaConf

    from data_modules.datamodule import build_datamodule
    from zoe_lightning.modules import MetricDepthModule

    cfg = OmegaConf.load(run / "config.yaml")
    cfg.trainer.devices, cfg.trainer.num_nodes = 1, 1
    module = MetricDepthModule.load_from_checkpoint(str(run / "checkpoints" / "last.ckpt"), weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    validated = trainer.validate(module, datamodule=build_datamodule(cfg), verbose=False)[0]
    return {k: float(v) for k, v in validated.items()}


def _check_run(output_dir: Path, log: str):
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log, log[-3000:]
    for rank in (0, 1):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log, log[-3000:]
    runs = list((output_dir / "quickstart_nk").iterdir())
    assert len(runs) == 1, runs  # both nodes write into one run directory
    run = runs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert log.count("finished in") == 1, log[-3000:]  # the report is rank 0's alone
    gathered = _last_validation(run / "csv" / "metrics.csv")
    single = _single_process_validation(run)
    for key in ("val/nyu/abs_rel", "val/nyu/rmse", "val/kitti/abs_rel", "val/abs_rel", "val/rmse"):
        assert key in gathered and key in single, (key, sorted(gathered), sorted(single))
        assert gathered[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_two_nodes_by_environment_variables_match_single_process_validation(tmp_path):
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        env = _clean_env()
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node), WORLD_SIZE="2",
                   LOCAL_RANK="0", ZOE_RUN_ID="two-nodes")
        log = open(tmp_path / f"node{node}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "zoe_lightning", "train", "quickstart_nk", *TWO_NODES,
                                        f"output_dir={tmp_path / 'out'}"], cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        codes = [p.wait(timeout=420) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    text = "\n".join((tmp_path / f"node{n}.log").read_text() for n in (0, 1))
    assert codes == [0, 0], text[-4000:]
    _check_run(tmp_path / "out", text)


FAKE_SRUN = """#!/usr/bin/env bash
# stand-in for srun: start SLURM_NTASKS tasks on this host, one per "node", with SLURM's variables
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=0 SLURM_NODEID=$i "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


@pytest.mark.slow
def test_slurm_script_for_two_nodes_starts_both_ranks(tmp_path):
    from zoe_lightning.cli import main

    out = tmp_path / "out"
    rc = main(["slurm", "quickstart_nk", "--nodes", "2", "--gpus", "0", "--dry-run", f"output_dir={out}",
               *[o for o in TWO_NODES if not o.startswith(("trainer.devices=", "trainer.num_nodes=",
                                                           "trainer.accelerator="))]])
    assert rc == 0
    scripts = sorted((out / "slurm").glob("*.sbatch"))
    assert len(scripts) == 1, scripts
    text = scripts[0].read_text()
    assert "#SBATCH --nodes=2" in text and "trainer.num_nodes=2" in text and "srun " in text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = _clean_env()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_JOB_ID="4242", SLURM_JOB_NAME="zoe-quickstart_nk",
               SLURM_NTASKS="2", SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="1", SLURM_NODELIST="localhost",
               SLURM_JOB_NODELIST="localhost", SLURM_CPUS_PER_TASK="1", MASTER_PORT=str(_free_port()))
    proc = subprocess.run(["bash", str(scripts[0])], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=480)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (out / "quickstart_nk" / "slurm-4242").is_dir()  # the run directory a requeue would find again
    _check_run(out, log)
