"""CatalogResource: the LanceDB catalog, optionally mirrored to MongoDB, and catalog metadata for assets.

    CatalogResource(uri=dg.EnvVar("WFM_CATALOG_URI"), mongo_uri=dg.EnvVar("WFM_MONGO_URI"))

Empty fields fall back to the environment (WFM_CATALOG_URI, WFM_MONGO_URI, WFM_MONGO_DB) and then to
<data>/catalog without a mirror, so a laptop needs no configuration. The MongoDB URI carries the
credentials: give it through dg.EnvVar so it never lands in run config or the UI.
"""

from __future__ import annotations

import os

import dagster as dg

from wfm_platform.curation.config import data_dir


class CatalogResource(dg.ConfigurableResource):
    """LanceDB clip catalog (a local folder or an object-store URI), mirrored to MongoDB when mongo_uri is set."""

    uri: str = ""
    mongo_uri: str = ""  # mongodb://user:pass@host:27017 ; use dg.EnvVar("WFM_MONGO_URI")
    mongo_db: str = ""

    def mirror(self):
        """The MongoMirror, or None when no MongoDB URI is configured."""
        uri = self.mongo_uri or os.environ.get("WFM_MONGO_URI", "")
        if not uri:
            return None
        from wfm_platform.storage.mirror import MongoMirror

        return MongoMirror(uri, self.mongo_db or os.environ.get("WFM_MONGO_DB", "wfm"))

    def catalog(self):
        from wfm_platform.storage.catalog import Catalog

        uri = self.uri or os.environ.get("WFM_CATALOG_URI", str(data_dir() / "catalog"))
        return Catalog(uri, mirror=self.mirror())


def catalog_metadata(catalog) -> dict[str, dg.MetadataValue]:
    """What an asset that wrote to the catalog can show in the UI: row counts, embedded/captioned clips,
    index coverage, the URI. Call after the write: `MaterializeResult(metadata={**m, **catalog_metadata(cat)})`."""
    s = catalog.stats()
    md: dict[str, dg.MetadataValue] = {
        "catalog_uri": dg.MetadataValue.path(s["uri"]) if "://" not in s["uri"] else dg.MetadataValue.url(s["uri"]),
        "catalog_rows": dg.MetadataValue.json(s["tables"]),
        "catalog_clips_embedded": dg.MetadataValue.int(s["clips_embedded"]),
        "catalog_clips_captioned": dg.MetadataValue.int(s["clips_captioned"]),
    }
    if s["indexes"]:
        rows = [
            f"| {i['table_name']}.{i['column']} | {i['index_type']} | {i['num_indexed_rows']} | "
            f"{i['num_unindexed_rows']} | {i.get('builds') or 0} | {i.get('optimizations') or 0} |"
            for i in s["indexes"]
        ]
        md["catalog_indexes"] = dg.MetadataValue.md(
            "| index | type | indexed | not yet indexed | builds | optimizations |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows)
        )
    if s["mirror"]:
        md["catalog_mirror"] = dg.MetadataValue.text(f"{s['mirror']['kind']} {s['mirror']['where']} db={s['mirror']['db']}")
    return md


CATALOG_RESOURCES = {"catalog": CatalogResource()}
