"""Persona chat dashboard: talk to a model through a persona and watch exactly what it sees.

A thin page over `core/`: every number and chart comes from `core.stats` and `core.charts`.
Everything a visitor owns (conversations, API key, settings) lives in `st.session_state`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import streamlit as st

from core.backends import ChatBackend
from core.charts import dashboard_drawing
from core.connection import Backends, Connection, resolve_connection
from core.conversation import MAX_IMPORT_BYTES, Conversation, Message, MessageState
from core.errors import BackendError, ConversationImportError, DashboardError
from core.model_info import ModelTable, load_model_table
from core.owners import (
    LOCAL_OWNER,
    WORKSPACE_PARAM,
    AccessMode,
    InvalidWorkspaceLink,
    access_mode,
    new_workspace_token,
    owner_for_token,
    owner_for_user,
)
from core.personas import Persona, PersonaCatalog, load_personas
from core.session import ChatSession
from core.settings import MAX_CONTEXT_BUDGET, MAX_REPLY_CAP
from core.stats import dashboard_figures
from core.store import StaleConversation, Store
from core.tokens import BUNDLED_ENCODINGS, get_encoding
from core.workspace import DRAFT_PREFIX, Workspace
from ui import compare_view, personas_view

APP_DIR = Path(__file__).resolve().parent
# Word-by-word pacing of the offline model's reply, so streaming is visible; tests set it to 0.
OFFLINE_CHUNK_DELAY_S = float(os.environ.get("OFFLINE_CHUNK_DELAY_S", "0.02"))
CHAT_HEIGHT_PX = 560
DASHBOARD_HEIGHT_PX = 640
HISTORY_SHOWN = 200  # newest messages drawn on every rerun; older ones behind a toggle
BADGE_COLORS: dict[MessageState, Literal["gray", "orange"]] = {
    MessageState.TRIMMED: "gray",
    MessageState.UNANSWERED: "orange",
    MessageState.REPLACED: "gray",
}
TAGLINE = "**Persona Chat Dashboard** · talk to a model through a persona and see exactly what it sees."
VIEWS = {"chat": "💬 Chat", "personas": "🎭 Personas", "compare": "⚖️ Compare"}
#: The query parameter naming the open conversation, so a reload returns to it.
CONVERSATION_PARAM = "c"
CONVERSATIONS_LISTED = 30


# --- process-wide resources: loaded once per process, shared read-only by every session ---------


def personas_dir() -> Path:
    return Path(os.environ.get("PERSONAS_DIR") or APP_DIR / "personas")


def directory_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes when a persona file is added, removed or edited, so the cached catalog reloads."""
    try:
        entries = [(path.name, path.lstat()) for path in directory.iterdir()]
    except OSError:
        return ()
    return tuple(sorted((name, info.st_mtime_ns, info.st_size) for name, info in entries))


@st.cache_resource(show_spinner=False)
def persona_catalog(directory: str, stamp: tuple[tuple[str, int, int], ...]) -> PersonaCatalog:
    return load_personas(directory)


@st.cache_resource(show_spinner=False)
def model_table() -> ModelTable:
    return load_model_table()


@st.cache_resource(show_spinner=False)
def load_tokenizers() -> None:
    for name in BUNDLED_ENCODINGS:
        get_encoding(name)


def deployer_secrets() -> dict[str, object]:
    """st.secrets as a dict; a deployment with no secrets.toml simply has none."""
    try:
        return dict(st.secrets)
    except FileNotFoundError:
        return {}


# --- per-session state -------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def open_store(database_url: str) -> Store:
    """The process's store (one connection pool shared by every session); errors are not cached,
    so a fixed database is picked up on the next rerun."""
    return Store.from_environ({"DATABASE_URL": database_url})


