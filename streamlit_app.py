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

from core.charts import gauge_chart, usage_chart
from core.connection import Backends, Connection, resolve_connection
from core.conversation import MAX_IMPORT_BYTES, Conversation, Message, MessageState
from core.errors import BackendError, ConversationImportError, DashboardError
from core.model_info import ModelTable, load_model_table
from core.personas import Persona, PersonaCatalog, load_personas
from core.session import ChatSession
from core.settings import MAX_CONTEXT_BUDGET, MAX_REPLY_CAP
from core.stats import context_frame, context_gauge, next_turn_drops, totals, trims_frame, turns_frame
from core.tokens import BUNDLED_ENCODINGS, get_encoding

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
# Widgets that hold a conversation's settings, per persona.
SETTING_WIDGETS = ("model", "budget", "reply_cap")


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


def session_defaults() -> None:
    state = st.session_state
    state.setdefault("sessions", {})  # persona id -> ChatSession
    state.setdefault("backends", Backends(offline_chunk_delay_s=OFFLINE_CHUNK_DELAY_S))
    state.setdefault("action", None)  # ("send", text) | ("retry",) | ("regenerate",) | ("continue",)
    state.setdefault("notice", None)


def session_for(persona: Persona, connection: Connection) -> ChatSession:
    """This visitor's session with `persona`, talking through `connection`'s backend."""
    sessions: dict[str, ChatSession] = st.session_state.sessions
    backend = st.session_state.backends.for_connection(connection)
    if persona.id not in sessions:
        sessions[persona.id] = ChatSession.start(persona, backend)
    session = sessions[persona.id]
    session.backend = backend
    return session


def queue(*action: str) -> None:
    st.session_state.action = action


def start_over(old: ChatSession, persona: Persona) -> None:
    fresh = ChatSession.start(persona, old.backend)
    settings = old.settings  # keep this session's model, budget and reply cap
    fresh.update_settings(
        model=settings.model,
        context_budget=settings.context_budget,
        max_reply_tokens=settings.max_reply_tokens,
    )
    st.session_state.sessions[persona.id] = fresh


def import_conversation(catalog: PersonaCatalog) -> None:
    """on_change of the uploader: runs before the page, so it may switch the persona selector."""
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
    current: ChatSession = st.session_state.sessions[st.session_state.persona_id]
    st.session_state.sessions[target] = ChatSession(conversation, current.backend)
    for widget in SETTING_WIDGETS:  # show the imported settings, not the previous ones
        st.session_state.pop(f"{widget}::{target}", None)
    st.session_state.persona_id = target
    st.session_state.notice = (
        "success",
        f"Imported {len(conversation.messages)} messages from {uploaded.name} "
        f"into {catalog.personas[target].name}.",
    )


# --- sidebar -----------------------------------------------------------------------------------


