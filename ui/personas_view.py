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
from core.personas import Persona, PersonaFile, parse_persona, persona_yaml
from core.validation import describe_problems
from core.workspace import Workspace

GALLERY_COLUMNS = 3
EDITOR_STATE = "persona_editor"  # {"base": Persona | None, "id": str, "custom": bool} while editing


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
            raise PersonaFileError(uploaded.name, f"id '{persona.id}' is a shipped persona; rename the file")
        workspace.save_persona(persona)
    except UnicodeDecodeError:
        st.session_state.notice = ("error", f"{uploaded.name} is not UTF-8 text.")
        return
    except DashboardError as error:
        st.session_state.notice = ("error", f"Import failed: {error}")
        return
    st.session_state.notice = ("success", f"Imported the persona {persona.avatar} {persona.name}.")


def gallery(personas: dict[str, Persona], custom: set[str], conversation_counts: dict[str, int]) -> None:
    """Cards: avatar, name, description, tags, model, budget, and how many conversations each has."""
    workspace: Workspace = st.session_state.workspace
    st.subheader("Personas")
    st.caption(
        "Start a chat with a persona, or duplicate one to make it yours. The shipped personas are "
        "read-only; yours are saved in your workspace."
    )
    top = st.columns([1, 3])
    top[0].button("New persona", icon="➕", on_click=open_editor, args=(None,), kwargs={"custom": False})
    top[1].file_uploader(
        "Import a persona (YAML)",
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
    st.markdown(f"#### {persona.avatar} {persona.name}")
    st.caption(persona.description)
    details = [
        f"`{persona.model}`",
        f"budget {persona.context_budget:,}",
        f"reply cap {persona.max_reply_tokens:,}",
    ]
    st.caption(" · ".join(details))
    if persona.tags:
        st.caption("Tags: " + " · ".join(persona.tags))
    st.caption(
        ("yours" if is_custom else "shipped")
        + f" · {conversations} conversation{'' if conversations == 1 else 's'}"
    )
    buttons = st.columns(3)
    buttons[0].button(
        "Chat", key=f"chat::{persona.id}", on_click=start_chat, args=(persona.id,), type="primary"
    )
    if is_custom:
        buttons[1].button(
            "Edit", key=f"edit::{persona.id}", on_click=open_editor, args=(persona,), kwargs={"custom": True}
        )
    else:
        buttons[1].button(
            "Duplicate",
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
        title, default_id = "New persona", "my-persona"
    elif custom:
        title, default_id = f"Edit {base.avatar} {base.name}", base.id
    else:
        title, default_id = f"Duplicate {base.avatar} {base.name}", f"my-{base.id}"
    st.subheader(title)
    st.caption("Checked by the same rules as the YAML files in personas/ when you save.")
    with st.form("persona_form"):
        persona_id = st.text_input(
            "Id (letters, digits, _ and -)", value=default_id, disabled=custom, max_chars=64
        )
        name = st.text_input("Name", value=base.name if base else "", max_chars=60)
        avatar = st.text_input("Avatar (one emoji)", value=base.avatar if base else "🙂", max_chars=8)
        description = st.text_input("Description (one line)", value=base.description if base else "")
        system_prompt = st.text_area(
            "System prompt (sent first, every call)", value=base.system_prompt if base else "", height=160
        )
        left, right = st.columns(2)
        model = left.text_input("Model", value=base.model if base else "gpt-4o-mini")
        temperature = right.number_input(
            "Temperature (empty: not sent)",
            min_value=0.0,
            max_value=2.0,
            value=base.sampling.temperature if base else None,
            step=0.1,
        )
        budget = left.number_input(
            "Context budget (prompt tokens)",
            min_value=1,
            value=base.context_budget if base else 4096,
            step=64,
        )
        reply_cap = right.number_input(
            "Reply cap (tokens per reply)", min_value=1, value=base.max_reply_tokens if base else 500, step=50
        )
        greeting = st.text_area("Greeting (shown, not sent)", value=base.greeting if base else "", height=68)
        starters = st.text_area(
            "Starter prompts (one per line)", value="\n".join(base.starter_prompts) if base else "", height=90
        )
        tags = st.text_input("Tags (comma-separated)", value=", ".join(base.tags) if base else "")
        saved = st.form_submit_button("Save", type="primary")
    st.button("Cancel", on_click=close_editor)
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
            st.error(problem)
        return
    except PersonaFileError as error:
        for problem in error.problems:
            st.error(problem)
        return
    if not custom and persona.id in personas:
        st.error(f"The id '{persona.id}' is taken; choose another.")
        return
    try:
        workspace.save_persona(persona)
    except DashboardError as error:
        st.error(f"Not saved: {error}")
        return
    close_editor()
    st.session_state.notice = ("success", f"Saved {persona.avatar} {persona.name}.")
    st.rerun()
