"""The chat page: the conversation with the persona beside the dashboard of what the model sees,
and in the sidebar the persona's conversations, the conversation's settings, export and import.
Every change goes through the visitor's `VisitorService`."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Literal

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.charts import dashboard_drawing, gauge_labels
from core.chat.conversation import MAX_IMPORT_BYTES, Message, MessageState
from core.chat.session import ChatSession
from core.chat.settings import MAX_CONTEXT_BUDGET, MAX_MODEL_NAME, MAX_REPLY_CAP, POLICY_NAMES
from core.counting.calibration import SilentTruncation
from core.counting.tokens import METHOD_CALIBRATED, METHOD_SERVER, METHOD_TIKTOKEN
from core.errors import BackendError, DashboardError
from core.notices import Notice
from core.personas.persona import Persona, chat_avatar
from core.service import StartedReply, VisitorService
from core.stats import Totals, dashboard_figures
from ui import compare_view
from ui.cache_metrics import cache_metric
from ui.charts import vega_chart
from ui.frame import CONVERSATION_PARAM, Frame
from ui.layout import Captions, lazy_expander
from ui.state import (
    Action,
    Key,
    conversation_list_key,
    page_state,
    pins_key,
    setting_key,
    show_all_key,
    summary_key,
    title_key,
)
from ui.text import as_markdown, error_text, money, notice_text, page_translator, tr, tr_plural

CHAT_HEIGHT_PX = 560
DASHBOARD_HEIGHT_PX = 640
HISTORY_SHOWN = 200  # newest messages drawn on every rerun; older ones behind a toggle
BADGE_COLORS: dict[MessageState, Literal["gray", "orange"]] = {
    MessageState.TRIMMED: "gray",
    MessageState.UNANSWERED: "orange",
    MessageState.REPLACED: "gray",
    MessageState.SUMMARIZED: "gray",
}
CONVERSATIONS_LISTED = 30
#: How often a streaming reply is redrawn (seconds).
STREAM_REDRAW_S = 0.1


def page(frame: Frame) -> None:
    service, persona = frame.service, frame.persona
    state = page_state()
    if state.get(Key.RERUN_PAGE):  # asked by a callback outside a fragment: this run is the page's
        state.set(Key.RERUN_PAGE, False)
    key, _, notes = service.session_for(persona)
    with frame.under_persona:
        conversation_list(service, persona, key)
        compare_view.recent_comparisons(service)
    if frame.settings is None:  # drawn only while open (ui/layout.lazy_expander)
        state.hold_limit_notes(key, notes)
    else:
        with frame.settings:
            settings_sidebar(service, persona, key, [*state.take_limit_notes(key), *notes])
            manage_conversation(service, persona, key)
            export_import(frame, key)
    if service.stale:
        st.button(
            tr("store.reload.label"), on_click=service.reload, args=(key,), help=tr("store.reload.help")
        )
    chat_column, dashboard_column = st.columns([5, 4], gap="large")
    with dashboard_column:
        # Its own scrolling box too: the page fits the window and does not jump on each turn.
        dashboard_slot = st.container(height=DASHBOARD_HEIGHT_PX, border=False)
        if frame.entered:
            keep_draft()  # at the dashboard's foot, where its empty element's gap shows nothing
    with chat_column:
        chat(service, key, persona)
    with dashboard_slot:
        dashboard(service, key, frame.connection.offline)


# --- sidebar -----------------------------------------------------------------------------------


def whole_page(action: Callable[..., object], *args: object) -> None:
    """A callback whose change the whole page shows: do it, then, if its widget is in a fragment,
    the fragment's rerun reruns the page (a callback cannot); elsewhere the page reruns anyway."""
    action(*args)
    ask_page_rerun()


def ask_page_rerun() -> None:
    """From a callback in a fragment: the fragment's rerun is to rerun the whole page instead."""
    page_state().set(Key.RERUN_PAGE, True)


def rerun_page_if_asked() -> None:
    """First thing in a fragment: rerun the whole page when one of its callbacks asked to."""
    state = page_state()
    if state.get(Key.RERUN_PAGE):
        state.set(Key.RERUN_PAGE, False)
        st.rerun(scope="app")


def open_conversation(service: VisitorService, conversation_id: str) -> None:
    persona_id = service.open_conversation(conversation_id)
    state = page_state()
    if persona_id in state.catalog_ids:  # a search may list another persona's
        state.persona_id = persona_id


