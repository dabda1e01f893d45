"""The persona gallery and editor: browse personas, start a chat with one, create, duplicate,
edit, export and import them as YAML. Shipped personas are read-only (duplicate to change).

Everything typed is checked by the same pydantic model as the files in personas/, with the
same per-field messages; a saved persona belongs to the visitor's workspace.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import ValidationError

from core.chat.settings import Sampling
from core.errors import DashboardError, PersonaFileError
from core.notices import Notice
from core.personas.persona import (
    Persona,
    PersonaFile,
    chat_avatar,
    examples_from_text,
    examples_text,
    parse_persona,
    persona_yaml,
    valid_persona_id,
)
from core.service import VisitorService
from core.validation import FieldProblem, field_limits, field_problems
from ui.frame import Frame, switch_page
from ui.persona_exchange import export_menu, import_panel
from ui.state import Key, page_state
from ui.text import as_markdown, error_text, tr, tr_plural

GALLERY_COLUMNS = 3
#: Cards drawn at once; the rest are a page away, so a large collection never blocks the page.
GALLERY_PAGE = 30
#: Set by a card's Chat button; the next run goes to the chat page.
GO_CHAT = "go_chat"


def page(frame: Frame) -> None:
    state = page_state()
    if state.get(GO_CHAT):
        state.pop(GO_CHAT)
        switch_page("app_pages/chat.py")
    if state.has(Key.PERSONA_EDITOR):
        persona_editor(frame.service, frame.catalog.personas)
    else:
        gallery(frame.service, frame.catalog.personas, set(frame.own))


def start_chat(persona_id: str) -> None:
    state = page_state()
    state.persona_id = persona_id
    state.set(GO_CHAT, True)


def open_editor(base: Persona | None, *, custom: bool) -> None:
    """Edit `base` (a custom persona), or a copy of it (duplicate), or a blank one (None)."""
    page_state().set(Key.PERSONA_EDITOR, {"base": base, "custom": custom})


def close_editor() -> None:
    page_state().pop(Key.PERSONA_EDITOR)


def gallery(service: VisitorService, personas: dict[str, Persona], custom: set[str]) -> None:
    """Cards: avatar, name, description, tags, model, budget, and how many conversations each has."""
    conversation_counts = service.conversation_counts()
    st.subheader(tr("personas.gallery.header"))
    st.caption(tr("personas.gallery.caption"))
    st.button(
        tr("personas.gallery.new"), icon="➕", on_click=open_editor, args=(None,), kwargs={"custom": False}
    )
    import_panel(service.save_persona, taken_ids=personas)
    shown = list(personas.values())
    pages = max(1, -(-len(shown) // GALLERY_PAGE))
    if pages > 1:
        page_number = st.number_input(
            tr("personas.gallery.page", pages=pages, count=len(shown)),
            min_value=1,
            max_value=pages,
            value=1,
            key=Key.GALLERY_PAGE,
        )
        shown = shown[(int(page_number) - 1) * GALLERY_PAGE :][:GALLERY_PAGE]
    columns = st.columns(GALLERY_COLUMNS)
    for index, persona in enumerate(shown):
        with columns[index % GALLERY_COLUMNS].container(border=True):
            card(persona, persona.id in custom, conversation_counts.get(persona.id, 0))


def card(persona: Persona, is_custom: bool, conversations: int) -> None:
    if persona.avatar_image:
        picture, title = st.columns([1, 4], vertical_alignment="center")
        picture.image(chat_avatar(persona), width=48)
        title.markdown(f"#### {as_markdown(persona.name)}")
    else:
        st.markdown(f"#### {persona.avatar} {as_markdown(persona.name)}")
    st.caption(as_markdown(persona.description))  # imported text: images become links
    details = [
        f"`{persona.model}`",
        tr("personas.card.budget", budget=persona.context_budget),
        tr("personas.card.reply_cap", reply_cap=persona.max_reply_tokens),
    ]
    st.caption(as_markdown(" · ".join(details)))
    if persona.tags:
        st.caption(tr("personas.card.tags", tags=" · ".join(persona.tags)))
    st.caption(
        (tr("personas.card.custom") if is_custom else tr("personas.card.shipped"))
        + " · "
        + tr_plural("personas.card.conversations", conversations)
    )
    # Two buttons a row, export under them: three to a row cut "Duplicate" to "Duplic…".
    buttons = [*st.columns(2), st.container()]
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
    with buttons[2]:
        export_menu(persona)


#: A persona file's field -> its label's key (`personas.editor.<key>`).
EDITOR_LABELS = {
    "id": "id",
    "name": "name",
    "avatar": "avatar",
    "description": "description",
    "system_prompt": "system_prompt",
    "model": "model",
    "sampling": "temperature",
    "context_budget": "budget",
    "max_reply_tokens": "reply_cap",
    "greeting": "greeting",
    "starter_prompts": "starters",
    "examples": "examples",
    "tags": "tags",
}


def show_field_problems(problems: list[FieldProblem], labels: dict[str, str], slots: dict[str, Any]) -> None:
    """Every problem at once, under its field, in the field's label and plain words."""
    by_field: dict[str, list[str]] = {}
    for problem in problems:
        field = problem.field if problem.field in slots else ""
        label = labels.get(problem.field, problem.field)
        by_field.setdefault(field, []).append(tr(f"validation.{problem.code}", label=label, **problem.fields))
    for field, texts in by_field.items():
        slots[field].error(as_markdown("  \n".join(texts)))


