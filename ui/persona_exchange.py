"""Personas in and out of other apps' formats, in the Personas view: several files at once, a
preview of each persona with its report (what was mapped, what was not and why, the system
message's tokens against the budget) before anything is saved, and export buttons per persona.

Reading and mapping live in `core.personas.formats`; this module only lays them out. Text that came
from a file is shown as text (`st.code`, table cells), never rendered as Markdown or HTML.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable
from typing import Any

import streamlit as st

from core.errors import DashboardError
from core.personas.formats import (
    EXPORT_FILES,
    EXPORT_FORMATS,
    IMPORT_SUFFIXES,
    MAX_IMPORT_BYTES,
    ExportFormat,
    FileImport,
    export_bytes,
    import_files,
)
from core.personas.mapping import DEFAULT_USER_NAME
from core.personas.persona import Persona, persona_yaml
from ui.state import Key, page_state, persona_export_key, persona_import_files_key, persona_import_pick_key
from ui.text import as_markdown, error_text, notice_text, tr


def uploader_key() -> str:
    """The uploader's key; a new one after a save empties it (an uploader's value cannot be set)."""
    return persona_import_files_key(_state()["round"])


def _state() -> dict[str, Any]:
    """The panel between runs: the uploader's round, the files read and their results, what the
    last save saved and what it could not."""
    state: dict[str, Any] | None = page_state().get(Key.PERSONA_IMPORT)
    if state is None:
        state = {"round": 0, "signature": None, "results": [], "saved": [], "failed": []}
        page_state().set(Key.PERSONA_IMPORT, state)
    return state


def import_panel(save: Callable[[Persona], None], taken_ids: Iterable[str]) -> None:
    """Upload, preview, pick, save. `save` stores one persona (raising `DashboardError` when it
    cannot); `taken_ids` are the ids in use, which an import never overwrites."""
    state = _state()
    with st.expander(
        tr("personas.exchange.header"), icon="📥", expanded=bool(state["results"] or state["saved"])
    ):
        st.caption(tr("personas.exchange.caption"))
        files = st.file_uploader(
            tr("personas.exchange.files"),
            type=list(IMPORT_SUFFIXES),
            accept_multiple_files=True,
            key=uploader_key(),
            max_upload_size=MAX_IMPORT_BYTES // (1024 * 1024),
        )
        user_name = st.text_input(
            tr("personas.exchange.user_name"), value=DEFAULT_USER_NAME, key=Key.PERSONA_IMPORT_USER
        )
        for name in state["saved"]:
            st.success(tr("personas.exchange.saved", name=name))
        for name, error in state["failed"]:
            st.error(tr("personas.exchange.not_saved", name=name, error=error_text(error)))
        uploads = list(files or [])
        signature = (tuple((f.file_id, f.name, f.size) for f in uploads), user_name.strip())
        if signature != state["signature"]:
            # Read once per set of files and name, not on every rerun of the page.
            state["signature"] = signature
            state["results"] = import_files(
                [(f.name, f.getvalue()) for f in uploads],
                user_name=user_name.strip() or DEFAULT_USER_NAME,
                taken_ids=set(taken_ids),
            )
            if uploads:
                state["saved"], state["failed"] = [], []
        results: list[FileImport] = state["results"]
        if not results:
            return
        for file_index, result in enumerate(results):
            preview_file(file_index, result)
        st.button(
            tr("personas.exchange.save"),
            type="primary",
            icon="💾",
            key=Key.PERSONA_IMPORT_SAVE,
            on_click=save_picked,
            args=(save,),
        )


def preview_file(file_index: int, result: FileImport) -> None:
    if result.error is not None:
        st.error(tr("personas.exchange.failed", error=error_text(result.error)), icon="⚠️")
        return
    for persona_index, imported in enumerate(result.personas):
        persona, report = imported.persona, imported.report
        with st.container(border=True):
            head = st.columns([1, 6])
            if persona.avatar_image:
                head[0].image(base64.b64decode(persona.avatar_image), width=56)
            else:
                head[0].markdown(f"## {persona.avatar}")
            head[1].checkbox(
                tr("personas.exchange.pick", name=persona.name, id=persona.id),
                value=True,
                key=persona_import_pick_key(file_index, persona_index),
            )
            head[1].caption(
                tr(
                    "personas.exchange.source",
                    file=result.file_name,
                    format=notice_text(report.source_format),
                )
            )
            share = report.budget_share
            tokens = tr(
                "personas.exchange.tokens",
                tokens=report.system_tokens,
                budget=report.context_budget,
                share=f"{share:.0%}",
            )
            st.progress(min(share, 1.0), text=tokens)
            for warning in report.warnings:
                st.warning(as_markdown(notice_text(warning)), icon="⚠️")
            st.dataframe(
                [
                    {
                        tr("personas.exchange.col.ours"): item.ours,
                        tr("personas.exchange.col.theirs"): item.theirs
                        or tr("personas.exchange.none_in_source"),
                        tr("personas.exchange.col.note"): notice_text(item.note) if item.note else "",
                    }
                    for item in report.mapped
                ],
                hide_index=True,
                width="stretch",
            )
            if report.dropped:
                with st.expander(tr("personas.exchange.dropped", count=len(report.dropped))):
                    st.dataframe(
                        [
                            {
                                tr("personas.exchange.col.theirs"): drop.theirs,
                                tr("personas.exchange.col.why"): notice_text(drop.reason),
                            }
                            for drop in report.dropped
                        ],
                        hide_index=True,
                        width="stretch",
                    )
            with st.expander(tr("personas.exchange.prompt")):
                st.code(persona.system_prompt, language=None, wrap_lines=True)
                for example in persona.examples:
                    st.code(f"{example.role}: {example.content}", language=None, wrap_lines=True)


def save_picked(save: Callable[[Persona], None]) -> None:
    """Save the personas still ticked; each save that fails says why and costs only itself."""
    state = _state()
    saved, failed = [], []
    for file_index, result in enumerate(state["results"]):
        for persona_index, imported in enumerate(result.personas):
            if not page_state().get(persona_import_pick_key(file_index, persona_index), True):
                continue
            persona = imported.persona
            label = f"{persona.avatar} {persona.name}"
            try:
                save(persona)
            except DashboardError as error:
                failed.append((label, error))
                continue
            saved.append(label)
    state.update(round=state["round"] + 1, signature=None, results=[], saved=saved, failed=failed)


def export_menu(persona: Persona) -> None:
    """A popover with a download per export format; each file is built only when clicked."""
    with st.popover(tr("personas.export.label"), icon="📤"):
        st.download_button(
            tr("personas.export.yaml"),
            functools.partial(persona_yaml, persona),
            file_name=f"{persona.id}.yaml",
            mime="application/yaml",
            key=persona_export_key("yaml", persona.id),
            on_click="ignore",
            icon="⬇️",
            width="stretch",
        )
        for export_format in EXPORT_FORMATS:
            export_button(persona, export_format)


def export_button(persona: Persona, export_format: ExportFormat) -> None:
    suffix, mime = EXPORT_FILES[export_format]
    st.download_button(
        tr(f"personas.export.{export_format}"),
        functools.partial(export_bytes, persona, export_format),  # built when clicked
        file_name=persona.id + suffix,
        mime=mime,
        key=persona_export_key(export_format, persona.id),
        on_click="ignore",
        icon="⬇️",
        width="stretch",
    )
