"""Read the secrets that content scanning found (``index --scan``).

``layerslayer secrets`` answers with one :class:`Secret` per distinct value
(fingerprint): its detector, how many images and layers hold it, where it
was first seen and whether it is visible in some image's final filesystem
(or config) or only in files a later layer deleted. ``where=True`` lists
every :class:`Location`. Reads the ``finding_locations`` view (see
``layerslayer.migrations``), which starts from the findings, so the answer
costs in proportion to the findings asked for, not to the files indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .errors import UsageError
from .query import resolve_images

__all__ = ["Location", "Secret", "list_secrets", "scanned_anything", "STATES"]

#: What ``--ghost`` / ``--visible`` select (a secret's ``state``).
STATES = ("visible", "ghost", "hidden")


@dataclass
class Location:
    image: str
    platform: str | None
    source: str  # file | env | label | history
    location: str  # a path, a variable or label name, a build step's position
    layer_position: int | None
    layer_digest: str | None
    line: int | None
    state: str  # visible | deleted | overwritten | config

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Secret:
    fingerprint: str
    detector: str
    preview: str
    images: int
    layers: int
    state: str  # visible | ghost (only in deleted files) | hidden (only in overwritten files)
    first_image: str
    first_location: str
    value: str | None = None
    locations: list[Location] = field(default_factory=list)

    def as_dict(self, where: bool = False) -> dict:
        data = asdict(self)
        if where:
            data["locations"] = [loc.as_dict() for loc in self.locations]
        else:
            del data["locations"]
        return data


def list_secrets(db, *, images: Sequence[str] = (), detectors: Sequence[str] = (), state: str | None = None,
                 where: bool = False) -> list[Secret]:
    """Distinct secrets found in the index, most widespread first.

    ``images`` narrows to secrets held by those images (references as
    ``find --image`` takes them), ``detectors`` to those detector names;
    ``state`` is ``visible``, ``ghost`` or ``hidden``. Counts, states and
    locations are over the whole index (a secret of the image asked for
    that other images hold too says so)."""
    if state is not None and state not in STATES:
        raise UsageError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    # Imported here, for start-up speed: it compiles every detector.
    from .secretscan import DETECTORS

    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise UsageError(f"unknown detector {unknown[0]!r} (detectors: {', '.join(DETECTORS)})")
    conditions, params = [], []
    if images:
        ids = resolve_images(db, images)
        conditions.append(
            f"fingerprint IN (SELECT fingerprint FROM finding_locations WHERE image_id IN ({','.join('?' * len(ids))}))"
        )
        params += ids
    if detectors:
        conditions.append(f"detector IN ({','.join('?' * len(detectors))})")
        params += list(detectors)
    sql = (
        "SELECT fingerprint, detector, preview, value, image_id, image, platform, source, location, "
        "layer_position, layer_digest, line, state FROM finding_locations"
        + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        + " ORDER BY image_id, platform_id, source != 'file', layer_position, location, line"
    )
    grouped: dict[str, tuple[Secret, set, set]] = {}
    for fp, detector, preview, value, image_id, image, platform, source, location, position, digest, line, st in db.execute(sql, params):
        entry = grouped.get(fp)
        if entry is None:
            first = location if source == "file" else f"{source} {location}"
            entry = grouped[fp] = (Secret(fp, detector, preview, 0, 0, "", image, first, value), set(), set())
        secret, image_ids, layers = entry
        image_ids.add(image_id)
        if digest:
            layers.add(digest)
        if secret.value is None and value is not None:
            secret.value = value
        secret.locations.append(Location(image, platform, source, location, position, digest, line, st))
    out = []
    for secret, image_ids, layers in grouped.values():
        states = {loc.state for loc in secret.locations}
        secret.state = "visible" if states & {"visible", "config"} else "ghost" if "deleted" in states else "hidden"
        secret.images, secret.layers = len(image_ids), len(layers)
        if state is not None and secret.state != state:
            continue
        if not where:
            secret.locations = []
        out.append(secret)
    out.sort(key=lambda s: (-s.images, -s.layers, s.detector, s.first_image, s.first_location))
    return out


def scanned_anything(db) -> bool:
    "Whether any layer or config of the index was scanned (an empty answer then means: no secrets)."
    return bool(db.execute(
        "SELECT EXISTS (SELECT 1 FROM layers WHERE scanned IS NOT NULL) OR EXISTS (SELECT 1 FROM findings)"
    ).fetchone()[0])
