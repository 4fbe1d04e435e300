"""Read back an offline W&B run file (``run-<id>.wandb``) for the tests.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of LevelDB-log chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle,
4 last), each record a serialized ``wandb_internal_pb2.Record``; a block tail shorter than a
chunk header is zero padding. Installed wandb releases no longer ship a Python reader.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Dict, List

BLOCK = 32768
CHUNK_HEADER = 7


def records(path: Path) -> List[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    out, pending, pos = [], b"", 7
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # zero padding up to the next block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # preallocated / unwritten space
            break
        if pos + CHUNK_HEADER + length > len(data):  # still being written
            break
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def finished_records(path: Path, timeout: float = 60.0) -> List[Any]:
    """:func:`records` once the run's ``exit`` record is in the file (W&B's writer process may
    still be flushing when ``finish()`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def read_run(path: Path) -> Dict[str, Any]:
    """``run`` (the RunRecord: job_type, run_group, ...), ``config_updates`` (one dict per config
    record: the run's initial config first, then each later update), ``metrics`` (name -> the
    MetricRecord of define_metric), ``history_keys`` (every key logged), ``history`` (the logged
    rows, values decoded), ``summary`` (the last
    value of each summary key written explicitly)."""
    run, config_updates, metrics, history_keys, summary, history = None, [], {}, set(), {}, []
    for rec in finished_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
            config_updates.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.run.config.update})
        elif kind == "config":
            config_updates.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.config.update})
        elif kind == "metric":
            if rec.metric.name:
                metrics[rec.metric.name] = rec.metric
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item}
            history_keys |= set(row)
            history.append({k: json.loads(v) for k, v in row.items() if v})
        elif kind == "summary":
            for i in rec.summary.update:
                summary[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return {"run": run, "config_updates": config_updates, "metrics": metrics, "history_keys": history_keys,
            "summary": summary, "history": history}


def run_file(save_dir: Path) -> Path:
    """The one ``run-*.wandb`` file under ``save_dir``/wandb."""
    found = sorted(Path(save_dir).glob("wandb/*run-*/run-*.wandb"))
    assert len(found) == 1, found
    return found[0]