def rename_conversation(service: VisitorService, conversation_id: str) -> None:
    service.rename(conversation_id, page_state().get(title_key(conversation_id), ""))


#: The conversation list's option for a new conversation (the others are conversation ids).
NEW_CONVERSATION = ""


def pick_conversation(service: VisitorService, persona: Persona, list_key: str) -> None:
    """on_change of the conversation list: open the one picked, or start a new one."""
    picked = page_state().get(list_key)
    if picked == NEW_CONVERSATION:
        whole_page(service.new_conversation, persona)
    elif picked is not None:
        whole_page(open_conversation, service, picked)


def conversation_list(service: VisitorService, persona: Persona, key: str) -> None:
    """This persona's conversations, newest first, and a search over all of them behind a closed
    expander; the open one is the list's choice. One radio group, New conversation first: a
    single stop for Tab however many are listed. While the search is open the list is a fragment
    (typing a search redraws it alone); closed, it is drawn with the page (a fragment's call costs
    a rerun as much as a few elements, and picking from the list redraws the whole page anyway)."""
    if page_state().get(Key.SEARCH_OPEN):
        searchable_conversation_list(service, persona, key)
    else:
        conversation_list_body(service, persona, key)


@st.fragment
def searchable_conversation_list(service: VisitorService, persona: Persona, key: str) -> None:
    rerun_page_if_asked()
    conversation_list_body(service, persona, key)


def conversation_list_body(service: VisitorService, persona: Persona, key: str) -> None:
    if service.deleted is not None:
        st.info(tr("conversations.deleted", title=service.deleted[1]), icon="🗑️")
        st.button(
            tr("conversations.undo_delete"),
            icon="↩️",
            on_click=whole_page,
            args=(service.undo_delete,),
            key="undo_delete",
        )
    if not service.saving:
        st.button(
            tr("conversations.new"),
            icon="🆕",
            on_click=whole_page,
            args=(service.new_conversation, persona),
            width="stretch",
            disabled=len(service.session(key).conversation.messages) < 2,
        )
        return
    try:
        search = conversation_search(service)
        listed = service.list_conversations(persona_id=None if search else persona.id, search=search or None)
    except DashboardError as error:
        st.error(tr("conversations.list_failed", error=error_text(error)))
        return
    if search and not listed:
        st.caption(tr("conversations.no_match"))
    shown = listed[:CONVERSATIONS_LISTED]
    # Titles that repeat are numbered, oldest first, so each reads apart from the others.
    repeats = Counter(summary.display_title for summary in shown)
    counted: Counter[str] = Counter()
    numbers: dict[str, int] = {}  # conversation id -> its number among those of its title
    for summary in reversed(shown):
        if repeats[summary.display_title] > 1:
            counted[summary.display_title] += 1
            numbers[summary.id] = counted[summary.display_title]
    labels = {NEW_CONVERSATION: f"🆕 {tr('conversations.new')}"}
    captions = [""]
    for summary in shown:
        title = summary.display_title
        if summary.id in numbers:
            title = tr("conversations.item.numbered", title=title, number=numbers[summary.id])
        labels[summary.id] = as_markdown(title)
        details = tr_plural(
            "conversations.item.details", summary.message_count - 1, updated=summary.updated_at
        )
        # The open one is the list's choice, and says so in words too.
        caption = tr("conversations.item.open", details=details) if summary.id == key else details
        if summary.match:
            caption += "  \n" + tr("conversations.item.match", snippet=as_markdown(summary.match))
        captions.append(caption)
    # The open conversation is chosen (a new one: New conversation; one a search leaves out: none).
    opened = key if service.is_saved(key) else NEW_CONVERSATION
    list_key = conversation_list_key(opened)
    st.radio(
        tr("conversations.label"),
        list(labels),
        index=list(labels).index(opened) if opened in labels else None,
        format_func=labels.__getitem__,
        captions=captions,
        key=list_key,
        on_change=pick_conversation,
        args=(service, persona, list_key),
        label_visibility="collapsed",
    )
    if len(listed) > CONVERSATIONS_LISTED:
        st.caption(tr("conversations.older", count=len(listed) - CONVERSATIONS_LISTED))


