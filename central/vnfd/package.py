"""Reading a VNF package: a top-level descriptor file, a package folder or a CSAR zip.

The entry file is TOSCA-Metadata/TOSCA.meta's ``Entry-Definitions``; without a
TOSCA.meta, the one YAML file in the package root; without one there, the one YAML file
under ``Definitions/`` that no other file imports. Imports resolve relative to the
importing file and never leave the package (``../`` escapes, absolute paths and URLs
other than the standard SOL001 type files are refused). The standard
``etsi_nfv_sol001_common_types.yaml`` / ``etsi_nfv_sol001_vnfd_types.yaml`` are known by
name (a bare name, a path or an ETSI forge URL) and never read: the types they define are
built in (``central.vnfd.types``), so a package need not ship them.

Nothing but reading the package's own files happens here."""

from __future__ import annotations

import abc
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.vnfd import yamlmarks
from central.vnfd.errors import At, Problems
from central.vnfd.yamlmarks import Map, Seq

META = "TOSCA-Metadata/TOSCA.meta"
STANDARD_IMPORTS = frozenset(
    {"etsi_nfv_sol001_common_types.yaml", "etsi_nfv_sol001_vnfd_types.yaml"}
)
MAX_FILE_BYTES = 4 * 1024 * 1024  # a descriptor file larger than this is refused
MAX_FILES = 200  # YAML files loaded through imports
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SourceFile:
    """A loaded descriptor file: its package path and its marked YAML document."""

    name: str
    doc: Any


class Source(abc.ABC):
    """The files of a package, by POSIX path relative to its root."""

    def __init__(self, label: str, names: list[str]) -> None:
        self.label = label
        self.names = sorted(names)

    @abc.abstractmethod
    def read(self, name: str) -> bytes:
        """The bytes of ``name``."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """The size of ``name`` in bytes, without reading it."""


class FolderSource(Source):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        names = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                names.append(p.relative_to(self.root).as_posix())
        super().__init__(str(root), names)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size


class ZipSource(Source):
    def __init__(self, path: Path, zf: zipfile.ZipFile, names: list[str]) -> None:
        self.zf = zf
        super().__init__(str(path), names)

    def read(self, name: str) -> bytes:
        try:
            return self.zf.read(name)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            # a bad CRC, an encrypted member, an unknown compression method
            raise OSError(f"unreadable zip member: {exc}") from None

    def size(self, name: str) -> int:
        return self.zf.getinfo(name).file_size


def is_standard_import(ref: str) -> bool:
    """A reference to one of the standard SOL001 type files (bare name, path or URL)."""
    return posixpath.basename(ref.split("?", 1)[0]) in STANDARD_IMPORTS


def open_source(path: Path, problems: Problems) -> tuple[Source, str | None] | None:
    """The package's files and the entry file named by the caller (a file path), or
    None (with an error) when the path cannot be read as a package."""
    label = str(path)
    if not path.exists():
        problems.error(At(label), "no such file or directory")
        return None
    if path.is_dir():
        return FolderSource(path), None
    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            problems.error(At(label), f"not a readable zip (CSAR): {exc}")
            return None
        names = []
        for info in infos:
            if info.is_dir():
                continue
            normal = posixpath.normpath(info.filename)
            if info.filename.startswith("/") or normal.startswith("../") or normal == "..":
                problems.error(At(info.filename), "a zip member outside the package root (refused)")
                continue
            names.append(info.filename)
        if problems:
            return None
        return ZipSource(path, zf, names), None
    if path.suffix.lower() in YAML_SUFFIXES:
        # A lone descriptor file: its folder is the package (the CSAR layout's root when
        # the file sits in Definitions/, so '../Files/...' artifacts stay inside).
        parent = path.resolve().parent
        root = parent.parent if parent.name == "Definitions" else parent
        return FolderSource(root), path.resolve().relative_to(root).as_posix()
    problems.error(At(label), "expected a descriptor file (.yaml), a package folder or a CSAR zip")
    return None


def _meta_entry(source: Source, problems: Problems) -> str | None:
    at = At(META)
    try:
        text = source.read(META).decode("utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        problems.error(at, f"not readable as UTF-8 text: {exc}")
        return None
    entry = None
    for number, raw in enumerate(text.splitlines(), start=1):
        key, sep, value = raw.partition(":")
        if sep and key.strip() == "Entry-Definitions":
            entry = value.strip()
            at = At(META, "Entry-Definitions", number)
            break
    if not entry:
        problems.error(at, "expected an 'Entry-Definitions: <path of the top descriptor>' line")
        return None
    resolved = inside(entry, "", at, problems)
    if resolved is None:
        return None
    if resolved not in source.names:
        problems.error(at, f"Entry-Definitions names {entry!r}, which is not in the package")
        return None
    return resolved


def find_entry(source: Source, problems: Problems) -> str | None:
    """The top-level descriptor of a package (see the module docstring)."""
    if META in source.names:
        return _meta_entry(source, problems)
    root_yaml = [n for n in source.names if "/" not in n and n.endswith(YAML_SUFFIXES)]
    if len(root_yaml) == 1:
        return root_yaml[0]
    if len(root_yaml) > 1:
        problems.error(
            At(source.label),
            "no TOSCA-Metadata/TOSCA.meta and several YAML files in the package root "
            f"({', '.join(root_yaml)}): expected exactly one, or a TOSCA.meta naming it",
        )
        return None
    defs = [
        n
        for n in source.names
        if n.startswith("Definitions/") and n.endswith(YAML_SUFFIXES) and not is_standard_import(n)
    ]
    imported: set[str] = set()
    for name in defs:
        doc = _quiet_load(source, name)
        for ref in _import_refs(doc):
            imported.add(posixpath.normpath(posixpath.join(posixpath.dirname(name), ref)))
    tops = [n for n in defs if n not in imported]
    if len(tops) == 1:
        return tops[0]
    problems.error(
        At(source.label),
        "expected a TOSCA-Metadata/TOSCA.meta with Entry-Definitions, one YAML file in "
        "the package root, or one top-level YAML file in Definitions/"
        + (f" (found {', '.join(tops)})" if tops else " (found none)"),
    )
    return None


def _quiet_load(source: Source, name: str) -> Any:
    try:
        if source.size(name) > MAX_FILE_BYTES:
            return None
        return yamlmarks.load(source.read(name))
    except (yamlmarks.YamlSyntaxError, OSError):
        return None


def _import_refs(doc: Any) -> list[str]:
    refs = []
    if isinstance(doc, dict) and isinstance(doc.get("imports"), list):
        for item in doc["imports"]:
            ref = _import_ref(item)
            if isinstance(ref, str) and not is_standard_import(ref):
                refs.append(ref)
    return refs


def _import_ref(item: Any) -> str | None:
    """``- file.yaml``, ``- file: file.yaml`` or ``- name: {file: file.yaml}``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("file"), str):
            return item["file"]
        if len(item) == 1:
            (value,) = item.values()
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("file"), str):
                return value["file"]
    return None


