"""The metadata of an index, as data: titles and descriptions of every table,
view and column people see, label columns, default sorts, facets and path
search. ``get_metadata`` serves it for the databases that are indexes.

Datasette 1.0 drops the ``get_metadata`` hook: its port reads this same data
from here and applies it once at ``startup`` (descriptions through
``datasette.set_*_metadata``; label columns, sorts, facets, search and hidden
tables as table configuration). The rest of the package is unchanged by it.
"""

from __future__ import annotations

from .databases import MIGRATIONS_TABLE, index_databases, is_index

CHECKPOINTS_METADATA = {
    "description": "Where inflating a big gzip layer can resume (see `layerslayer index --span`): "
                   "`cat --db`, `extract --db` and the view links read one file from the checkpoint before it.",
    "columns": {
        "layer_id": "The layer (layers.id).",
        "uncompressed": "Offset in the layer's tar stream where the checkpoint is.",
        "bits": "Offset in the compressed blob, in bits: a deflate block boundary.",
        "window": "The 32 KiB of tar stream before it (zlib-compressed), the dictionary inflating resumes with.",
    },
    "hidden": True,
}

FILE_VIEW_COLUMNS = {
    "image_id": "The image (images.id).",
    "image": "Image reference as indexed.",
    "platform_id": "The platform (platforms.id).",
    "platform": "os/architecture[/variant].",
    "layer_position": "Position of the layer in the platform's stack: 0 is the base layer.",
    "layer_id": "The layer (layers.id).",
    "layer_digest": "Digest of the layer blob that holds this entry.",
    "position": "Order of the entry inside its layer's tar stream.",
    "path_id": "The path (paths.id).",
    "path": "Path inside the image, without a leading /. Bytes that are not UTF-8 show as \\xNN.",
    "name": "Last component of the path.",
    "type": "dir, file, symlink, hardlink, char, block or fifo.",
    "size": "Content size in bytes (0 for anything but files).",
    "mode": "Permission bits, including setuid, setgid and sticky.",
    "uid": "Owner user id.",
    "gid": "Owner group id.",
    "uname": "Owner user name recorded in the tar.",
    "gname": "Owner group name recorded in the tar.",
    "mtime": "Modification time recorded in the tar (UTC).",
    "linkname": "Target of a symlink or hard link.",
    "devmajor": "Device major number (char and block devices).",
    "devminor": "Device minor number (char and block devices).",
    "whiteout": "1 for whiteout markers (.wh.NAME and .wh..wh..opq), which delete paths of lower layers.",
    "opaque": "1 for opaque-directory markers (.wh..wh..opq).",
    "offset": "Offset of the entry's tar header in the uncompressed layer stream.",
    "data_offset": "Offset of the entry's content in the uncompressed layer stream.",
    "path_bytes": "The exact bytes of the path when they are not valid UTF-8 (NULL otherwise).",
    "deleted_in_position": "Position of the layer that deleted this entry.",
    "deleted_by": "The whiteout or opaque marker (or replacing entry) that deleted it.",
    "recreated": "1 when that layer or a later one put a new entry at the same path.",
    "deletion": "How it was deleted: whiteout, opaque (directory) or replaced (its directory became a file).",
}


def _columns(*names: str, **overrides: str) -> dict:
    out = {name: FILE_VIEW_COLUMNS[name] for name in names if name in FILE_VIEW_COLUMNS}
    out.update(overrides)
    return out


_FILE_VIEW_NAMES = (
    "image_id", "image", "platform_id", "platform", "layer_position", "layer_id", "layer_digest", "position",
    "path_id", "path", "name", "type", "size", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname",
    "devmajor", "devminor", "whiteout", "opaque", "offset", "data_offset", "path_bytes",
)

FILE_FACETS = ["image", "platform", "type", {"extension": "name"}]


def _search(fts_pk: str) -> dict:
    return {"fts_table": "paths_fts", "fts_pk": fts_pk}