def visitor_owner(mode: AccessMode) -> str:
    """Whose conversations this browser session sees (see core/owners.py); may stop the page to
    ask for sign-in."""
    if mode == "single-user":
        return LOCAL_OWNER
    user = st.user.to_dict()
    if "is_logged_in" in user:  # the deployer configured OIDC sign-in ([auth] in secrets)
        if not user["is_logged_in"]:
            st.title("💬 Persona Chat Dashboard")
            st.write("Sign in to see your conversations. They are private to you.")
            st.button("Sign in", on_click=st.login, type="primary")
            st.stop()
        return owner_for_user(str(user.get("iss", "")), str(user.get("sub", "")))
    token = st.query_params.get(WORKSPACE_PARAM)
    if not token:
        token = new_workspace_token()
        st.query_params[WORKSPACE_PARAM] = token
        st.session_state.notice = (
            "info",
            "This is your private workspace. **Bookmark this page's link: it is the key to your "
            "conversations**, and anyone with it can read them.",
        )
    try:
        return owner_for_token(token)
    except InvalidWorkspaceLink as error:
        st.error(str(error))
        st.button("Start a new workspace", on_click=st.query_params.clear)
        st.stop()


def visitor_workspace() -> Workspace:
    """This browser session's workspace, opened on its first run."""
    workspace: Workspace | None = st.session_state.get("workspace")
    if workspace is None:
        owner = visitor_owner(access_mode(os.environ))
        store: Store | None = None
        try:
            store = open_store(os.environ.get("DATABASE_URL", ""))
        except DashboardError as error:
            st.session_state.store_error = f"Conversations are not being saved: {error}"
        workspace = st.session_state.workspace = Workspace(store, owner)
        opened = st.query_params.get(CONVERSATION_PARAM)
        if opened:  # a reload, or a shared link of one's own: reopen that conversation
            try:
                workspace.open(opened, offline_backend())
                persona_id = workspace.sessions[opened].conversation.persona_id
                if persona_id is not None:
                    st.session_state.persona_id = persona_id
            except DashboardError as error:
                st.session_state.notice = ("error", f"That conversation cannot be opened: {error}")
    return workspace


def offline_backend() -> ChatBackend:
    """A placeholder backend for a session opened before the connection is known; replaced by the
    connection's backend before any call."""
    backends: Backends = st.session_state.backends
    return backends.for_connection(Connection())


def session_defaults() -> None:
    state = st.session_state
    state.setdefault("backends", Backends(offline_chunk_delay_s=OFFLINE_CHUNK_DELAY_S))
    state.setdefault("action", None)  # ("send", text) | ("retry",) | ("regenerate",) | ("continue",)
    state.setdefault("notice", None)
    state.setdefault("view", "chat")
    state.setdefault("store_error", None)
    state.setdefault("stale", False)  # the open conversation was saved elsewhere since it was read
    state.setdefault("deleted", None)  # (conversation id, title) of the last deleted, for undo


def save(workspace: Workspace, key: str) -> str:
    """Write the conversation through to the store; a failure is shown and nothing is lost."""
    try:
        key = workspace.save(key)
    except StaleConversation as error:
        st.session_state.store_error = str(error)
        st.session_state.stale = True
    except DashboardError as error:
        st.session_state.store_error = f"Your last change is not saved yet: {error}"
    else:
        st.session_state.store_error = None
        st.session_state.stale = False
    return key


def queue(*action: str) -> None:
    st.session_state.action = action


def start_new(workspace: Workspace, persona: Persona, backend: ChatBackend) -> None:
    workspace.new(persona, backend)