def persona_editor(service: VisitorService, personas: dict[str, Persona]) -> None:
    """The form: every field of a persona file, checked like a file when saved."""
    editing: dict[str, Any] = page_state().get(Key.PERSONA_EDITOR)
    base: Persona | None = editing["base"]
    custom: bool = editing["custom"]
    if base is None:
        title, default_id = tr("personas.editor.new"), "my-persona"
    elif custom:
        title, default_id = tr("personas.editor.edit", avatar=base.avatar, name=base.name), base.id
    else:
        title = tr("personas.editor.duplicate", avatar=base.avatar, name=base.name)
        default_id = f"my-{base.id}"
    st.subheader(title)
    st.caption(tr("personas.editor.caption"))
    # Each field's errors go in the slot under it, all at once, named by the field's label.
    labels = {field: tr(f"personas.editor.{key}") for field, key in EDITOR_LABELS.items()}
    slots: dict[str, Any] = {}
    budget_low, budget_high = field_limits(PersonaFile, "context_budget")
    cap_low, cap_high = field_limits(PersonaFile, "max_reply_tokens")
    temperature_low, temperature_high = field_limits(Sampling, "temperature")
    with st.form("persona_form"):
        persona_id = st.text_input(labels["id"], value=default_id, disabled=custom, max_chars=64)
        slots["id"] = st.empty()
        name = st.text_input(labels["name"], value=base.name if base else "", max_chars=60)
        slots["name"] = st.empty()
        avatar = st.text_input(labels["avatar"], value=base.avatar if base else "🙂", max_chars=8)
        slots["avatar"] = st.empty()
        description = st.text_input(labels["description"], value=base.description if base else "")
        slots["description"] = st.empty()
        system_prompt = st.text_area(
            labels["system_prompt"], value=base.system_prompt if base else "", height=160
        )
        slots["system_prompt"] = st.empty()
        left, right = st.columns(2)
        model = left.text_input(labels["model"], value=base.model if base else "gpt-4o-mini")
        slots["model"] = left.empty()
        temperature = right.number_input(
            labels["sampling"],
            min_value=float(temperature_low if temperature_low is not None else 0),
            max_value=float(temperature_high if temperature_high is not None else 2),
            value=base.sampling.temperature if base else None,
            step=0.1,
        )
        slots["sampling"] = right.empty()
        budget = left.number_input(
            labels["context_budget"],
            min_value=int(budget_low or 1),
            max_value=int(budget_high) if budget_high is not None else None,
            value=base.context_budget if base else 4096,
            step=64,
        )
        slots["context_budget"] = left.empty()
        reply_cap = right.number_input(
            labels["max_reply_tokens"],
            min_value=int(cap_low or 1),
            max_value=int(cap_high) if cap_high is not None else None,
            value=base.max_reply_tokens if base else 500,
            step=50,
        )
        slots["max_reply_tokens"] = right.empty()
        greeting = st.text_area(labels["greeting"], value=base.greeting if base else "", height=68)
        slots["greeting"] = st.empty()
        starters = st.text_area(
            labels["starter_prompts"],
            value="\n".join(base.starter_prompts) if base else "",
            height=90,
        )
        slots["starter_prompts"] = st.empty()
        examples = st.text_area(
            labels["examples"],
            value=examples_text(base.examples) if base else "",
            height=90,
            help=tr("personas.editor.examples_help"),
        )
        slots["examples"] = st.empty()
        tags = st.text_input(labels["tags"], value=", ".join(base.tags) if base else "")
        slots["tags"] = st.empty()
        saved = st.form_submit_button(tr("personas.editor.save"), type="primary")
        slots[""] = st.empty()  # a problem with no field of its own
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
        "examples": examples_from_text(examples),
    }
    if base is not None:  # what the form does not show is kept from the persona edited or duplicated
        fields.update(
            context_policy=base.context_policy,
            summarizer_model=base.summarizer_model,
            avatar_image=base.avatar_image,
            extensions=dict(base.extensions),
        )
    if not valid_persona_id(persona_id.strip()):  # the file name's rules
        slots["id"].error(as_markdown(tr("personas.editor.id_invalid", label=labels["id"], id=persona_id)))
    try:
        checked = PersonaFile.model_validate(fields)
    except ValidationError as exc:
        show_field_problems(field_problems(exc), labels, slots)
        return
    if not valid_persona_id(persona_id.strip()):
        return
    try:
        persona = parse_persona(persona_yaml(checked), persona_id.strip())
    except PersonaFileError as error:  # what was checked above, checked as a file is: not expected
        slots[""].error(error_text(error))
        return
    if not custom and persona.id in personas:
        st.error(tr("personas.editor.id_taken", id=persona.id))
        return
    try:
        service.save_persona(persona)
    except DashboardError as error:
        st.error(tr("personas.editor.not_saved", error=error_text(error)))
        return
    close_editor()
    service.notify(
        Notice(code="persona_saved", level="success", fields={"avatar": persona.avatar, "name": persona.name})
    )
    st.rerun()
