"""What ``sse-embed`` writes, for every reader of it: metadata key, folder layout, record names.

The corpus job (:mod:`sse_onnx.corpus`) writes through these names and the search index's
command (:mod:`sse_onnx.index.cli`) reads through them, so neither application imports the
other. This module imports nothing heavier than ``re``: reading a folder's layout needs neither
pyarrow nor Ray.

An output is one Parquet file, or a folder (:data:`LAYOUT`):

- ``_job.json``: the job's parameters, written before the first shard (see
  :class:`sse_onnx.corpus.records.JobRecord`);
- ``part-000000000.parquet``, ...: shard ``k`` holds documents ``k * shard_docs`` to
  ``(k + 1) * shard_docs - 1`` in input order; a shard present under its own name is complete;
- ``_manifest.json``: model, variant, dim, precision, ranges and every shard (:data:`SHARD_KEYS`),
  then ``_SUCCESS`` (empty), written last: a folder without it is a job running or stopped.

Every Parquet file (the one file, or each shard) carries JSON under :data:`METADATA_KEY` in its
schema metadata: model, variant, dim, precision, normalized, text_fields, id_field, ranges and
sse_onnx_version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LAYOUT", "METADATA_KEY", "SHARD_KEYS", "DatasetLayout"]

#: Key of an output Parquet file's schema metadata: JSON naming the model, precision and ranges.
METADATA_KEY = b"sse_onnx"
#: ``format`` of _job.json and _manifest.json, and the version of their schema.
FORMAT_NAME = "sse-onnx-corpus"
FORMAT_VERSION = 1
#: What the manifest says of each shard, in this order.
SHARD_KEYS = ("file", "first_row", "rows", "bytes", "sha256")


@dataclass(frozen=True)
class DatasetLayout:
    """File names of an output folder."""

    # Names of files that are not shards start with "_" (and temporary ones with "."): Parquet
    # readers skip such files, so pyarrow.parquet.read_table(folder) reads the shards alone.
    job: str = "_job.json"
    manifest: str = "_manifest.json"
    success: str = "_SUCCESS"
    shard_prefix: str = "part-"
    shard_suffix: str = ".parquet"
    #: Digits of a shard index: 10^9 shards of 1,024 documents are 10^12 documents.
    shard_digits: int = 9

    def shard(self, index: int) -> str:
        """The file name of shard ``index``."""
        return f"{self.shard_prefix}{index:0{self.shard_digits}d}{self.shard_suffix}"

    def shard_index(self, name: str) -> int | None:
        """The index of a shard file name; ``None`` for any other name."""
        found = re.fullmatch(
            rf"{re.escape(self.shard_prefix)}(\d{{{self.shard_digits}}}){re.escape(self.shard_suffix)}",
            name,
        )
        return None if found is None else int(found.group(1))

    def is_temporary(self, name: str) -> bool:
        """A file a writer had not yet renamed when it stopped (``.<name>.tmp-<random>``)."""
        return name.startswith(".") and ".tmp-" in name


LAYOUT = DatasetLayout()