def inside(ref: str, base_dir: str, at: At, problems: Problems) -> str | None:
    """``ref`` (relative to ``base_dir``) as a path inside the package, or None with an
    error when it is absolute, a URL, or escapes the package root."""
    if "://" in ref:
        problems.error(at, f"{ref!r}: only files inside the package can be imported, not URLs")
        return None
    if ref.startswith("/") or (len(ref) > 1 and ref[1] == ":"):
        problems.error(at, f"{ref!r}: an absolute path; expected a path inside the package")
        return None
    joined = posixpath.normpath(posixpath.join(base_dir, ref))
    if joined == ".." or joined.startswith("../"):
        problems.error(at, f"{ref!r} points outside the package root (refused)")
        return None
    return joined


def load_files(source: Source, entry: str, problems: Problems) -> list[SourceFile]:
    """The entry file and everything it imports (depth first, each file once)."""
    loaded: dict[str, SourceFile] = {}

    def visit(name: str, at: At) -> None:
        if name in loaded:
            return
        if len(loaded) >= MAX_FILES:
            problems.error(at, f"more than {MAX_FILES} descriptor files imported")
            return
        if name not in source.names:
            problems.error(at, f"imports {name!r}, which is not in the package")
            return
        if source.size(name) > MAX_FILE_BYTES:
            problems.error(At(name), f"larger than {MAX_FILE_BYTES} bytes (refused)")
            return
        try:
            doc = yamlmarks.load(source.read(name))
        except yamlmarks.YamlSyntaxError as exc:
            problems.error(At(name, "", exc.line), str(exc))
            return
        except OSError as exc:
            problems.error(At(name), f"cannot read: {exc}")
            return
        loaded[name] = SourceFile(name, doc)
        imports = doc.get("imports") if isinstance(doc, dict) else None
        if imports is None:
            return
        iat = At(name, "imports", doc.line_of("imports") if isinstance(doc, Map) else None)
        if not isinstance(imports, list):
            problems.error(iat, f"expected a list of files, got {type(imports).__name__}")
            return
        for i, item in enumerate(imports):
            item_at = iat.item(i, imports.line_of(i) if isinstance(imports, Seq) else None)
            ref = _import_ref(item)
            if ref is None:
                problems.error(
                    item_at, "expected a file name, {file: NAME} or {NAME: {file: NAME}}"
                )
                continue
            if is_standard_import(ref):
                continue
            target = inside(ref, posixpath.dirname(name), item_at, problems)
            if target is not None:
                visit(target, item_at)

    visit(entry, At(entry))
    return list(loaded.values())
