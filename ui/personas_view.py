"""The persona gallery and editor: browse personas, start a chat with one, create, duplicate,
edit, export and import them as YAML. Shipped personas are read-only (duplicate to change).

Everything typed is checked by the same pydantic model as the files in personas/, with the
same per-field messages; a saved persona belongs to the visitor's workspace.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import ValidationError

from core.errors import DashboardError, PersonaFileError
from core.i18n import current as session_translator
from core.personas import Persona, PersonaFile, parse_persona, persona_yaml
from core.safe_markdown import page_markdown
from core.validation import describe_problems
from core.workspace import Workspace

GALLERY_COLUMNS = 3
EDITOR_STATE = "persona_editor"  # {"base": Persona | None, "id": str, "custom": bool} while editing


def tr(key: str, /, **fields: object) -> str:
    """This session's text for `key`, formatted with `fields` (catalogs: core/locales)."""
    return session_translator(st.session_state)(key, **fields)


def tr_plural(key: str, count: int, /, **fields: object) -> str:
    """`key.one` or `key.other` for `count` (also passed as the field `count`)."""
    return session_translator(st.session_state).plural(key, count, **fields)


def start_chat(persona_id: str) -> None:
    st.session_state.persona_id = persona_id
    st.session_state.view = "chat"


def open_editor(base: Persona | None, *, custom: bool) -> None:
    """Edit `base` (a custom persona), or a copy of it (duplicate), or a blank one (None)."""
    st.session_state[EDITOR_STATE] = {"base": base, "custom": custom}


def close_editor() -> None:
    st.session_state.pop(EDITOR_STATE, None)


def import_persona(workspace: Workspace, shipped: set[str]) -> None:
    uploaded = st.session_state.get("persona_upload")
    if uploaded is None:
        return
    persona_id = uploaded.name.rsplit(".", 1)[0]
    try:
        data = uploaded.getvalue().decode("utf-8")
        persona = parse_persona(data, persona_id, name=uploaded.name)
        if persona.id in shipped:
            raise PersonaFileError(uploaded.name, tr("personas.import.shipped_id", id=persona.id))
        workspace.save_persona(persona)
    except UnicodeDecodeError:
        st.session_state.notice = ("error", tr("personas.import.not_utf8", file=uploaded.name))
        return
    except DashboardError as error:
        st.session_state.notice = ("error", tr("personas.import.failed", error=error))
        return
    st.session_state.notice = (
        "success",
        tr("personas.import.done", avatar=persona.avatar, name=persona.name),
    )


def gallery(personas: dict[str, Persona], custom: set[str], conversation_counts: dict[str, int]) -> None:
    """Cards: avatar, name, description, tags, model, budget, and how many conversations each has."""
    workspace: Workspace = st.session_state.workspace
    st.subheader(tr("personas.gallery.header"))
    st.caption(tr("personas.gallery.caption"))
    top = st.columns([1, 3])
    top[0].button(
        tr("personas.gallery.new"), icon="➕", on_click=open_editor, args=(None,), kwargs={"custom": False}
    )
    top[1].file_uploader(
        tr("personas.gallery.import"),
        type=["yaml", "yml"],
        key="persona_upload",
        on_change=import_persona,
        args=(workspace, set(personas) - custom),
        max_upload_size=1,
    )
    columns = st.columns(GALLERY_COLUMNS)
    for index, persona in enumerate(personas.values()):
        with columns[index % GALLERY_COLUMNS].container(border=True):
            card(persona, persona.id in custom, conversation_counts.get(persona.id, 0))


def card(persona: Persona, is_custom: bool, conversations: int) -> None:
    st.markdown(page_markdown(f"#### {persona.avatar} {persona.name}"))
    st.caption(page_markdown(persona.description))
    details = [
        f"`{persona.model}`",
        tr("personas.card.budget", budget=persona.context_budget),
        tr("personas.card.reply_cap", reply_cap=persona.max_reply_tokens),
    ]
    st.caption(page_markdown(" · ".join(details)))
    if persona.tags:
        st.caption(tr("personas.card.tags", tags=" · ".join(persona.tags)))
    st.caption(
        (tr("personas.card.custom") if is_custom else tr("personas.card.shipped"))
        + " · "
        + tr_plural("personas.card.conversations", conversations)
    )
    buttons = st.columns(3)
    buttons[0].button(
        tr("personas.card.chat"),
        key=f"chat::{persona.id}",
        on_click=start_chat,
        args=(persona.id,),
        type="primary",
    )
    if is_custom:
        buttons[1].button(
            tr("personas.card.edit"),
            key=f"edit::{persona.id}",
            on_click=open_editor,
            args=(persona,),
            kwargs={"custom": True},
        )
    else:
        buttons[1].button(
            tr("personas.card.duplicate"),
            key=f"duplicate::{persona.id}",
            on_click=open_editor,
            args=(persona,),
            kwargs={"custom": False},
        )
    buttons[2].download_button(
        "YAML",
        persona_yaml(persona),
        file_name=f"{persona.id}.yaml",
        mime="application/yaml",
        key=f"yaml::{persona.id}",
        on_click="ignore",
    )


