"""Read back what a W&B run logged, from its local `run-<id>.wandb` file (offline mode).

The file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version), then
LevelDB log-format records (32 KiB blocks; each record a 4-byte CRC, 2-byte little-endian
length, 1-byte type: 1 full, 2 first, 3 middle, 4 last), each payload one protobuf `Record`.
wandb ships the protobuf classes but no reader, so the few lines here are the reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def _payloads(data: bytes) -> list[bytes]:
    out, parts, pos = [], [], HEADER
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            parts = [chunk]
        elif kind == 3:
            parts.append(chunk)
        elif kind == 4:
            out.append(b"".join([*parts, chunk]))
    return out


def history(run_file: Path) -> list[dict[str, Any]]:
    """Every `run.log(...)` row of the run, in order, as {key: value}."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for payload in _payloads(Path(run_file).read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append({
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            })  # fmt: skip
    return rows
