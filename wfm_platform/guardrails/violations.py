"""The violation log: every block, appended durably as one JSON line in the object store.

Layout: {root}/{prefix}/{YYYY-MM-DD}.jsonl (UTC day), one line per block:
    {"time", "source", "stage", "stages", "reasons", "scores", "prompt_sha256", "prompt"?}
The raw prompt is only written when `store_raw_prompt` is set; its sha256 always is (to count repeats
and match reports without keeping the text).

Local (file://) roots append with O_APPEND + fsync under a file lock, so concurrent writers never
lose or interleave lines. Object stores (s3/gs/az) cannot append: the day file is re-read and written
whole (one PUT), serialized within this process only; concurrent writers from several processes to
one remote day file can drop a line, so give each writer its own `prefix` there.

If a Catalog is given, each block also becomes a row of a `violations` LanceDB table in it (created
here with lancedb directly: the clip Catalog has no such table).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from datetime import datetime, timezone
from typing import Any

from ..storage.objectstore import ObjectStore
from .verdict import Verdict

log = logging.getLogger(__name__)

VIOLATIONS_TABLE = "violations"


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class ViolationLog:
    def __init__(self, store: ObjectStore | str | os.PathLike, *, prefix: str = "guardrails/violations",
                 store_raw_prompt: bool = False, catalog: Any | None = None):
        self.store = store if isinstance(store, ObjectStore) else ObjectStore(store)
        self.prefix = prefix.strip("/")
        self.store_raw_prompt = store_raw_prompt
        self.catalog = catalog
        self._lock = threading.Lock()

    def day_key(self, when: datetime) -> str:
        return f"{self.prefix}/{when.strftime('%Y-%m-%d')}.jsonl"

    def record(self, item: str, verdict: Verdict, *, source: str = "pre", when: datetime | None = None) -> dict:
        """Append one line for a blocked verdict; returns the record written."""
        when = when or datetime.now(timezone.utc)
        blocking = [r for r in verdict.stage_results if not r.get("allowed", True)]
        rec: dict[str, Any] = {
            "time": when.isoformat(),
            "source": source,
            "stage": blocking[0]["stage"] if blocking else None,
            "stages": [r["stage"] for r in blocking],
            "reasons": list(verdict.reasons),
            "scores": {k: round(float(v), 6) for k, v in verdict.scores.items()},
            "prompt_sha256": prompt_sha256(item),
        }
        if self.store_raw_prompt:
            rec["prompt"] = item
        line = (json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        self._append(self.day_key(when), line)
        if self.catalog is not None:
            self._catalog_row(rec)
        return rec

    def _append(self, key: str, line: bytes) -> None:
        with self._lock:
            if self.store.is_plain_local:
                path = self.store.local_path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # other processes appending to the same day file
                    os.write(fd, line)  # one write of one whole line
                    os.fsync(fd)  # durable before the caller is told "blocked"
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            old = self.store.read_bytes(key) if self.store.exists(key) else b""
            self.store.write_bytes(key, old + line)

    def _catalog_row(self, rec: dict) -> None:
        import pyarrow as pa

        db = getattr(self.catalog, "_db", None)
        if db is None:
            import lancedb

            db = lancedb.connect(str(self.catalog.uri).removeprefix("file://"))
        schema = pa.schema([
            pa.field("time", pa.timestamp("us", tz="UTC")), pa.field("source", pa.string()),
            pa.field("stage", pa.string()), pa.field("reasons", pa.string()),
            pa.field("scores", pa.string()), pa.field("prompt_sha256", pa.string()),
            pa.field("prompt", pa.string()),
        ])
        table = db.create_table(VIOLATIONS_TABLE, schema=schema, exist_ok=True)
        table.add([{
            "time": datetime.fromisoformat(rec["time"]), "source": rec["source"], "stage": rec["stage"],
            "reasons": json.dumps(rec["reasons"]), "scores": json.dumps(rec["scores"]),
            "prompt_sha256": rec["prompt_sha256"], "prompt": rec.get("prompt"),
        }])

    def read(self, day: str | None = None) -> list[dict]:
        """The records of one day (YYYY-MM-DD; default today, UTC), or of every day if day == '*'."""
        keys = ([k for k in self.store.list(self.prefix) if k.endswith(".jsonl")] if day == "*"
                else [f"{self.prefix}/{day or datetime.now(timezone.utc).strftime('%Y-%m-%d')}.jsonl"])
        out: list[dict] = []
        for k in keys:
            if self.store.exists(k):
                out.extend(json.loads(ln) for ln in self.store.read_bytes(k).decode().splitlines() if ln.strip())
        return out
