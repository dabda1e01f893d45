"""Personas in and out of other tools' formats: which format a file is, one result per file, exports.

`import_files` reads any mix of character cards (V1/V2/V3 as JSON, PNG or `.charx`), LobeHub
agents, NextChat masks, Open WebUI model exports, LibreChat `modelSpecs` YAML and this app's own
persona YAML. Each file gives a `FileImport`: its personas, each with a report (what was mapped,
what was dropped and why, the system message's tokens against the budget), or one error that says
what is wrong with it; a bad file never stops the others. `export_persona` writes a V3 card (JSON,
or PNG with the card in its picture) or a LobeHub agent.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

from core.errors import PersonaFileError
from core.notices import Notice
from core.personas.agent_formats import (
    import_librechat,
    import_lobehub,
    import_nextchat,
    import_open_webui,
    is_lobehub,
    is_nextchat,
    is_open_webui,
    lobehub_agent,
)
from core.personas.avatars import PNG_SIGNATURE
from core.personas.character_cards import (
    V1_KEYS,
    card_json,
    card_png,
    import_card_json,
    import_card_png,
    import_charx,
)
from core.personas.mapping import (
    DEFAULT_USER_NAME,
    MAX_IMPORT_BYTES,
    ImportedPersona,
    ImportProblem,
    ImportReport,
    Mapped,
    measure,
    not_utf8,
    persona_id_from,
    read_json,
)
from core.personas.persona import FileProblem, Persona, PersonaFile, parse_persona, read_yaml

__all__ = [
    "EXPORT_FILES",
    "EXPORT_FORMATS",
    "IMPORT_SUFFIXES",
    "MAX_IMPORT_BYTES",
    "ExportFormat",
    "ExportedFile",
    "FileImport",
    "export_bytes",
    "export_persona",
    "import_file",
    "import_files",
    "read_import_file",
]

ExportFormat = Literal["card-v3", "card-png", "lobehub"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = get_args(ExportFormat)
IMPORT_SUFFIXES: Final = ("json", "png", "charx", "yaml", "yml")
#: A whole librechat.yaml (endpoints, interface, …) holds far more values than a persona file.
MAX_YAML_NODES: Final = 50_000
_ZIP_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class FileImport:
    """One file's outcome: the personas it gave (each with its report), or the error that stopped it."""

    file_name: str
    personas: list[ImportedPersona] = field(default_factory=list)
    error: PersonaFileError | None = None


@dataclass(frozen=True)
class ExportedFile:
    file_name: str
    mime: str
    data: bytes


def import_file(file_name: str, data: bytes, *, user_name: str = DEFAULT_USER_NAME) -> FileImport:
    """The personas in one file; never raises for what the file holds."""
    try:
        return FileImport(file_name, _personas_in(file_name, data, user_name))
    except ImportProblem as problem:
        return FileImport(file_name, error=PersonaFileError(file_name, list(problem.problems)))
    except PersonaFileError as error:
        return FileImport(file_name, error=PersonaFileError(file_name, list(error.problems)))
    except Exception as exc:  # a reader's bug must cost one file, never the others
        return FileImport(
            file_name,
            error=PersonaFileError(file_name, f"could not be imported: {type(exc).__name__}: {exc}"),
        )


def import_files(
    files: Iterable[tuple[str, bytes]],
    *,
    user_name: str = DEFAULT_USER_NAME,
    taken_ids: Iterable[str] = (),
) -> list[FileImport]:
    """Each file's personas, with ids made unique across the files and against `taken_ids`."""
    taken = set(taken_ids)
    results = []
    for file_name, data in files:
        result = import_file(file_name, data, user_name=user_name)
        unique = []
        for imported in result.personas:
            persona_id, number = imported.persona.id, 2
            while persona_id in taken:
                suffix = f"-{number}"
                persona_id, number = imported.persona.id[: 64 - len(suffix)] + suffix, number + 1
            taken.add(persona_id)
            persona = imported.persona.model_copy(update={"id": persona_id})
            unique.append(ImportedPersona(persona, imported.report))
        results.append(FileImport(result.file_name, unique, result.error))
    return results