def editor(personas: dict[str, Persona]) -> None:
    """The form: every field of a persona file, checked like a file when saved."""
    editing: dict[str, Any] = st.session_state[EDITOR_STATE]
    base: Persona | None = editing["base"]
    custom: bool = editing["custom"]
    workspace: Workspace = st.session_state.workspace
    if base is None:
        title, default_id = tr("personas.editor.new"), "my-persona"
    elif custom:
        title, default_id = tr("personas.editor.edit", avatar=base.avatar, name=base.name), base.id
    else:
        title = tr("personas.editor.duplicate", avatar=base.avatar, name=base.name)
        default_id = f"my-{base.id}"
    st.subheader(title)
    st.caption(tr("personas.editor.caption"))
    with st.form("persona_form"):
        persona_id = st.text_input(tr("personas.editor.id"), value=default_id, disabled=custom, max_chars=64)
        name = st.text_input(tr("personas.editor.name"), value=base.name if base else "", max_chars=60)
        avatar = st.text_input(tr("personas.editor.avatar"), value=base.avatar if base else "🙂", max_chars=8)
        description = st.text_input(tr("personas.editor.description"), value=base.description if base else "")
        system_prompt = st.text_area(
            tr("personas.editor.system_prompt"), value=base.system_prompt if base else "", height=160
        )
        left, right = st.columns(2)
        model = left.text_input(tr("personas.editor.model"), value=base.model if base else "gpt-4o-mini")
        temperature = right.number_input(
            tr("personas.editor.temperature"),
            min_value=0.0,
            max_value=2.0,
            value=base.sampling.temperature if base else None,
            step=0.1,
        )
        budget = left.number_input(
            tr("personas.editor.budget"),
            min_value=1,
            value=base.context_budget if base else 4096,
            step=64,
        )
        reply_cap = right.number_input(
            tr("personas.editor.reply_cap"),
            min_value=1,
            value=base.max_reply_tokens if base else 500,
            step=50,
        )
        greeting = st.text_area(
            tr("personas.editor.greeting"), value=base.greeting if base else "", height=68
        )
        starters = st.text_area(
            tr("personas.editor.starters"),
            value="\n".join(base.starter_prompts) if base else "",
            height=90,
        )
        tags = st.text_input(tr("personas.editor.tags"), value=", ".join(base.tags) if base else "")
        saved = st.form_submit_button(tr("personas.editor.save"), type="primary")
    st.button(tr("personas.editor.cancel"), on_click=close_editor)
    if not saved:
        return
    sampling = base.sampling.model_dump(exclude_none=True) if base else {}
    if temperature is None:
        sampling.pop("temperature", None)
    else:
        sampling["temperature"] = float(temperature)
    fields = {
        "name": name,
        "avatar": avatar,
        "description": description,
        "system_prompt": system_prompt,
        "model": model,
        "sampling": sampling,
        "context_budget": int(budget),
        "max_reply_tokens": int(reply_cap),
        "greeting": greeting,
        "starter_prompts": [line.strip() for line in starters.splitlines() if line.strip()],
        "tags": [tag.strip() for tag in tags.split(",") if tag.strip()],
    }
    try:
        checked = PersonaFile.model_validate(fields)
        persona = parse_persona(persona_yaml(checked), persona_id.strip())
    except ValidationError as exc:
        for problem in describe_problems(exc, model=PersonaFile):
            st.error(page_markdown(problem))
        return
    except PersonaFileError as error:
        for problem in error.problems:
            st.error(page_markdown(problem))
        return
    if not custom and persona.id in personas:
        st.error(tr("personas.editor.id_taken", id=persona.id))
        return
    try:
        workspace.save_persona(persona)
    except DashboardError as error:
        st.error(tr("personas.editor.not_saved", error=error))
        return
    close_editor()
    st.session_state.notice = (
        "success",
        tr("personas.editor.saved", avatar=persona.avatar, name=persona.name),
    )
    st.rerun()