def database_metadata() -> dict:
    "Metadata of one index database (tables, views, columns)."
    tables = {
        "images": {
            "description": "One row per image reference indexed, with the digest it resolved to. "
                           "A tag that moved gets a new row; the old one stays as history.",
            "label_column": "reference",
            "sort_desc": "indexed_at",
            "columns": {
                "id": "Row id (platforms.image_id points here).",
                "registry": "Registry host (registry-1.docker.io for Docker Hub).",
                "repository": "Repository name (library/nginx).",
                "tag": "Tag as asked for (empty when indexed by digest).",
                "reference": "The reference in its familiar form.",
                "digest": "Digest of the manifest or index the reference resolved to.",
                "media_type": "Media type of that manifest or index.",
                "indexed_at": "When it was last indexed (UTC).",
            },
        },
        "platforms": {
            "description": "The manifests under each image: one per platform (attestation manifests are "
                           "recorded but never indexed).",
            "label_column": "platform",
            "facets": ["platform", "attestation"],
            "columns": {
                "id": "Row id.",
                "image_id": "The image.",
                "manifest_digest": "Digest of this platform's image manifest.",
                "media_type": "Media type of the manifest.",
                "os": "Operating system.",
                "architecture": "CPU architecture.",
                "variant": "CPU variant (v7, v8...).",
                "platform": "os/architecture[/variant].",
                "config_digest": "Digest of the image config blob.",
                "created": "Creation time from the image config.",
                "attestation": "1 for attestation manifests (build provenance, SBOM).",
            },
        },
        "history": {
            "description": "Build steps from each platform's image config, in order, aligned with the layers "
                           "they produced.",
            "columns": {
                "platform_id": "The platform.",
                "position": "Step number, from 0.",
                "created": "When the step ran.",
                "created_by": "The Dockerfile instruction or command.",
                "comment": "Comment recorded by the builder.",
                "empty_layer": "1 when the step made no layer (ENV, CMD, ARG...).",
                "layer_position": "Position of the layer the step produced.",
            },
        },
        "layers": {
            "description": "One row per layer blob, whichever images use it: downloaded and indexed once. "
                           "Open a layer to see the images that use it and the commands that fetch it.",
            "label_column": "digest",
            "sort_desc": "size",
            "facets": ["status", "media_type"],
            "columns": {
                "id": "Row id (entries.layer_id points here).",
                "digest": "Digest of the (compressed) blob.",
                "media_type": "Media type: tar, tar+gzip or tar+zstd.",
                "size": "Compressed size of the blob.",
                "urls": "Foreign layers: where the blob lives outside the registry.",
                "status": "pending, indexed, failed or foreign (never downloaded).",
                "listed_via": "stream (whole blob read), estargz-toc or zstd-chunked-toc (table of contents only).",
                "entries": "Number of tar entries indexed.",
                "bytes_read": "Bytes downloaded to list it.",
                "error": "Why indexing failed.",
                "indexed_at": "When it was indexed (UTC).",
                "note": "Something unusual but no error, e.g. pax global headers (applied to no entry, as the runtime does).",
                "scanned": "Size cap its files were scanned for secrets with (index --scan); empty: not scanned.",
            },
        },
        "layer_sources": {
            "description": "Registries and repositories each layer blob can be fetched from.",
            "columns": {"layer_id": "The layer.", "registry": "Registry host.", "repository": "Repository."},
        },
        "platform_layers": {
            "description": "The ordered layer stack of each platform.",
            "columns": {
                "platform_id": "The platform.",
                "position": "0 is the base layer.",
                "layer_id": "The layer.",
            },
        },
        "paths": {
            "description": "Every distinct path once. Search finds paths containing all the words typed "
                           "(trigram index: words need at least 3 characters).",
            "label_column": "path",
            **_search("id"),
            "columns": {
                "id": "Row id (entries.path_id points here).",
                "path": FILE_VIEW_COLUMNS["path"],
                "name": FILE_VIEW_COLUMNS["name"],
                "path_bytes": FILE_VIEW_COLUMNS["path_bytes"],
                "kinds": "1: seen as a directory, 2: as something else, 3: both.",
            },
        },
        "entries": {
            "description": "One row per tar entry of each layer (raw codes: the files view reads better).",
            "columns": {
                "layer_id": "The layer.",
                "position": "Order inside the layer's tar stream.",
                "path_id": "The path.",
                "type": "0 dir, 1 file, 2 symlink, 3 hardlink, 4 char, 5 block, 6 fifo.",
                **_columns("size", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname", "devmajor",
                           "devminor"),
                "whiteout": "0 ordinary entry, 1 whiteout marker, 2 opaque marker, 3 replaces a directory.",
                "offset": FILE_VIEW_COLUMNS["offset"],
                "header_size": "Bytes of tar headers before the content.",
            },
        },
        "files": {
            "description": "Every tar entry of every indexed layer, readable: path, type, size, mode, owner. "
                           "Filter by layer_id or layer_digest to list one layer.",
            **_search("path_id"),
            "facets": ["type", {"extension": "name"}],
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "image_files": {
            "description": "Files with the image, platform and layer position they appear in "
                           "(a shared layer's files appear under each image).",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "visible_files": {
            "description": "The final filesystem of each image: what a container started from it sees "
                           "(later layers applied, whiteouts and opaque directories honoured).",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES),
        },
        "ghost_files": {
            "description": "Files a later layer deleted: gone from the container, still inside the earlier "
                           "layer's blob. Recon gold.",
            **_search("path_id"),
            "facets": FILE_FACETS,
            "columns": _columns(*_FILE_VIEW_NAMES, "deleted_in_position", "deleted_by", "deletion", "recreated"),
        },
        "image_layers": {
            "description": "Each image's layers in order, with their status.",
            "facets": ["image", "platform", "status"],
            "columns": {
                "image_id": "The image (images.id).",
                "image": "Image reference.",
                "image_digest": "Digest the reference resolved to.",
                "platform_id": "The platform (platforms.id).",
                "layer_id": "The layer (layers.id).",
                "media_type": "Media type of the layer blob.",
                "platform": "os/architecture[/variant].",
                "position": "0 is the base layer.",
                "layer_digest": "Digest of the layer blob.",
                "size": "Compressed size.",
                "status": "pending, indexed, failed or foreign.",
                "entries": "Tar entries indexed.",
                "listed_via": "How it was listed.",
                "error": "Why indexing failed.",
            },
        },
        "layer_deletions": {
            "description": "Internal: what each whiteout, opaque marker or directory-replacing entry deletes "
                           "(used by ghost_files and visible_files).",
            "columns": {
                "layer_id": "The layer holding the deleting entry.",
                "position": "Its position in that layer's tar.",
                "kind": "1 whiteout marker, 2 opaque marker, 3 entry replacing a directory.",
                "marker_path": "Path of the deleting entry.",
                "target": "The path a whiteout deletes (with everything below it).",
                "prefix": "Paths starting with this are deleted.",
                "lo": "Lower bound of the deleted paths (for an index range scan).",
                "hi": "Upper bound of the deleted paths (exclusive).",
            },
        },
        "deletions": {
            "description": "Internal: what each whiteout, opaque marker or directory-replacing entry deletes, "
                           "kept as a table so ghost_files starts from the few deletions.",
            "hidden": True,
            "columns": {
                "layer_id": "The layer holding the deleting entry.",
                "position": "Its position in that layer's tar.",
                "kind": "1 whiteout marker, 2 opaque marker, 3 entry replacing a directory.",
                "target": "The path a whiteout deletes (with everything below it).",
                "prefix": "Paths starting with this are deleted.",
                "lo": "Lower bound of the deleted paths (for an index range scan).",
                "hi": "Upper bound of the deleted paths (exclusive).",
            },
        },
        "findings": {
            "description": "Secrets found by index --scan: in a file of a layer (layer_id, position, line) or in a "
                           "platform's config Env, Labels or build steps. Values only with --keep-values.",
            "facets": ["detector", "source"],
            "columns": {
                "id": "Finding id.",
                "layer_id": "The layer whose file holds it (file findings).",
                "position": "The entry's position in that layer's tar.",
                "platform_id": "The platform whose config or build steps hold it (config findings).",
                "source": "file, env, label or history.",
                "location": "Env variable or label name, or the build step's position (config findings).",
                "line": "Line in the file (1-based).",
                "detector": "What found it: private-key, aws-access-key-id, github-token, password-assignment...",
                "fingerprint": "SHA-256 of the value (32 hex digits): the same secret everywhere.",
                "preview": "First and last few characters of the value.",
                "value": "The value itself, only in an index built with --keep-values.",
            },
        },
        "finding_locations": {
            "description": "Each finding in each image platform that holds it, with its state: visible, deleted "
                           "(a ghost: gone from the container, still in the blob), overwritten, or config.",
            "facets": ["image", "detector", "state", "source"],
            "columns": {
                "finding_id": "The finding (findings.id).",
                "image_id": "The image (images.id).",
                "image": "Image reference.",
                "platform_id": "The platform (platforms.id).",
                "platform": "os/architecture[/variant].",
                "source": "file, env, label or history.",
                "layer_position": "Position of the layer in the image (file findings).",
                "layer_digest": "Digest of the layer blob (file findings).",
                "location": "Path of the file, Env variable or label name, or build step position.",
                "line": "Line in the file.",
                "detector": "What found it.",
                "fingerprint": "SHA-256 of the value (32 hex digits).",
                "preview": "First and last few characters of the value.",
                "value": "The value, only with --keep-values.",
                "state": "visible, deleted, overwritten or config.",
            },
        },
        "config": {
            "description": "Each platform's runtime config: user, working directory, entrypoint and command.",
            "columns": {
                "platform_id": "The platform (platforms.id).",
                "user": "User (config.User).",
                "working_dir": "WorkingDir.",
                "cmd": "Cmd, as a JSON array.",
                "entrypoint": "Entrypoint, as a JSON array.",
                "stop_signal": "StopSignal.",
            },
        },
        "config_env": {
            "description": "Each platform's Env, in order (values index --scan found secrets in are masked "
                           "unless --keep-values).",
            "facets": ["name"],
            "columns": {
                "platform_id": "The platform (platforms.id).",
                "position": "Order in Env.",
                "name": "Variable name.",
                "value": "Its value.",
            },
        },
        "config_labels": {
            "description": "Each platform's Labels.",
            "facets": ["name"],
            "columns": {"platform_id": "The platform (platforms.id).", "name": "Label key.", "value": "Label value."},
        },
        "config_ports": {
            "description": "Each platform's ExposedPorts.",
            "facets": ["port"],
            "columns": {"platform_id": "The platform (platforms.id).", "port": "Port and protocol, e.g. 8080/tcp."},
        },
        "checkpoints": CHECKPOINTS_METADATA,
        "paths_fts": {"hidden": True},
        MIGRATIONS_TABLE: {"hidden": True},
    }
    return {
        "description_html": (
            "Container image layers indexed by <code>layerslayer index</code>: every file of every "
            "layer, without the file contents. Start with a query below, or open "
            "<strong>images</strong> or <strong>layers</strong>."
        ),
        "tables": tables,
    }


INSTANCE_METADATA = {
    "title": "layerslayer",
    "description_html": (
        "Recon over container images: which images ship which files, what later layers deleted, "
        "and the commands that fetch any layer."
    ),
}


def plugin_metadata(datasette) -> dict:
    """What ``get_metadata`` answers: every index database's metadata, and the
    instance's title when every file database is an index."""
    names = index_databases(datasette)
    if not names:
        return {}
    shared = database_metadata()
    metadata = {"databases": {name: shared for name in names}}
    if all(is_index(datasette, name) for name, db in datasette.databases.items()
           if not db.is_memory and db.path):
        metadata.update(INSTANCE_METADATA)
    return metadata
