"""Read the records of an offline W&B run file (``run-<id>.wandb``) back, for tests.

The file is a sequence of protobuf ``Record`` messages in W&B's LevelDB-style log: a 7-byte file
header (``:W&B``, magic ``0xBEE1``, version), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC32, length, type: full / first / middle / last); a block tail shorter than a header is padding.
"""

import json
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path}: not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos: pos + HEADER])
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            yield rec


def read_run(run_dir: Path) -> Dict[str, Any]:
    """``{"run": RunRecord, "history": [{key: value}], "summary": {key: value}, "files": run_dir/files}``
    of an offline run folder; history / summary keys are the '/'-joined nested keys, values decoded JSON."""
    (wandb_file,) = Path(run_dir).glob("run-*.wandb")
    out: Dict[str, Any] = {"run": None, "history": [], "summary": {}, "files": Path(run_dir) / "files"}
    for rec in records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
        elif kind == "history":
            row: Dict[str, Any] = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def history_values(run: Dict[str, Any], key: str) -> List[Any]:
    return [row[key] for row in run["history"] if key in row]