def open_conversation(workspace: Workspace, conversation_id: str, backend: ChatBackend) -> None:
    try:
        workspace.open(conversation_id, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", f"That conversation cannot be opened: {error}")
        return
    persona_id = workspace.sessions[conversation_id].conversation.persona_id
    if persona_id in st.session_state.catalog_ids:  # a search may list another persona's
        st.session_state.persona_id = persona_id


def rename_conversation(workspace: Workspace, conversation_id: str) -> None:
    title = st.session_state.get(f"title::{conversation_id}", "")
    try:
        workspace.rename(conversation_id, title)
    except DashboardError as error:
        st.session_state.notice = ("error", f"Not renamed: {error}")


def delete_conversation(workspace: Workspace, conversation_id: str, title: str) -> None:
    try:
        workspace.delete(conversation_id)
    except DashboardError as error:
        st.session_state.notice = ("error", f"Not deleted: {error}")
        return
    st.session_state.deleted = (conversation_id, title)


def undo_delete(workspace: Workspace, backend: ChatBackend) -> None:
    conversation_id, title = st.session_state.deleted
    st.session_state.deleted = None
    try:
        workspace.restore(conversation_id, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", f"“{title}” could not be restored: {error}")


def reload_conversation(workspace: Workspace, key: str, backend: ChatBackend) -> None:
    workspace.reload(key, backend)
    st.session_state.store_error = None
    st.session_state.stale = False


def import_conversation(catalog: PersonaCatalog, workspace: Workspace, backend: ChatBackend) -> None:
    """on_change of the uploader: runs before the page, so it may switch the persona selector.
    The file becomes a new conversation; nothing is overwritten."""
    uploaded = st.session_state.get("import_file")
    if uploaded is None:
        return
    try:
        conversation = Conversation.from_json(uploaded.getvalue())
    except ConversationImportError as error:
        st.session_state.notice = ("error", f"Import of {uploaded.name} failed: {error}")
        return
    target = conversation.persona_id if conversation.persona_id in catalog.personas else None
    target = target or st.session_state.persona_id
    conversation.persona_id = target
    try:
        workspace.add_imported(conversation, backend)
    except DashboardError as error:
        st.session_state.notice = ("error", f"Import of {uploaded.name} failed: {error}")
        return
    st.session_state.persona_id = target
    st.session_state.notice = (
        "success",
        f"Imported {len(conversation.messages)} messages from {uploaded.name} "
        f"into {catalog.personas[target].name} as a new conversation.",
    )


# --- sidebar -----------------------------------------------------------------------------------


def conversation_list(workspace: Workspace, persona: Persona, key: str, backend: ChatBackend) -> None:
    """This persona's conversations, newest first, with search, rename and delete (undoable)."""
    st.button(
        "New conversation",
        icon="🆕",
        on_click=start_new,
        args=(workspace, persona, backend),
        width="stretch",
        disabled=key.startswith(DRAFT_PREFIX) and len(workspace.sessions[key].conversation.messages) < 2,
    )
    deleted = st.session_state.deleted
    if deleted is not None:
        st.info(f"Deleted “{deleted[1]}”.", icon="🗑️")
        st.button("Undo delete", icon="↩️", on_click=undo_delete, args=(workspace, backend), key="undo_delete")
    if workspace.store is None:
        return
    search = st.text_input(
        "Search conversations",
        key="conversation_search",
        placeholder="Search titles and messages",
        label_visibility="collapsed",
    )
    try:
        listed = workspace.list(persona_id=None if search else persona.id, search=search or None)
    except DashboardError as error:
        st.error(f"The conversation list cannot be read: {error}")
        return
    if search and not listed:
        st.caption("No conversation matches.")
    for summary in listed[:CONVERSATIONS_LISTED]:
        is_open = summary.id == key
        st.button(
            ("▸ " if is_open else "") + summary.display_title,
            key=f"open::{summary.id}",
            on_click=open_conversation,
            args=(workspace, summary.id, backend),
            disabled=is_open,
            width="stretch",
            help=f"{summary.message_count - 1} messages · {summary.updated_at:%Y-%m-%d %H:%M} UTC",
        )
    if len(listed) > CONVERSATIONS_LISTED:
        st.caption(f"{len(listed) - CONVERSATIONS_LISTED} older ones: search to find them.")
    if key in workspace.handles:
        with st.expander("Rename or delete this conversation"):
            current = next((c for c in listed if c.id == key), None)
            title = current.display_title if current else ""
            st.text_input("Title", value=title, key=f"title::{key}", max_chars=200)
            columns = st.columns(2)
            columns[0].button("Rename", on_click=rename_conversation, args=(workspace, key), width="stretch")
            columns[1].button(
                "Delete",
                icon="🗑️",
                on_click=delete_conversation,
                args=(workspace, key, title),
                width="stretch",
                key="delete_conversation",
            )


def sidebar(catalog: PersonaCatalog, workspace: Workspace) -> tuple[Persona, str, ChatSession, Connection]:
    with st.sidebar:
        st.header("Persona")
        persona_ids = list(catalog.personas)
        persona_id = st.selectbox(
            "Persona",
            persona_ids,
            format_func=lambda pid: f"{catalog.personas[pid].avatar} {catalog.personas[pid].name}",
            key="persona_id",
            label_visibility="collapsed",
        )
        persona = catalog.personas[persona_id]
        st.caption(persona.description)
        conversations = st.container()
        if catalog.errors:
            with st.expander(f"⚠️ {len(catalog.errors)} persona file(s) could not be loaded", expanded=True):
                for error in catalog.errors:
                    st.error(str(error), icon="📄")

        st.header("Connection")
        st.text_input(
            "API key",
            type="password",
            key="api_key",
            help="Kept only in this browser session, never saved. Also read from secrets or OPENAI_API_KEY.",
        )
        st.text_input(
            "Base URL",
            key="base_url",
            placeholder="https://api.openai.com/v1",
            help="Any OpenAI-compatible server: Azure, Ollama, vLLM, LM Studio, llama.cpp.",
        )
        try:
            connection = resolve_connection(
                typed_key=st.session_state.api_key,
                typed_base_url=st.session_state.base_url,
                secrets=deployer_secrets(),
                environ=os.environ,
            )
        except DashboardError as error:  # a deployer's setting is malformed
            st.error(str(error))
            st.stop()
        backend = st.session_state.backends.for_connection(connection)
        key, session = workspace.session_for(persona, backend)
        with conversations:
            conversation_list(workspace, persona, key, backend)
        settings = session.settings
        model = st.text_input(
            "Model", value=settings.model, key=f"model::{key}", help=f"Persona default: {persona.model}"
        )
        if connection.offline:
            st.info(
                "No API key set: replies come from the **built-in offline model**. "
                "It runs locally, costs nothing, and its usage figures are computed here.",
                icon="🔌",
            )
        else:
            source = {"typed": "typed here", "secrets": "from secrets", "environment": "from environment"}
            key_note = source.get(connection.key_source or "", "no key")
            st.success(f"Connected to **{connection.host}** (key {key_note}).", icon="🔗")

        st.header("Budget")
        budget = st.number_input(
            "Context budget (prompt tokens)",
            min_value=64,
            max_value=MAX_CONTEXT_BUDGET,
            value=settings.context_budget,
            step=64,
            key=f"budget::{key}",
            help="The most prompt tokens a call may send. Older exchanges are trimmed to fit.",
        )
        reply_cap = st.number_input(
            "Reply cap (max tokens per reply)",
            min_value=1,
            max_value=MAX_REPLY_CAP,
            value=settings.max_reply_tokens,
            step=50,
            key=f"reply_cap::{key}",
            help="The most tokens one reply may have (max_tokens). Separate from the context budget.",
        )
        changed = session.update_settings(
            model=model.strip() or persona.model, context_budget=int(budget), max_reply_tokens=int(reply_cap)
        )
        if changed is not settings:  # saved with the conversation, so a reload keeps them
            key = save(workspace, key)

        st.header("Export / import")
        conversation = session.conversation
        columns = st.columns(2)
        columns[0].download_button(
            "JSON",
            conversation.to_json(),
            file_name=f"{persona.id}-conversation.json",
            mime="application/json",
            icon="⬇️",
            on_click="ignore",
            width="stretch",
        )
        columns[1].download_button(
            "Markdown",
            conversation.to_markdown(f"{persona.avatar} {persona.name}"),
            file_name=f"{persona.id}-conversation.md",
            mime="text/markdown",
            icon="⬇️",
            on_click="ignore",
            width="stretch",
        )
        st.file_uploader(
            "Import a JSON export (as a new conversation)",
            type=["json"],
            key="import_file",
            on_change=import_conversation,
            args=(catalog, workspace, backend),
            max_upload_size=max(1, MAX_IMPORT_BYTES // (1024 * 1024)),
        )
    return persona, key, session, connection


# --- chat --------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def as_markdown(text: str) -> str:
    """Chat text for st.markdown: a `$` is a price, not the start of a LaTeX formula."""
    return text.replace("$", "\\$")


def render_message(message: Message, persona: Persona) -> None:
    if message.automatic:  # the dashboard's own request to continue a cut reply
        st.caption(f"↪ Asked the model to continue: “{message.preview(80)}”")
        return
    avatar = persona.avatar if message.role == "assistant" else "🧑"
    with st.chat_message(message.role, avatar=avatar):
        if message.state in BADGE_COLORS:
            st.badge(message.state.label, color=BADGE_COLORS[message.state])
        if message.interrupted:
            st.badge("interrupted · partial reply", color="orange")
        if message.cut_off:
            st.badge("cut by the reply cap", color="orange")
        # Markdown without HTML: user, persona and model text is never rendered as raw HTML.
        if message.state is MessageState.CONTEXT:
            st.markdown(as_markdown(message.content))
        else:
            st.caption(as_markdown(message.content))


def stream_reply(
    workspace: Workspace, key: str, persona: Persona, reply: Callable[[], Iterator[str]]
) -> None:
    """Stream a reply into the chat and save the turn; every outcome ends in a rerun, which
    redraws the history (with this turn's trims, badges and any error) and the dashboard."""
    session = workspace.sessions[key]
    with st.chat_message("assistant", avatar=persona.avatar):
        try:
            st.write_stream(reply())  # drops the usage chunk; the session's stream keeps it
        except DashboardError:
            pass  # the session holds the error; the rerun shows it
        except BaseException:
            # Stopped (the chat input's stop button) or interrupted by another interaction:
            # keep what streamed, hang up on the server, and save what was kept.
            session.stop()
            save(workspace, key)
            raise
    save(workspace, key)
    st.rerun()


def error_details(error: DashboardError) -> str:
    """The data an error carries, in one line: status, how long to wait, the server's request id."""
    if not isinstance(error, BackendError):
        return ""
    parts = [f"HTTP {error.status_code}"] if error.status_code else []
    if error.retry_after:
        parts.append(f"wait {error.retry_after:.0f} s")
    if error.request_id:
        parts.append(f"request id `{error.request_id}`")
    if not error.retryable:
        parts.append("retrying will not help until this is fixed")
    return " · ".join(parts)


def chat(workspace: Workspace, key: str, persona: Persona) -> None:
    session = workspace.sessions[key]
    conversation = session.conversation
    # The history scrolls in a box of its own, so the dashboard stays in view beside the newest
    # messages; errors and buttons, then the chat input, sit under it. The input is not pinned
    # to the page bottom, so the page opens at the top (and on a phone, with the chat first).
    history_box = st.container(height=CHAT_HEIGHT_PX, border=False)
    controls = st.container()
    prompt = st.chat_input(f"Message {persona.name}…", key="chat_input", submit_mode="stop")
    with history_box:
        history = conversation.messages[1:]
        hidden = max(len(history) - HISTORY_SHOWN, 0)
        # Every rerun redraws the chat: past a few hundred messages, draw the oldest on request.
        if hidden and not st.toggle(
            f"Show {hidden:,} earlier messages", key=f"show_all::{key}", help="All are in the export."
        ):
            history = history[hidden:]
        elif persona.greeting:
            with st.chat_message("assistant", avatar=persona.avatar):
                st.markdown(persona.greeting)
        for message in history:
            render_message(message, persona)

        action = st.session_state.action
        st.session_state.action = None
        if prompt:
            action = ("send", prompt)
        if action and action[0] == "send":
            with st.chat_message("user", avatar="🧑"):
                st.markdown(as_markdown(action[1]))
            stream_reply(workspace, key, persona, lambda: session.send(action[1]))
        elif action == ("retry",) and session.can_retry:
            stream_reply(workspace, key, persona, session.retry)
        elif action == ("regenerate",) and session.can_regenerate:
            stream_reply(workspace, key, persona, session.regenerate)
        elif action == ("continue",) and session.can_continue:
            stream_reply(workspace, key, persona, session.continue_reply)

    with controls:
        chat_controls(session, persona)


def chat_controls(session: ChatSession, persona: Persona) -> None:
    """The last call's error with its data, starter prompts, and Retry / Regenerate / Continue."""
    conversation = session.conversation
    if session.error is not None:
        st.error(str(session.error), icon="⚠️")
        if details := error_details(session.error):
            st.caption(details)
    if not conversation.turns and not conversation.pending_user_message and persona.starter_prompts:
        st.caption("Try one of these:")
        for index, starter in enumerate(persona.starter_prompts):
            st.button(starter, key=f"starter::{persona.id}::{index}", on_click=queue, args=("send", starter))
    if session.can_retry:
        st.button("Retry", icon="🔁", on_click=queue, args=("retry",), key="retry")
    elif session.can_regenerate:
        columns = st.columns(2) if session.can_continue else [st.container()]
        columns[0].button(
            "Regenerate last answer", icon="🔄", on_click=queue, args=("regenerate",), key="regenerate"
        )
        if session.can_continue:
            columns[1].button(
                "Continue the reply", icon="⏩", on_click=queue, args=("continue",), key="continue"
            )


# --- dashboard ---------------------------------------------------------------------------------


def dashboard(session: ChatSession, connection: Connection) -> None:
    conversation = session.conversation
    # Figures and charts are built once per version of the conversation (a message, turn, trim,
    # pin or setting): a rerun that changed none of them walks no history and builds no chart.
    figures = dashboard_figures(conversation, session.policy, model_table())
    drawing = dashboard_drawing(figures)
    gauge, total = figures.gauge, figures.totals
    st.subheader("What the model sees")
    priced = model_table().lookup(conversation.model)
    top, bottom = st.columns(2), st.columns(2)
    over = gauge.used > gauge.budget
    top[0].metric(
        "In context now",
        f"{gauge.used:,}",
        f"{gauge.fraction:.0%} of {gauge.budget:,}",
        delta_color="inverse" if over else "off",
        delta_arrow="off",
        help="Prompt tokens the next call would send before trimming, reply priming included.",
    )
    if total.cost is None or priced is None:
        top[1].metric("Cost", "unknown price", help=f"{conversation.model} is not in models.yaml.")
    elif connection.offline:
        top[1].metric(
            "Cost",
            "$0 (offline)",
            f"${total.cost:.4f} on {conversation.model}",
            delta_color="off",
            delta_arrow="off",
            help="The offline model bills nothing; the figure is what these tokens would cost.",
        )
    else:
        top[1].metric("Cost", f"${total.cost:.4f}", help="From the prices in models.yaml.")
    counted = " (some counted locally)" if total.includes_counted else ""
    bottom[0].metric("Tokens in", f"{total.prompt_tokens:,}", help=f"Prompt tokens of all turns{counted}.")
    bottom[1].metric("Tokens out", f"{total.completion_tokens:,}", help="Reply tokens of all turns.")

    st.markdown("**Tokens per turn**")
    if drawing.usage is None:
        st.caption("The chart fills in as you chat: one point per turn.")
    else:
        st.vega_lite_chart(spec=drawing.usage, width="stretch", height=330)
    if connection.offline:
        st.caption("🔌 Offline model: its usage is computed locally, exactly as the API would report it.")
    mismatched = figures.mismatched
    if not mismatched.empty:
        st.warning(f"Counted and reported prompt tokens differ on {len(mismatched)} turn(s).")
        st.dataframe(drawing.mismatched, hide_index=True)
    elif figures.any_reported:
        st.caption("✅ Counted prompt tokens equal the reported ones on every turn.")

    st.markdown("**Context now**")
    st.vega_lite_chart(spec=drawing.gauge, width="stretch", height=80)
    st.caption("Left to right: " + " · ".join(f"{part} {tokens:,}" for part, tokens in gauge.parts()))
    in_context, drops = figures.in_context, figures.next_drops
    if drops:
        st.caption(
            f"{plural(in_context, 'message')} in context. The next turn would drop the oldest {len(drops)} "
            f"(from “{figures.next_drop_preview}”)."
        )
    else:
        st.caption(f"{plural(in_context, 'message')} in context. The next turn fits without trimming.")
    if not conversation.tokenizer.exact:
        st.warning(
            f"tiktoken does not know `{conversation.model}`: counts use "
            f"{conversation.tokenizer.encoding_name} and are estimates.",
            icon="📏",
        )

    with st.expander("Exactly what the next call sends"):
        st.dataframe(
            drawing.context,
            hide_index=True,
            column_config={
                "tokens": st.column_config.NumberColumn("tokens", format="%d"),
                "text": st.column_config.TextColumn("text", width="large"),
            },
        )
        st.caption(f"Total: {gauge.used:,} prompt tokens, as the API will count them, before trimming.")

    st.markdown("**Trimming log**")
    if figures.trims.empty:
        st.caption("Nothing trimmed yet.")
    else:
        st.dataframe(
            drawing.trims,
            hide_index=True,
            column_config={
                "messages_dropped": "dropped",
                "tokens_before": "before",
                "tokens_after": "after",
                "preview": "oldest dropped",
            },
        )
    with st.expander("Every turn"):
        st.dataframe(drawing.turns, hide_index=True)


# --- page --------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Persona Chat Dashboard", page_icon="💬", layout="wide")
    session_defaults()
    load_tokenizers()
    directory = personas_dir()
    catalog = persona_catalog(str(directory), directory_stamp(directory))
    if not catalog.personas:
        st.error(f"No persona could be loaded from {directory}.")
        for error in catalog.errors:
            st.error(str(error))
        st.stop()
    workspace = visitor_workspace()
    # The shipped personas, then this visitor's own (which never replace a shipped one).
    own = {pid: p for pid, p in workspace.custom_personas().items() if pid not in catalog.personas}
    catalog = PersonaCatalog(
        catalog.directory, {**catalog.personas, **own}, [*catalog.errors, *workspace.persona_errors]
    )
    st.session_state.catalog_ids = tuple(catalog.personas)
    if st.session_state.get("persona_id") not in catalog.personas:
        st.session_state.persona_id = next(iter(catalog.personas))

    persona, key, session, connection = sidebar(catalog, workspace)
    # The open conversation is in the link, so a reload (or a bookmark) returns to it.
    if key in workspace.handles:
        st.query_params[CONVERSATION_PARAM] = key
    elif CONVERSATION_PARAM in st.query_params:
        del st.query_params[CONVERSATION_PARAM]
    notice = st.session_state.notice
    if notice:
        st.session_state.notice = None
        {"error": st.error, "info": st.info}.get(notice[0], st.success)(notice[1])
    if st.session_state.store_error:
        st.warning(st.session_state.store_error, icon="💾")
        if st.session_state.stale:
            st.button(
                "Reload this conversation",
                on_click=reload_conversation,
                args=(workspace, key, session.backend),
                help="Another tab or server saved it since this page read it.",
            )

    header, views = st.columns([3, 2], vertical_alignment="bottom")
    header.title(f"{persona.avatar} {persona.name}")
    header.caption(TAGLINE)
    view = views.segmented_control(
        "View", list(VIEWS), format_func=lambda name: VIEWS[name], key="view", label_visibility="collapsed"
    )
    if view == "personas":
        if personas_view.EDITOR_STATE in st.session_state:
            personas_view.editor(catalog.personas)
        else:
            personas_view.gallery(catalog.personas, set(own), workspace.conversation_counts())
        return
    if view == "compare":
        if compare_view.STATE in st.session_state:
            compare_view.comparison_view(workspace)
        else:
            compare_view.setup(catalog.personas, workspace, session.backend)
        return
    chat_column, dashboard_column = st.columns([5, 4], gap="large")
    with dashboard_column:
        # Its own scrolling box too: the page fits the window and does not jump on each turn.
        dashboard_slot = st.container(height=DASHBOARD_HEIGHT_PX, border=False)
    with chat_column:
        chat(workspace, key, persona)
    with dashboard_slot:
        dashboard(session, connection)


main()
