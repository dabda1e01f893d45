"""Persona chat dashboard: talk to a model through a persona and watch exactly what it sees.

A thin page over `core/`: every number and chart comes from `core.stats` and `core.charts`.
Everything a visitor owns (conversations, API key, settings) lives in `st.session_state`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from core.backends import ChatRequest
from core.charts import gauge_chart, usage_chart
from core.connection import Connection, resolve_connection
from core.conversation import MAX_IMPORT_BYTES, Conversation, Message
from core.errors import BackendError, ConversationImportError, DashboardError, PromptTooLong
from core.model_info import ModelTable, load_model_table
from core.offline import preview
from core.personas import Persona, PersonaCatalog, load_personas
from core.stats import context_frame, context_gauge, next_turn_drops, totals, trims_frame, turns_frame
from core.tokens import BUNDLED_ENCODINGS, get_encoding

APP_DIR = Path(__file__).resolve().parent
# Word-by-word pacing of the offline model's reply, so streaming is visible; tests set it to 0.
OFFLINE_CHUNK_DELAY_S = float(os.environ.get("OFFLINE_CHUNK_DELAY_S", "0.02"))
CHAT_HEIGHT_PX = 560
DASHBOARD_HEIGHT_PX = 640
HISTORY_SHOWN = 200  # newest messages drawn on every rerun; older ones behind a toggle
STATE_BADGES = {
    "trimmed": ("trimmed · no longer in the model's context", "gray"),
    "unanswered": ("not answered · not in context", "orange"),
    "replaced": ("regenerated · not in context", "gray"),
}


# --- process-wide resources: loaded once per process, shared read-only by every session ---------


def personas_dir() -> Path:
    return Path(os.environ.get("PERSONAS_DIR") or APP_DIR / "personas")


def directory_stamp(directory: Path) -> tuple:
    """Changes when a persona file is added, removed or edited, so the cached catalog reloads."""
    try:
        entries = [(path.name, path.lstat()) for path in directory.iterdir()]
    except OSError:
        return ()
    return tuple(sorted((name, info.st_mtime_ns, info.st_size) for name, info in entries))


@st.cache_resource(show_spinner=False)
def persona_catalog(directory: str, stamp: tuple) -> PersonaCatalog:
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
    state.setdefault("conversations", {})  # persona id -> Conversation
    state.setdefault("reply_caps", {})  # persona id -> max reply tokens
    state.setdefault("chat_errors", {})  # persona id -> message of the last failed call
    state.setdefault("action", None)  # ("send", text) | ("retry",) | ("regenerate",), set by callbacks
    state.setdefault("notice", None)


def new_conversation(persona: Persona) -> Conversation:
    return Conversation(persona.system_prompt, persona.model, persona.context_budget, persona_id=persona.id)


def conversation_for(persona: Persona) -> Conversation:
    conversations = st.session_state.conversations
    if persona.id not in conversations:
        conversations[persona.id] = new_conversation(persona)
        st.session_state.reply_caps[persona.id] = persona.max_reply_tokens
    return conversations[persona.id]


def queue(*action: str) -> None:
    st.session_state.action = action


def start_over(persona: Persona) -> None:
    old = st.session_state.conversations.get(persona.id)
    fresh = new_conversation(persona)
    if old is not None:  # keep this session's model and budget choices
        fresh.model, fresh.context_budget = old.model, old.context_budget
    st.session_state.conversations[persona.id] = fresh
    st.session_state.chat_errors.pop(persona.id, None)


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
    st.session_state.conversations[target] = conversation
    st.session_state.reply_caps.setdefault(target, catalog.personas[target].max_reply_tokens)
    st.session_state.chat_errors.pop(target, None)
    st.session_state.persona_id = target
    st.session_state.notice = (
        "success",
        f"Imported {len(conversation.messages)} messages from {uploaded.name} "
        f"into {catalog.personas[target].name}.",
    )


# --- sidebar -----------------------------------------------------------------------------------


def sidebar(catalog: PersonaCatalog) -> tuple[Persona, Conversation, Connection]:
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
        conversation = conversation_for(persona)
        st.caption(persona.description)
        st.button("New conversation", icon="🆕", on_click=start_over, args=(persona,), width="stretch")
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
        conversation.model = (
            st.text_input(
                "Model",
                value=conversation.model,
                key=f"model::{persona.id}",
                help=f"Persona default: {persona.model}",
            ).strip()
            or persona.model
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
        conversation.context_budget = int(
            st.number_input(
                "Context budget (prompt tokens)",
                min_value=64,
                max_value=2_000_000,
                value=conversation.context_budget,
                step=64,
                key=f"budget::{persona.id}",
                help="The most prompt tokens a call may send. Older exchanges are trimmed to fit.",
            )
        )
        st.session_state.reply_caps[persona.id] = int(
            st.number_input(
                "Reply cap (max tokens per reply)",
                min_value=1,
                max_value=200_000,
                value=st.session_state.reply_caps[persona.id],
                step=50,
                key=f"reply_cap::{persona.id}",
                help="The most tokens one reply may have (max_tokens). Separate from the context budget.",
            )
        )

        st.header("Export / import")
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
    return persona, conversation, connection


# --- chat --------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def as_markdown(text: str) -> str:
    """Chat text for st.markdown: a `$` is a price, not the start of a LaTeX formula."""
    return text.replace("$", "\\$")


def render_message(message: Message, persona: Persona) -> None:
    avatar = persona.avatar if message.role == "assistant" else "🧑"
    with st.chat_message(message.role, avatar=avatar):
        badge = STATE_BADGES.get(message.state)
        if badge:
            st.badge(badge[0], color=badge[1])
        if message.interrupted:
            st.badge("interrupted · partial reply", color="orange")
        # Markdown without HTML: user, persona and model text is never rendered as raw HTML.
        if message.state == "context":
            st.markdown(as_markdown(message.content))
        else:
            st.caption(as_markdown(message.content))


def run_turn(persona: Persona, conversation: Conversation, connection: Connection) -> None:
    """Send the pending user message and stream the reply into the chat.

    Every outcome ends in a rerun, which redraws the history (with this turn's trims, badges and
    any error) and the dashboard from the conversation's record.
    """
    errors = st.session_state.chat_errors
    errors.pop(persona.id, None)
    try:
        messages = conversation.prepare()
    except PromptTooLong as error:
        errors[persona.id] = str(error)
        st.rerun()
    request = ChatRequest(
        messages=messages,
        model=conversation.model,
        max_reply_tokens=st.session_state.reply_caps[persona.id],
        # As a dict: a cached persona may hold a Sampling of a module version since reloaded.
        sampling=persona.sampling.model_dump(),
    )
    started = time.perf_counter()
    backend = stream = None

    def keep_partial(text: str) -> None:
        """Record what streamed before the reply broke off, marked interrupted."""
        if text:
            conversation.add_assistant(text, None, latency_s=time.perf_counter() - started, interrupted=True)

    with st.chat_message("assistant", avatar=persona.avatar):
        try:
            backend = connection.backend(offline_chunk_delay_s=OFFLINE_CHUNK_DELAY_S)
            stream = backend.stream(request)
            st.write_stream(stream)  # drops the usage chunk; the stream object keeps it
        except BackendError as error:
            # Refused before any text (raised by stream()) or broken off mid-reply (partial kept).
            keep_partial(stream.text if stream is not None else error.partial_text)
            errors[persona.id] = str(error)
            st.rerun()
        except BaseException:
            # Stopped (the chat input's stop button) or interrupted by another interaction:
            # keep what streamed, and hang up on the server.
            if stream is not None:
                stream.close()
                keep_partial(stream.text)
            raise
    if not stream.text:
        # Not recorded as something the assistant said; the question stays pending for Retry.
        message = f"The model sent an empty reply (finish reason: {stream.finish_reason})."
        if stream.finish_reason == "length":
            message += " Raise the reply cap: reasoning models can spend all of it on thinking."
        errors[persona.id] = message
        st.rerun()
    conversation.add_assistant(
        stream.text,
        stream.usage,
        usage_source="server" if backend.reports_server_usage else "local",
        latency_s=time.perf_counter() - started,
    )
    st.rerun()


def chat(persona: Persona, conversation: Conversation, connection: Connection, prompt: str | None) -> None:
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
            conversation.add_user(action[1])
            run_turn(persona, conversation, connection)
        elif action == ("retry",) and conversation.pending_user_message:
            run_turn(persona, conversation, connection)
        elif action == ("regenerate",) and conversation.turns and not conversation.pending_user_message:
            conversation.regenerate()
            run_turn(persona, conversation, connection)

    error = st.session_state.chat_errors.get(persona.id)
    if error:
        st.error(error, icon="⚠️")
    if not conversation.turns and not conversation.pending_user_message and persona.starter_prompts:
        st.caption("Try one of these:")
        for index, starter in enumerate(persona.starter_prompts):
            st.button(starter, key=f"starter::{persona.id}::{index}", on_click=queue, args=("send", starter))
    if conversation.pending_user_message:
        st.button("Retry", icon="🔁", on_click=queue, args=("retry",), key="retry")
    elif conversation.turns:
        st.button("Regenerate last answer", icon="🔄", on_click=queue, args=("regenerate",), key="regenerate")


# --- dashboard ---------------------------------------------------------------------------------


def dashboard(persona: Persona, conversation: Conversation, connection: Connection) -> None:
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
    drops = next_turn_drops(conversation)
    if drops:
        oldest = conversation.messages[drops[0]]
        st.caption(
            f"{plural(in_context, 'message')} in context. The next turn would drop the oldest {len(drops)} "
            f"(from “{preview(oldest.content, 40)}”)."
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
            context_frame(conversation),
            hide_index=True,
            column_config={"message": "#", "tokens": st.column_config.NumberColumn("tokens", format="%d")},
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

    persona, conversation, connection = sidebar(catalog)
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
        chat(persona, conversation, connection, prompt)
    with dashboard_slot:
        dashboard(persona, conversation, connection)


main()