def read_import_file(path: str | Path) -> bytes:
    """A file's bytes for `import_file`, its size checked before it is read."""
    target = Path(path)
    try:
        info = os.stat(target)
        if not stat.S_ISREG(info.st_mode):
            raise ImportProblem(Notice(code="import_not_regular"))
        if info.st_size > MAX_IMPORT_BYTES:
            raise ImportProblem(_import_too_big(info.st_size))
        with target.open("rb") as handle:
            data = handle.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise PersonaFileError(target.name, f"cannot be read: {exc.strerror}") from None
    except ImportProblem as problem:
        raise PersonaFileError(target.name, list(problem.problems)) from None
    return data


def _import_too_big(size: int) -> Notice:
    return Notice(
        code="import_too_large",
        fields={"size": f"{size / 1024 / 1024:.1f}", "limit": MAX_IMPORT_BYTES // 1024 // 1024},
    )


def _personas_in(file_name: str, data: bytes, user_name: str) -> list[ImportedPersona]:
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportProblem(_import_too_big(len(data)))
    if not data.strip():
        raise ImportProblem(Notice(code="import_empty"))
    suffix = Path(file_name).suffix.lower().lstrip(".")
    if data.startswith(PNG_SIGNATURE) or suffix == "png":
        return [import_card_png(file_name, data, user_name=user_name)]
    if data.startswith(_ZIP_SIGNATURE) or suffix == "charx":
        return [import_charx(file_name, data, user_name=user_name)]
    if suffix in ("yaml", "yml") or data.lstrip()[:1] not in (b"{", b"["):
        return _yaml_personas(file_name, data, user_name)
    value = read_json(data)
    if isinstance(value, dict) and (
        "spec" in value or ("name" in value and any(k in value for k in V1_KEYS))
    ):
        return [import_card_json(file_name, data, user_name=user_name)]
    if is_lobehub(value):
        return import_lobehub(file_name, value, user_name=user_name)
    if is_nextchat(value):
        return import_nextchat(file_name, value, user_name=user_name)
    if is_open_webui(value):
        return import_open_webui(file_name, value, user_name=user_name)
    raise ImportProblem(Notice(code="import_unknown_json"))


def _yaml_personas(file_name: str, data: bytes, user_name: str) -> list[ImportedPersona]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportProblem(not_utf8(data, exc, Notice(code="import_what_file"))) from None
    try:
        value = read_yaml(text, max_nodes=MAX_YAML_NODES)
    except FileProblem as problem:
        raise ImportProblem(Notice(code="import_not_yaml", fields={"problem": problem.problems})) from None
    if _is_persona_yaml(value):
        persona_id = persona_id_from(Path(file_name).stem)
        persona = parse_persona(text, persona_id, name=file_name)
        report = ImportReport(file_name, Notice(code="import_format_persona_yaml"))
        report.mapped = [Mapped(name, name) for name in PersonaFile.model_fields if name in value]
        measure(report, persona)
        return [ImportedPersona(persona, report)]
    return import_librechat(file_name, value, user_name=user_name)


def _is_persona_yaml(value: object) -> bool:
    """This app's persona file (checked, with its line numbers, as one) rather than LibreChat's."""
    librechat = {"modelSpecs", "list", "preset", "endpoints", "version"}
    return (
        isinstance(value, dict)
        and not librechat & set(value)
        and bool(set(PersonaFile.model_fields) & set(value))
    )


# --- Export ----------------------------------------------------------------------------------


#: Each export format's file name (after the persona id) and media type.
EXPORT_FILES: Final[dict[ExportFormat, tuple[str, str]]] = {
    "card-v3": (".card.json", "application/json"),
    "card-png": (".png", "image/png"),
    "lobehub": (".lobehub.json", "application/json"),
}


def export_persona(persona: Persona, export_format: ExportFormat) -> ExportedFile:
    """The persona as a file of `export_format`: card-v3 (JSON), card-png or lobehub (JSON)."""
    if export_format not in EXPORT_FILES:
        raise ValueError(f"unknown export format {export_format!r}; one of {', '.join(EXPORT_FORMATS)}")
    suffix, mime = EXPORT_FILES[export_format]
    return ExportedFile(persona.id + suffix, mime, export_bytes(persona, export_format))


def export_bytes(persona: Persona, export_format: ExportFormat) -> bytes:
    """The exported file's content (a download button calls this only when clicked)."""
    if export_format == "card-v3":
        return card_json(persona)
    if export_format == "card-png":
        return card_png(persona)
    return json.dumps(lobehub_agent(persona), ensure_ascii=False, indent=2).encode()