def conversation_search(service: VisitorService) -> str:
    """The search's text, in its expander (drawn while open; "" while closed): shown once there is
    more than one conversation to search, of any persona (raises the store's `DashboardError`)."""
    if not page_state().get(Key.SEARCH_OPEN) and sum(service.conversation_counts().values()) < 2:
        return ""
    search_box = lazy_expander(tr("conversations.search.label"), Key.SEARCH_OPEN, icon="🔍")
    if search_box is None:
        return ""
    with search_box:
        return st.text_input(
            tr("conversations.search.label"),
            key=Key.CONVERSATION_SEARCH,
            placeholder=tr("conversations.search.placeholder"),
            label_visibility="collapsed",
        )


def manage_conversation(service: VisitorService, persona: Persona, key: str) -> None:
    """Rename or delete the open conversation (in the sidebar's settings)."""
    if not service.is_saved(key):
        return
    st.subheader(tr("conversations.manage"))
    try:
        current = next((c for c in service.list_conversations(persona_id=persona.id) if c.id == key), None)
    except DashboardError:
        current = None  # the conversation list already says the store cannot be read
    title = current.display_title if current else ""
    st.text_input(tr("conversations.title"), value=title, key=title_key(key), max_chars=200)
    columns = st.columns(2)
    columns[0].button(
        tr("conversations.rename"),
        on_click=rename_conversation,
        args=(service, key),
        width="stretch",
    )
    columns[1].button(
        tr("conversations.delete"),
        icon="🗑️",
        on_click=service.delete,
        args=(key, title),
        width="stretch",
        key="delete_conversation",
    )


def settings_sidebar(service: VisitorService, persona: Persona, key: str, notes: list[Notice]) -> None:
    """The model, context budget, reply cap and policy of the open conversation, within the
    deployer's limits on the deployer's key."""
    settings = service.session(key).settings
    limits = service.limits
    for note in notes:
        st.caption(tr("sidebar.limits.applied", note=notice_text(note)))
    if limits is not None and limits.allowed_models:
        models = list(limits.allowed_models)
        model = st.selectbox(
            tr("sidebar.model.label"),
            models,
            index=models.index(settings.model) if settings.model in models else 0,
            key=setting_key("model", key),
            help=tr("sidebar.model.help", model=persona.model),
        )
    else:
        model = st.text_input(
            tr("sidebar.model.label"),
            value=settings.model,
            key=setting_key("model", key),
            max_chars=MAX_MODEL_NAME,
            help=tr("sidebar.model.help", model=persona.model),
        )
    st.subheader(tr("sidebar.budget.header"))
    max_budget = limits.max_context_budget if limits else MAX_CONTEXT_BUDGET
    max_cap = limits.max_reply_cap if limits else MAX_REPLY_CAP
    budget = st.number_input(
        tr("sidebar.budget.label"),
        min_value=64,
        max_value=max_budget,
        value=min(settings.context_budget, max_budget),
        step=64,
        key=setting_key("budget", key),
        help=tr("sidebar.budget.help"),
    )
    fitted = service.session(key).conversation.context_budget
    if fitted != settings.context_budget:
        st.caption(tr("sidebar.budget.fitted", budget=fitted, setting=settings.context_budget))
    reply_cap = st.number_input(
        tr("sidebar.reply_cap.label"),
        min_value=1,
        max_value=max_cap,
        value=min(settings.max_reply_tokens, max_cap),
        step=50,
        key=setting_key("reply_cap", key),
        help=tr("sidebar.reply_cap.help"),
    )
    # Labels fixed for this run: Streamlit (and AppTest) may format an option outside the run.
    policy_labels = {name: tr(f"policy.{name}") for name in POLICY_NAMES}
    policy = st.selectbox(
        tr("sidebar.policy.label"),
        list(POLICY_NAMES),
        index=POLICY_NAMES.index(settings.context_policy),
        format_func=policy_labels.__getitem__,
        key=setting_key("policy", key),
        help=tr("sidebar.policy.help"),
    )
    _, more_notes = service.change_settings(
        key,
        model=model.strip() or persona.model,
        context_budget=int(budget),
        max_reply_tokens=int(reply_cap),
        context_policy=policy,
    )
    for note in more_notes:
        st.caption(tr("sidebar.limits.applied", note=notice_text(note)))


def import_conversation(frame: Frame) -> None:
    """on_change of the uploader: runs before the page, so it may switch the persona selector.
    The file becomes a new conversation; nothing is overwritten."""
    uploaded = st.session_state.get(Key.IMPORT_FILE)
    if uploaded is None:
        return
    state = page_state()
    persona_id = frame.service.import_conversation(
        uploaded.getvalue(),
        uploaded.name,
        personas=frame.catalog.personas,
        fallback_persona_id=state.persona_id or frame.persona.id,
    )
    if persona_id is not None:
        state.persona_id = persona_id