def sidebar(catalog: PersonaCatalog) -> tuple[Persona, ChatSession, Connection]:
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
        new_conversation = st.container()
        if catalog.errors:
            with st.expander(f"⚠️ {len(catalog.errors)} persona file(s) could not be loaded", expanded=True):
                for error in catalog.errors:
                    st.error(str(error), icon="📄")

        st.header("Connection")
        st.text_input(
            "API key",
            type="password",
            key="api_key",
            help="Kept only in this browser session. Also read from secrets or OPENAI_API_KEY.",
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
        session = session_for(persona, connection)
        new_conversation.button(
            "New conversation", icon="🆕", on_click=start_over, args=(session, persona), width="stretch"
        )
        settings = session.settings
        model = st.text_input(
            "Model",
            value=settings.model,
            key=f"model::{persona.id}",
            help=f"Persona default: {persona.model}",
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
            key=f"budget::{persona.id}",
            help="The most prompt tokens a call may send. Older exchanges are trimmed to fit.",
        )
        reply_cap = st.number_input(
            "Reply cap (max tokens per reply)",
            min_value=1,
            max_value=MAX_REPLY_CAP,
            value=settings.max_reply_tokens,
            step=50,
            key=f"reply_cap::{persona.id}",
            help="The most tokens one reply may have (max_tokens). Separate from the context budget.",
        )
        session.update_settings(
            model=model.strip() or persona.model, context_budget=int(budget), max_reply_tokens=int(reply_cap)
        )

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
            "Import a JSON export",
            type=["json"],
            key="import_file",
            on_change=import_conversation,
            args=(catalog,),
            max_upload_size=max(1, MAX_IMPORT_BYTES // (1024 * 1024)),
        )
    return persona, session, connection


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


def stream_reply(session: ChatSession, persona: Persona, reply: Callable[[], Iterator[str]]) -> None:
    """Stream a reply into the chat; every outcome ends in a rerun, which redraws the history
    (with this turn's trims, badges and any error) and the dashboard from the session's record."""
    with st.chat_message("assistant", avatar=persona.avatar):
        try:
            st.write_stream(reply())  # drops the usage chunk; the session's stream keeps it
        except DashboardError:
            pass  # the session holds the error; the rerun shows it
        except BaseException:
            # Stopped (the chat input's stop button) or interrupted by another interaction:
            # keep what streamed, and hang up on the server.
            session.stop()
            raise
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


def chat(persona: Persona, session: ChatSession, prompt: str | None) -> None:
    conversation = session.conversation
    # A scrolling box of its own, so the dashboard stays in view beside the newest messages.
    with st.container(height=CHAT_HEIGHT_PX, border=False):
        history = conversation.messages[1:]
        hidden = max(len(history) - HISTORY_SHOWN, 0)
        # Every rerun redraws the chat: past a few hundred messages, draw the oldest on request.
        if hidden and not st.toggle(
            f"Show {hidden:,} earlier messages", key=f"show_all::{persona.id}", help="All are in the export."
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
            stream_reply(session, persona, lambda: session.send(action[1]))
        elif action == ("retry",) and session.can_retry:
            stream_reply(session, persona, session.retry)
        elif action == ("regenerate",) and session.can_regenerate:
            stream_reply(session, persona, session.regenerate)
        elif action == ("continue",) and session.can_continue:
            stream_reply(session, persona, session.continue_reply)

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
    conversation, policy = session.conversation, session.policy
    st.subheader("What the model sees")
    gauge = context_gauge(conversation)
    total = totals(conversation, model_table())
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

    turns = turns_frame(conversation)
    trims = trims_frame(conversation)
    st.markdown("**Tokens per turn**")
    if turns.empty:
        st.caption("The chart fills in as you chat: one point per turn.")
    else:
        st.altair_chart(usage_chart(turns, trims), width="stretch", height=330)
    if connection.offline:
        st.caption("🔌 Offline model: its usage is computed locally, exactly as the API would report it.")
    mismatched = turns[turns["difference"].fillna(0) != 0]
    if not mismatched.empty:
        st.warning(f"Counted and reported prompt tokens differ on {len(mismatched)} turn(s).")
        st.dataframe(
            mismatched[["turn", "counted_prompt_tokens", "reported_prompt_tokens", "difference"]],
            hide_index=True,
        )
    elif turns["reported_prompt_tokens"].notna().any():
        st.caption("✅ Counted prompt tokens equal the reported ones on every turn.")

    st.markdown("**Context now**")
    st.altair_chart(gauge_chart(gauge), width="stretch", height=80)
    parts = gauge.frame().itertuples()
    st.caption("Left to right: " + " · ".join(f"{part.part} {part.tokens:,}" for part in parts))
    in_context = len(conversation.context_messages())
    drops = next_turn_drops(conversation, policy)
    if drops:
        oldest = conversation.message(drops[0])
        st.caption(
            f"{plural(in_context, 'message')} in context. The next turn would drop the oldest {len(drops)} "
            f"(from “{oldest.preview(40)}”)."
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
            context_frame(conversation, policy),
            hide_index=True,
            column_config={
                "tokens": st.column_config.NumberColumn("tokens", format="%d"),
                "text": st.column_config.TextColumn("text", width="large"),
            },
        )
        st.caption(f"Total: {gauge.used:,} prompt tokens, as the API will count them, before trimming.")

    st.markdown("**Trimming log**")
    if trims.empty:
        st.caption("Nothing trimmed yet.")
    else:
        st.dataframe(
            trims[["turn", "messages_dropped", "tokens_before", "tokens_after", "preview"]],
            hide_index=True,
            column_config={
                "messages_dropped": "dropped",
                "tokens_before": "before",
                "tokens_after": "after",
                "preview": "oldest dropped",
            },
        )
    with st.expander("Every turn"):
        st.dataframe(turns, hide_index=True)


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
    if st.session_state.get("persona_id") not in catalog.personas:
        st.session_state.persona_id = next(iter(catalog.personas))

    persona, session, connection = sidebar(catalog)
    notice = st.session_state.notice
    if notice:
        st.session_state.notice = None
        (st.error if notice[0] == "error" else st.success)(notice[1])

    st.title(f"{persona.avatar} {persona.name}")
    # At the top level the chat input is pinned to the bottom of the page.
    prompt = st.chat_input(f"Message {persona.name}…", key="chat_input", submit_mode="stop")
    chat_column, dashboard_column = st.columns([5, 4], gap="large")
    with dashboard_column:
        # Its own scrolling box too: the page fits the window and does not jump on each turn.
        dashboard_slot = st.container(height=DASHBOARD_HEIGHT_PX, border=False)
    with chat_column:
        chat(persona, session, prompt)
    with dashboard_slot:
        dashboard(session, connection)


main()
