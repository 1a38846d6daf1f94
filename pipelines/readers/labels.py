"""Labels: from a sidecar (`labels.csv` in the object's folder, or `<name>.json` /
`<stem>.json` beside it with a "label" field), else from the folder (`cats/001.png` ->
`cats`), then normalized through the label map. Sidecars are not inputs themselves."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Callable

from .source import RawObject

LABELS_CSV = "labels.csv"


def _sidecar_targets(key: str) -> tuple[str, ...]:
    """Keys a `.json` file can be the sidecar of: `a.png.json` -> `a.png`; `a.json` -> `a.*`."""
    if not key.endswith(".json"):
        return ()
    return (key[: -len(".json")],)


def is_sidecar(key: str, keys: set[str], stems: dict[str, str]) -> bool:
    """Whether `key` is a label sidecar of another listed object."""
    if posixpath.basename(key) == LABELS_CSV:
        return True
    if not key.endswith(".json"):
        return False
    base = key[: -len(".json")]
    return base in keys or base in stems


def normalize_label(label: str | None, label_map: dict[str, str], lowercase: bool) -> str | None:
    """Strip, optionally lowercase, then map through `label_map`; empty -> None."""
    if label is None:
        return None
    label = str(label).strip()
    if lowercase:
        label = label.lower()
    label = label_map.get(label, label)
    return label or None


class LabelResolver:
    """Resolves the label of each object of a listing (reads the sidecars once)."""

    def __init__(
        self,
        objects: list[RawObject],
        read: Callable[[str], bytes],
        *,
        folder_labels: bool,
        label_map: dict[str, str],
        lowercase: bool,
    ):
        self.folder_labels = folder_labels
        self.label_map = label_map
        self.lowercase = lowercase
        keys = {o.key for o in objects}
        # `a.json` is the sidecar of `a.<ext>` when exactly that stem exists beside it
        self.stems: dict[str, str] = {}
        for k in keys:
            stem, ext = posixpath.splitext(k)
            if ext and ext != ".json":
                self.stems.setdefault(stem, k)
        self.sidecars = {k for k in keys if is_sidecar(k, keys, self.stems)}
        self.csv_labels: dict[str, str] = {}
        self.json_labels: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        for k in sorted(self.sidecars):
            try:
                data = read(k).decode("utf-8")
                if posixpath.basename(k) == LABELS_CSV:
                    folder = posixpath.dirname(k)
                    for row in csv.DictReader(io.StringIO(data)):
                        name = (
                            row.get("filename") or row.get("file") or row.get("name") or ""
                        ).strip()
                        if name and row.get("label") is not None:
                            self.csv_labels[posixpath.join(folder, name) if folder else name] = row[
                                "label"
                            ].strip()
                else:
                    obj = json.loads(data)
                    base = k[: -len(".json")]
                    target = base if base in keys else self.stems[base]
                    if isinstance(obj, dict) and obj.get("label") is not None:
                        self.json_labels[target] = str(obj["label"])
            except (UnicodeDecodeError, ValueError, KeyError, csv.Error) as e:
                self.errors[k] = f"unreadable label sidecar: {e}"

    def normalize(self, label: str | None) -> str | None:
        return normalize_label(label, self.label_map, self.lowercase)

    def label_of(self, key: str) -> str | None:
        if key in self.json_labels:
            return self.normalize(self.json_labels[key])
        if key in self.csv_labels:
            return self.normalize(self.csv_labels[key])
        if self.folder_labels:
            folder = posixpath.dirname(key)
            if folder:
                return self.normalize(posixpath.basename(folder))
        return None