def export_import(frame: Frame, key: str) -> None:
    persona = frame.persona
    conversation = frame.service.session(key).conversation
    st.subheader(tr("sidebar.export.header"))
    columns = st.columns(2)
    columns[0].download_button(
        "JSON",
        conversation.to_json,  # built when clicked, not on every rerun
        file_name=f"{persona.id}-conversation.json",
        mime="application/json",
        icon="⬇️",
        on_click="ignore",
        width="stretch",
    )
    columns[1].download_button(
        "Markdown",
        functools.partial(conversation.to_markdown, f"{persona.avatar} {persona.name}"),
        file_name=f"{persona.id}-conversation.md",
        mime="text/markdown",
        icon="⬇️",
        on_click="ignore",
        width="stretch",
    )
    st.file_uploader(
        tr("sidebar.import.label"),
        type=["json"],
        key=Key.IMPORT_FILE,
        on_change=import_conversation,
        args=(frame,),
        max_upload_size=max(1, MAX_IMPORT_BYTES // (1024 * 1024)),
    )


# --- chat --------------------------------------------------------------------------------------

#: Where this tab keeps the chat input's unsent text while another view is shown.
DRAFT_STORAGE = "persona-dashboard:chat-draft"
#: The script that keeps it: the text as typed (on every input, and every half second), forgotten
#: when sent (Enter or the send button), put back into a new, empty input when the chat view is
#: drawn again (through the value setter React watches, then an input event).
_KEEP_DRAFT_JS = """(() => {  // its own scope: the script runs again each time the view is shown
const storage = "%(storage)s";  // drawn %(run)s
const since = Date.now();
const watch = () => {
    const input = document.querySelector('[data-testid="stChatInputTextArea"]');
    if (!input) {
        if (Date.now() - since < 15000) setTimeout(watch, 100);
        return;
    }
    if (input.dataset.draftKept) return;  // an input watched since an earlier run
    input.dataset.draftKept = "1";
    const kept = sessionStorage.getItem(storage);
    if (kept && !input.value) {  // a new input: the chat view is shown again
        const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set;
        setter.call(input, kept);
        input.dispatchEvent(new Event("input", {bubbles: true}));
    }
    const keep = () => {
        if (input.isConnected) sessionStorage.setItem(storage, input.value);
    };
    const sent = () => sessionStorage.setItem(storage, "");
    input.addEventListener("input", keep);
    input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey) sent();
    });
    input.closest('[data-testid="stChatInput"]')
        ?.querySelector('[data-testid="stChatInputSubmitButton"]')
        ?.addEventListener("click", sent);
    const every = setInterval(() => (input.isConnected ? keep() : clearInterval(every)), 500);
};
watch();
})();
"""


def keep_draft() -> None:
    """The chat input's unsent text survives a switch to another view and back. Streamlit keeps
    it only in the browser's input (it reaches the server when sent, not before), and a view
    switch removes that input; so the tab's sessionStorage keeps it (never the server, a file or
    another tab), and the chat view puts it back. Drawn on the chat view's first run after
    another view (or a new session): the input it watches stays while the view does, and the
    script keeps watching it after the element is gone."""
    # Streamlit runs a script only when its element's HTML changes: a view switch back draws the
    # same element, so each time's differs.
    script = _KEEP_DRAFT_JS % {"storage": DRAFT_STORAGE, "run": time.monotonic_ns()}
    st.html(f"<script>{script}</script>", unsafe_allow_javascript=True)


def render_message(message: Message, persona: Persona) -> None:
    if message.automatic:  # the dashboard's own request to continue a cut reply
        st.caption(tr("chat.continued", preview=message.preview(80)))
        return
    avatar = chat_avatar(persona) if message.role == "assistant" else "🧑"
    with st.chat_message(message.role, avatar=avatar):
        if message.state in BADGE_COLORS:
            st.badge(tr(f"state.{message.state.value}"), color=BADGE_COLORS[message.state])
        if message.interrupted:
            st.badge(tr("chat.badge.interrupted"), color="orange")
        if message.cut_off:
            st.badge(tr("chat.badge.cut_off"), color="orange")
        if message.pinned:
            st.badge(tr("chat.badge.pinned"), color="blue", icon="📌")
        # Markdown without HTML: user, persona and model text is never rendered as raw HTML.
        if message.state is MessageState.CONTEXT:
            st.markdown(as_markdown(message.content))
        else:
            st.caption(as_markdown(message.content))


def stream_reply(service: VisitorService, key: str, persona: Persona, reply: Iterator[str]) -> None:
    """Stream a reply into the chat (the service saves the turn); every outcome ends in a rerun,
    which redraws the history (with this turn's trims, badges and any error) and the dashboard."""
    with st.chat_message("assistant", avatar=chat_avatar(persona)):
        try:
            show_streaming(reply)
        except DashboardError:
            pass  # the session holds the error; the rerun shows it
        except BaseException:
            # Stopped (the chat input's stop button) or interrupted by another interaction:
            # keep what streamed, hang up on the server, and save what was kept.
            if isinstance(reply, StartedReply):
                reply.close()
            service.stop(key)
            raise
    st.rerun()


@st.fragment
def render_summary(service: VisitorService, key: str) -> None:
    """The running summary where the folded messages end: what the model is sent instead of
    them, its versions, and an editor (the model sees the edited version from the next call).
    A fragment: typing in the editor redraws it alone; saving redraws the page."""
    conversation = service.session(key).conversation
    summary = conversation.summary
    if summary is None:
        return
    folded = sum(len(event.folded) for event in conversation.summary_events)
    with st.expander(tr("summary.title", count=folded, tokens=summary.tokens), icon="📝"):
        st.markdown(as_markdown(summary.text))
        for number, version in enumerate(summary.versions, start=1):
            source = tr(f"summary.source.{version.source}")
            st.caption(tr("summary.version", number=number, source=source, at=version.at))
        edited = st.text_area(
            tr("summary.edit.label"), value=summary.text, key=summary_key(key, len(summary.versions))
        )
        if edited.strip() and edited != summary.text:
            st.caption(tr("summary.edit.tokens", tokens=conversation.count_summary(edited)))
        if st.button(tr("summary.edit.save"), key=f"summary_save::{key}", disabled=edited == summary.text):
            try:
                service.edit_summary(key, edited)
            except DashboardError as error:
                st.error(error_text(error))
                return
            st.rerun()


def show_streaming(chunks: Iterator[str]) -> None:
    """Draw a reply as it arrives, at most every STREAM_REDRAW_S: each redraw sends the whole text
    so far to the browser, so redrawing per chunk (as st.write_stream does) would cost memory
    and bandwidth in proportion to the reply times its chunks."""
    placeholder = st.empty()
    text, drawn_at = "", 0.0
    # A tab that closes stops this run (Streamlit raises StopException at the next redraw); the
    # service's generator then stops the call and saves what arrived.
    for chunk in chunks:
        text += chunk
        if time.monotonic() - drawn_at >= STREAM_REDRAW_S:
            placeholder.markdown(as_markdown(text) + " ▌")
            drawn_at = time.monotonic()
    placeholder.markdown(as_markdown(text))


def error_details(error: DashboardError) -> str:
    """The data an error carries, in one line: status, how long to wait, the server's request id."""
    if not isinstance(error, BackendError):
        return ""
    parts = [tr("error.details.status", status=error.status_code)] if error.status_code else []
    if error.retry_after:
        parts.append(tr("error.details.wait", seconds=error.retry_after))
    if error.request_id:
        parts.append(tr("error.details.request_id", request_id=error.request_id))
    if not error.retryable:
        parts.append(tr("error.details.not_retryable"))
    return " · ".join(parts)


@st.fragment
def chat(service: VisitorService, key: str, persona: Persona) -> None:
    """The history, the chat input and the buttons under it. A fragment: sending (or retrying,
    regenerating, continuing) reruns it alone while the reply streams, so the sidebar and the
    dashboard are neither rebuilt first nor greyed meanwhile; the reply's end reruns the page,
    which redraws the dashboard with the turn."""
    rerun_page_if_asked()
    # The open conversation is in the link, so a reload (or a bookmark) returns to it: here, so
    # that a conversation saved by its first message has its link while the reply streams.
    if service.is_saved(key):
        if st.query_params.get(CONVERSATION_PARAM) != key:  # each setting is a message to the browser
            st.query_params[CONVERSATION_PARAM] = key
    elif CONVERSATION_PARAM in st.query_params:
        del st.query_params[CONVERSATION_PARAM]
    session = service.session(key)
    conversation = session.conversation
    # The history scrolls in a box of its own, so the dashboard stays in view beside the newest
    # messages; errors and buttons, then the chat input, sit under it. The input is not pinned
    # to the page bottom, so the page opens at the top (and on a phone, with the chat first).
    # A new conversation's box is only as tall as its greeting, so the chat input is on the first
    # screen (desktop and phone); once there are turns it scrolls at CHAT_HEIGHT_PX.
    history_box = st.container(height=CHAT_HEIGHT_PX if conversation.turns else "content", border=False)
    if (unsent := service.take_unsent(key)) is not None:
        # A stale tab's message that could not be saved: back in the input, once.
        page_state().set(Key.CHAT_INPUT, unsent)
        st.info(tr("chat.unsent_restored"), icon="↩️")
    # The reply a callback started (its message is in the history drawn below), streamed into it.
    reply = page_state().take_reply()
    streaming = reply if reply is not None and reply.key == key else None
    if streaming is None:  # a streamed reply ends in a rerun, which shows what became of it
        call_error(service, key)  # the last call's error and Retry, right under the history
    limits = service.limits
    # The request starts in the callback, before this page is drawn again.
    st.chat_input(
        tr("chat.input.placeholder", name=persona.name),
        key=Key.CHAT_INPUT,
        submit_mode="stop",
        max_chars=limits.max_message_chars if limits else None,
        on_submit=submit_message,
        args=(service, key),
    )
    with history_box:
        history = conversation.messages[1:]
        hidden = max(len(history) - HISTORY_SHOWN, 0)
        # Every rerun redraws the chat: past a few hundred messages, draw the oldest on request.
        if hidden and not st.toggle(
            tr("chat.show_earlier.label", count=hidden),
            key=show_all_key(key),
            help=tr("chat.show_earlier.help"),
        ):
            history = history[hidden:]
        elif persona.greeting:
            with st.chat_message("assistant", avatar=chat_avatar(persona)):
                st.markdown(as_markdown(persona.greeting))
        summary = conversation.summary
        if summary is not None and summary.through_id is None:
            render_summary(service, key)
        for message in history:
            render_message(message, persona)
            if summary is not None and message.id == summary.through_id:
                render_summary(service, key)
        for event in conversation.summary_events:
            if event.fallback:
                st.caption(tr("summary.fallback", turn=event.turn, reason=event.fallback_reason or "?"))
        if streaming is not None:
            stream_reply(service, key, persona, streaming)

    # Under the input: what to ask, ask again (so Tab reaches the input first); then the pins.
    chat_controls(service, key, persona)


def start_turn(service: VisitorService, key: str, action: Action, text: str = "") -> None:
    """A callback: begin the turn now (its request goes out before the page reruns)."""
    reply = service.start(key, action.value, text)
    if reply is not None:
        page_state().hold_reply(reply)
    else:  # refused or nothing to do: the notices and the conversation list are the page's
        ask_page_rerun()


def submit_message(service: VisitorService, key: str) -> None:
    """on_submit of the chat input."""
    text = st.session_state.get(Key.CHAT_INPUT)
    if text:
        start_turn(service, key, Action.SEND, text)


def call_error(service: VisitorService, key: str) -> None:
    """The last call's error with its data, and Retry."""
    session = service.session(key)
    if session.error is not None:
        st.error(as_markdown(error_text(session.error)), icon="⚠️")
        if details := error_details(session.error):
            st.caption(details)
    if session.can_retry:
        turn_button(service, key, Action.RETRY, tr("chat.retry"), "🔁")


def chat_controls(service: VisitorService, key: str, persona: Persona) -> None:
    """Starter prompts, and Regenerate / Continue."""
    session = service.session(key)
    conversation = session.conversation
    if not conversation.turns and not conversation.pending_user_message and persona.starter_prompts:
        st.caption(tr("chat.starters"))
        for index, starter in enumerate(persona.starter_prompts):
            st.button(
                as_markdown(starter),
                key=f"starter::{persona.id}::{index}",
                on_click=start_turn,
                args=(service, key, Action.SEND, starter),
            )
    if not session.can_regenerate or session.can_retry:
        return
    regenerate = (Action.REGENERATE, tr("chat.regenerate"), "🔄")
    if not session.can_continue:  # one button: no columns for it
        turn_button(service, key, *regenerate)
        return
    left, right = st.columns(2)
    with left:
        turn_button(service, key, *regenerate)
    with right:
        turn_button(service, key, Action.CONTINUE, tr("chat.continue"), "⏩")


def turn_button(service: VisitorService, key: str, action: Action, label: str, icon: str) -> None:
    """A button that starts a turn (`action`), keyed by the action."""
    st.button(label, icon=icon, on_click=start_turn, args=(service, key, action), key=action.value)


def pin_candidates(service: VisitorService, key: str) -> list[Message]:
    """The messages in context that may be pinned: every one but the system prompt and notes."""
    return [m for m in service.session(key).conversation.context_messages()[1:] if not m.automatic]


@st.fragment
def pin_choices(service: VisitorService, key: str) -> None:
    """Pin messages in context, beside the table of what the next call sends: no policy drops or
    summarizes a pinned message (one widget for the whole chat, not a button per message, so long
    chats stay quick). A fragment: choosing redraws it alone; a change made redraws the page (the
    chat's badges, the dashboard, and this expander, still open: its label does not change)."""
    conversation = service.session(key).conversation
    candidates = pin_candidates(service, key)
    labels = {m.id: f"{'🧑' if m.role == 'user' else '🤖'} {m.preview(70)}" for m in candidates}
    chosen = st.multiselect(
        tr("pins.label"),
        list(labels),
        default=[m.id for m in candidates if m.pinned],
        format_func=labels.__getitem__,
        key=pins_key(key, len(conversation.messages)),
        help=tr("pins.help"),
    )
    if service.pin(key, chosen, list(labels)):
        st.rerun()


# --- dashboard ---------------------------------------------------------------------------------
def dashboard(service: VisitorService, key: str, offline: bool) -> None:
    session = service.session(key)
    conversation = session.conversation
    # Figures and charts are built once per version of the conversation (a message, turn, trim,
    # pin or setting): a rerun that changed none of them walks no history and builds no chart.
    figures = dashboard_figures(conversation, session.policy, service.prices)
    drawing = dashboard_drawing(figures, page_translator())
    gauge, total = figures.gauge, figures.totals
    st.subheader(tr("dashboard.header"))
    priced = service.prices.lookup(conversation.model)
    # A grid of two columns, filled row by row: every metric has a line under its figure, so the
    # rows line up as separate st.columns rows would, for three elements fewer.
    left, right = st.columns(2)
    # What the next call sends, after the policy's drops: within the budget whenever it fits.
    sends = figures.next_call_tokens
    fraction = sends / gauge.budget if gauge.budget else 1.0
    of_budget = (
        tr(
            "dashboard.next_call.of_fitted",
            fraction=fraction,
            budget=gauge.budget,
            setting=gauge.budget_setting,
        )
        if gauge.budget_setting is not None
        else tr("dashboard.next_call.of", fraction=fraction, budget=gauge.budget)
    )
    left.metric(
        tr("dashboard.next_call.label"),
        f"{sends:,}",
        of_budget,
        delta_color="inverse" if sends > gauge.budget else "off",
        delta_arrow="off",
        help=tr("dashboard.next_call.help", used=gauge.used),
    )
    cost_metric(right, total, conversation.model, priced is not None, offline, len(conversation.turns))
    tokens_help = (
        tr("dashboard.tokens.help_some_counted") if total.includes_counted else tr("dashboard.tokens.help")
    )
    left.metric(
        tr("dashboard.tokens.label"),
        f"{total.prompt_tokens + total.completion_tokens:,}",
        tr(
            "dashboard.tokens.delta",
            tokens_in=f"{total.prompt_tokens:,}",
            tokens_out=f"{total.completion_tokens:,}",
        ),
        delta_color="off",
        delta_arrow="off",
        help=tokens_help,
    )
    if total.cache_reported:
        cache_metric(total, right, offline=offline)

    notes = Captions()  # the notes under a chart, one element while nothing comes between them
    if drawing.usage is None:
        notes.add(tr("dashboard.usage.empty"))
    else:
        vega_chart(drawing.usage, width="stretch", height=330)
    if offline:
        notes.add(tr("dashboard.usage.offline"))
    if figures.server_cut is not None:
        notes.draw()
        server_cut(service, figures.server_cut, key)
    if figures.mismatched:
        notes.draw()
        st.warning(tr("dashboard.usage.mismatch", count=len(figures.mismatched)))
        st.dataframe(drawing.mismatched, hide_index=True)
    elif figures.any_reported:
        notes.add(tr("dashboard.usage.match"))
    notes.draw()

    # As tall as its title, the bar and its legend.
    vega_chart(drawing.gauge, width="stretch", height="content")
    parts = " · ".join(f"{label} {tokens:,}" for _, label, tokens in gauge_labels(gauge, tr))
    notes.add(tr("dashboard.gauge.parts", parts=parts))
    in_context, drops = figures.in_context, figures.next_drops
    if drops:
        notes.add(
            tr_plural(
                "dashboard.context.drops", in_context, drops=len(drops), preview=figures.next_drop_preview
            )
        )
    else:
        notes.add(tr_plural("dashboard.context.fits", in_context))
    if not figures.trims:  # a line here; the trimming log's header and table once there are trims
        notes.add(tr("dashboard.trims.empty"))
    counting_status(session, notes)
    notes.draw()

    next_call = lazy_expander(tr("dashboard.next_call.header"), Key.NEXT_CALL_OPEN, icon="📌")
    if next_call is not None:
        with next_call:
            if pin_candidates(service, key):
                pin_choices(service, key)
            # A static table: every message's whole text, wrapped, the system prompt first.
            st.table(drawing.next_call, hide_index=True)
            st.caption(tr("dashboard.next_call.total", used=gauge.used))

    if figures.trims:
        st.markdown(f"**{tr('dashboard.trims.header')}**")
        st.table(drawing.trim_log, hide_index=True)  # each trim with the whole text it dropped
    if (turns := lazy_expander(tr("dashboard.turns.header"), Key.TURNS_OPEN)) is not None:
        with turns:
            st.dataframe(drawing.turns, hide_index=True)


def cost_metric(
    column: DeltaGenerator, total: Totals, model: str, priced: bool, offline: bool, turns: int
) -> None:
    """What the conversation cost, always with a line under the figure (its row's other metric
    has one): why it is unknown, what it would be offline, or what a turn costs on average."""
    label = tr("dashboard.cost.label")
    if total.cost is None or not priced:
        # The figure is a dash and the words go under it, where a narrow column never cuts them.
        figure, delta, help_text = (
            "—",
            tr("dashboard.cost.unknown"),
            tr("dashboard.cost.unknown_help", model=model),
        )
    elif offline:
        figure = "$0"
        delta = tr("dashboard.cost.offline_delta", cost=money(total.cost))
        help_text = tr("dashboard.cost.offline_help", model=model)
    else:
        figure, help_text = money(total.cost), tr("dashboard.cost.help")
        delta = (
            tr("dashboard.cost.per_turn", cost=money(total.cost / turns))
            if turns
            else tr("dashboard.cost.no_turns")
        )
    column.metric(label, figure, delta, delta_color="off", delta_arrow="off", help=help_text)


def server_cut(service: VisitorService, cut: SilentTruncation, key: str) -> None:
    """The server read only part of the last prompt: say so, and offer a budget below what it read."""
    read, sent = f"{cut.read:,}", f"{cut.sent:,}"
    st.warning(tr("dashboard.server_cut", read=read, sent=sent, budget=cut.suggested_budget))

    def lower_budget() -> None:
        service.change_settings(key, context_budget=cut.suggested_budget)
        # The budget field, drawn while the settings are open, shows it (and keeps it).
        st.session_state[setting_key("budget", key)] = cut.suggested_budget

    st.button(
        tr("dashboard.server_cut.fix", budget=cut.suggested_budget),
        key=f"server_cut::{key}",
        on_click=lower_budget,
    )


def counting_status(session: ChatSession, notes: Captions) -> None:
    """Which method counts this conversation's tokens, how far off it may be, and the budget calls
    are really fitted to (capped to the server's context window, less a margin while learning):
    added to `notes`, but for a warning."""
    status = session.counting.describe(session.conversation)
    if status.method == METHOD_TIKTOKEN:
        label = tr("counting.tiktoken")
    elif status.method == METHOD_SERVER:
        label = tr("counting.server")
    elif status.method.startswith(METHOD_CALIBRATED):
        label = tr(
            "counting.calibrated", error=100 * (status.error or status.margin), turns=status.calibrated_turns
        )
    else:
        label = tr("counting.uncalibrated", model=session.conversation.model)
    if status.exact or status.calibrated_turns:
        notes.add(label)
    else:
        notes.draw()
        st.warning(label)
    if status.context_window:
        notes.add(tr("counting.window", window=status.context_window))
    if status.budget != status.budget_setting:
        notes.add(tr("counting.budget", budget=status.budget, setting=status.budget_setting))
