"""What every page shares: the process's resources, the page's language, this visitor's
application service, the sidebar's persona selector and connection, and the notices on top."""

from __future__ import annotations

import functools
import gc
import importlib
import os
import re
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.navigation.page import StreamlitPage

from core.counting.model_info import ModelTable, load_model_table
from core.counting.tokens import BUNDLED_ENCODINGS, get_encoding
from core.errors import (
    AddressRefused,
    AuthenticationFailed,
    ConnectionFailed,
    DashboardError,
    PermissionDenied,
)
from core.i18n import LANGUAGE_PARAM, LANGUAGE_STATE, LANGUAGES, Language, language_for
from core.notices import Notice
from core.personas.persona import Persona, PersonaCatalog, load_personas
from core.policy.netguard import base_url_choices
from core.policy.owners import (
    LOCAL_OWNER,
    WORKSPACE_PARAM,
    AccessMode,
    InvalidWorkspaceLink,
    is_local_visitor,
    new_workspace_token,
    owner_for_token,
    owner_for_user,
)
from core.providers.connection import Backends, Connection
from core.service import Deployment, VisitorService
from core.store.database import Store
from core.store.workspace import Workspace
from ui.layout import lazy_expander
from ui.state import Key, page_state
from ui.text import as_markdown, error_text, page_translator, show_notice, tr, use_language

APP_DIR = Path(__file__).resolve().parent.parent
#: The query parameter naming the open conversation, so a reload returns to it.
CONVERSATION_PARAM = "c"
#: Failures that say the connection itself does not work (not the model or the request).
CONNECTION_ERRORS = (ConnectionFailed, AuthenticationFailed, PermissionDenied, AddressRefused)


#: What the pages in app_pages/ run, imported before `freeze_startup_objects`.
PAGE_MODULES = (
    "ui.chat_page",
    "ui.personas_view",
    "ui.persona_exchange",
    "ui.compare_view",
    "ui.whatif_view",
)

# --- process-wide resources: loaded once per process, shared read-only by every session ---------


#: The name Streamlit gives the thread of each script run (streamlit/runtime/scriptrunner/script_runner.py).
SCRIPT_THREAD_NAME = "ScriptRunner.scriptThread"


def another_script_runs() -> bool:
    """Whether another browser session's script (a rerun, a chat turn, a streaming reply) is
    running now: what a what-if replay rests for (`core.chat.replay.Pacer`)."""
    me = threading.current_thread()
    return any(thread is not me and thread.name == SCRIPT_THREAD_NAME for thread in threading.enumerate())


def personas_dir() -> Path:
    return Path(os.environ.get("PERSONAS_DIR") or APP_DIR / "personas")


def directory_stamp(directory: Path) -> str:
    """Changes when a persona file is added, removed or edited."""
    try:
        entries = [(path.name, path.lstat()) for path in directory.iterdir()]
    except OSError:
        return ""
    return repr(sorted((name, info.st_mtime_ns, info.st_size) for name, info in entries))


#: How often a serving process looks at its personas folder again (seconds).
PERSONAS_RECHECK_S = 1.0


class PersonaFolder:
    """The personas of one folder, shared by every session of the process: read again when a
    file in it is added, removed or edited, which is looked for at most every
    PERSONAS_RECHECK_S (a rerun then costs no listing of the folder and no hashing of its stamp)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._stamp = directory_stamp(directory)
        self._catalog = load_personas(directory)
        self._checked = time.monotonic()

    def catalog(self) -> PersonaCatalog:
        if time.monotonic() - self._checked >= PERSONAS_RECHECK_S:
            with self._lock:
                if time.monotonic() - self._checked >= PERSONAS_RECHECK_S:
                    stamp = directory_stamp(self.directory)
                    if stamp != self._stamp:
                        self._catalog, self._stamp = load_personas(self.directory), stamp
                    self._checked = time.monotonic()
        return self._catalog


# Called on every rerun of every session: `functools.cache` is a dictionary lookup, where
# `st.cache_resource` hashes the arguments and checks its scope first (0.1 ms a call).
@functools.cache
def persona_folder(directory: str) -> PersonaFolder:
    return PersonaFolder(Path(directory))


@st.cache_resource(show_spinner=False)
def model_table() -> ModelTable:
    return load_model_table()


def load_tokenizers() -> None:
    for name in BUNDLED_ENCODINGS:
        get_encoding(name)


#: The collector's thresholds for a serving process (Python's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)


@functools.cache  # called on every rerun, as `persona_folder` is
def start_process() -> None:
    """What a serving process loads once, on its first page: the tokenizers and the price table,
    then the collector's settings (`freeze_startup_objects`). One cached call a run."""
    load_tokenizers()
    model_table()
    freeze_startup_objects()


def freeze_startup_objects() -> None:
    """Keep the garbage collector off the hot path of a serving process.

    What start-up loaded (modules, tokenizers, personas) is frozen, so no full collection walks
    it. The pages' modules (and what they import: the providers' SDKs, numpy, markdown-it, ...)
    are imported first: `st.navigation` would import them only when their page first runs,
    after the freeze. Streamlit's own full collection after every run is off
    (.streamlit/config.toml). And the youngest generation is collected every 50,000 allocations
    instead of 700: a script run's own objects then die before a collection sees them, instead
    of reaching the oldest generation and triggering full collections over every session's
    history. benchmarks/load.py, 50 visitors for 60 s: p95 2.7-3.7 s at 78-81 ms of CPU per
    turn with Python's thresholds, 0.65 s at 73 ms with these, same resident memory (387 MiB)."""
    for module in PAGE_MODULES:
        importlib.import_module(module)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@st.cache_resource(show_spinner=False)
def open_store(database_url: str, data_dir: str) -> Store:
    """The process's store (one connection pool shared by every session); errors are not cached,
    so a fixed database is picked up on the next rerun."""
    return Store.from_environ({"DATABASE_URL": database_url, "DATA_DIR": data_dir})


def deployer_secrets() -> dict[str, object]:
    """st.secrets as a dict; a deployment with no secrets.toml simply has none."""
    try:
        return dict(st.secrets)
    except FileNotFoundError:
        return {}


# --- language ----------------------------------------------------------------------------------


def page_language() -> Language:
    """This run's language: `?lang=`, else the sidebar choice, else the browser's locale. Kept in
    the session state, where `tr` and the callbacks (which run before the page) read it."""
    language = language_for(
        st.query_params.get(LANGUAGE_PARAM), st.session_state.get(Key.LANGUAGE_CHOSEN), st.context.locale
    )
    page_state().keep(LANGUAGE_STATE, language)
    use_language(language)
    return language


def choose_language() -> None:
    """on_change of the language switch; the link keeps the choice, so a reload does too."""
    st.session_state[Key.LANGUAGE_CHOSEN] = st.session_state[Key.LANGUAGE_SWITCH]
    st.query_params[LANGUAGE_PARAM] = st.session_state[Key.LANGUAGE_SWITCH]


def language_switch() -> None:
    """The language selector (in the sidebar's settings), showing the language this run uses,
    whichever source chose it."""
    st.session_state[Key.LANGUAGE_SWITCH] = page_translator().language
    st.selectbox(
        tr("sidebar.language"),
        list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key=Key.LANGUAGE_SWITCH,
        on_change=choose_language,
    )


def html_lang() -> None:
    """Streamlit's page says <html lang="en">: say the language shown instead (screen readers
    pick their voice by it, browsers their CJK font and translation offer). Said once per
    language change (the attribute stays when the element goes); nothing to say while the page
    has only been English. Called last in the sidebar: the element is empty but has a gap."""
    language = page_translator().language
    if language == (st.session_state.get(Key.HTML_LANG_SET) or "en"):
        return
    st.session_state[Key.HTML_LANG_SET] = language
    st.html(f'<script>document.documentElement.lang = "{language}";</script>', unsafe_allow_javascript=True)


# --- this visitor ------------------------------------------------------------------------------

#: Where the browser keeps a conversation link through sign-in (the provider's callback lands on
#: the front page, without the link's `?c=`).
RETURN_LINK_STORAGE = "persona-dashboard:return-to"
#: A conversation id as the store makes them (uuid4 hex): nothing else is written into a script.
CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")


def remember_link() -> None:
    """Before sign-in: keep the `?c=` conversation of the link in this tab's sessionStorage."""
    wanted = st.query_params.get(CONVERSATION_PARAM, "")
    if CONVERSATION_ID.fullmatch(wanted):
        st.html(
            f'<script>sessionStorage.setItem("{RETURN_LINK_STORAGE}", "{wanted}");</script>',
            unsafe_allow_javascript=True,
        )


def return_to_link() -> None:
    """After sign-in, once per session: reopen the link kept before it (`remember_link`)."""
    if st.session_state.get(Key.RETURN_LINK_CHECKED) or CONVERSATION_PARAM in st.query_params:
        return
    st.session_state[Key.RETURN_LINK_CHECKED] = True
    st.html(
        "<script>"
        f'const wanted = sessionStorage.getItem("{RETURN_LINK_STORAGE}");'
        f'sessionStorage.removeItem("{RETURN_LINK_STORAGE}");'
        "if (wanted && /^[0-9a-f]{32}$/.test(wanted)) {"
        "  const url = new URL(window.location.href);"
        f'  url.searchParams.set("{CONVERSATION_PARAM}", wanted);'
        "  window.location.replace(url);"
        "}"
        "</script>",
        unsafe_allow_javascript=True,
    )


def signed_in_as() -> None:
    """With OIDC sign-in: who is signed in, and a way to sign out (st.logout). Read once per
    session, as its owner is (`visitor_owner`): signing in or out reloads the page, a new session."""
    who = st.session_state.get(Key.SIGNED_IN_AS)
    if who is None:
        user = st.user.to_dict()
        signed_in = bool(user.get("is_logged_in"))
        who = str(user.get("name") or user.get("email") or user.get("sub") or "") if signed_in else False
        st.session_state[Key.SIGNED_IN_AS] = who
    if who is False:
        return
    st.caption(tr("signin.as", who=who))
    st.button(tr("signin.logout"), icon="🚪", on_click=st.logout, key=Key.SIGN_OUT)


def visitor_owner(mode: AccessMode) -> tuple[str, bool]:
    """Whose conversations this browser session sees (see core/policy/owners.py), and whether its
    private workspace was made just now; may stop the page to ask for sign-in."""
    if mode == "single-user":
        return LOCAL_OWNER, False
    user = st.user.to_dict()
    if "is_logged_in" in user:  # the deployer configured OIDC sign-in ([auth] in secrets)
        if not user["is_logged_in"]:
            st.title(f"💬 {tr('page.name')}")
            st.write(tr("signin.prompt"))
            remember_link()
            st.button(tr("signin.button"), on_click=st.login, type="primary")
            st.stop()
        return_to_link()
        return owner_for_user(str(user.get("iss", "")), str(user.get("sub", ""))), False
    token = st.query_params.get(WORKSPACE_PARAM)
    made = not token
    if not token:
        token = new_workspace_token()
        st.query_params[WORKSPACE_PARAM] = token
    try:
        owner = owner_for_token(token)
    except InvalidWorkspaceLink as error:
        st.error(error_text(error))
        st.button(tr("workspace.start_new"), on_click=st.query_params.clear)
        st.stop()
    st.session_state[Key.WORKSPACE_TOKEN] = token
    return owner, made


@dataclass(frozen=True)
class Frame:
    """What a page is drawn in: this visitor's service, the personas, the persona chosen in the
    sidebar and the connection."""

    service: VisitorService
    catalog: PersonaCatalog
    #: The visitor's own personas (ids), beside the shipped ones in `catalog`.
    own: frozenset[str]
    persona: Persona
    connection: Connection
    #: The sidebar's place under the persona selector (the chat page lists conversations there).
    under_persona: DeltaGenerator
    #: The sidebar's settings, under the connection (the chat page adds the conversation's), while
    #: they are open; None while closed (nothing in them is drawn then: ui/layout.lazy_expander).
    settings: DeltaGenerator | None
    #: The view the link names, for the entry point to run.
    view: StreamlitPage
    #: True on the view's first run since another view was shown, or since the session began.
    entered: bool


def visitor_service(deployment: Deployment) -> VisitorService:
    """This browser session's service, made on its first run (its workspace opened then)."""
    state = page_state()
    if st.session_state.get(Key.SERVICE) is None:
        owner, made = visitor_owner(deployment.access_mode)
        store: Store | None = None
        store_error: DashboardError | None = None
        try:
            store = open_store(os.environ.get("DATABASE_URL", ""), os.environ.get("DATA_DIR", ""))
        except DashboardError as error:
            store_error = error
        # Word-by-word pacing of the offline model's reply, so streaming is visible; tests set 0.
        delay = float(os.environ.get("OFFLINE_CHUNK_DELAY_S", "0.02"))
        service = VisitorService(
            Workspace(store, owner),
            Backends(offline_chunk_delay_s=delay),
            prices=model_table(),
            contended=another_script_runs,
        )
        service.store_error = store_error
        if made:  # shown with the page's other notices, under the view switch
            service.notify(Notice(code="private_workspace"))
        st.session_state[Key.SERVICE] = service
        opened = st.query_params.get(CONVERSATION_PARAM)
        if opened:  # a reload, or a shared link of one's own: reopen that conversation
            persona_id = service.open_conversation(opened)
            if persona_id is not None:
                state.persona_id = persona_id
    else:
        token = st.session_state.get(Key.WORKSPACE_TOKEN)
        if token and WORKSPACE_PARAM not in st.query_params:  # a page switch clears the link's query
            st.query_params[WORKSPACE_PARAM] = token
    service = state.service
    service.configure(deployment)
    return service


#: This run's frame, for the page the entry point runs (a script run is one thread, one context).
_CURRENT: ContextVar[Frame] = ContextVar("frame")


def current_frame() -> Frame:
    """The frame the entry point drew for this run."""
    return _CURRENT.get()


def frame() -> Frame:
    """Set up the page (language, resources, this visitor) and draw what every page shows: the
    sidebar's persona selector and connection, and the notices. Returns what the page needs."""
    page_language()
    st.set_page_config(page_title=tr("page.name"), page_icon="💬", layout="wide")
    # With ACCESS_MODE unset, only the person at this machine is trusted (core/policy/owners.py). The
    # handshake's peer and headers do not change within a session: asked once per session.
    local = st.session_state.get(Key.LOCAL_VISITOR)
    if local is None:
        local = st.session_state[Key.LOCAL_VISITOR] = is_local_visitor(
            st.context.ip_address, st.context.headers.items()
        )
    if not local:
        # No traceback or server path for anyone not at this machine. The option is the
        # process's, so once a stranger has visited it stays "none" (never back to a traceback
        # that another session's run could show them).
        st.set_option("client.showErrorDetails", "none")
    try:
        deployment = Deployment.from_settings(deployer_secrets(), os.environ, local_visitor=local)
    except DashboardError as error:  # a deployer's setting is malformed
        st.error(error_text(error))
        st.stop()
    directory = personas_dir()
    catalog = persona_folder(str(directory)).catalog()
    start_process()  # after the personas' first load, which it freezes too
    if not catalog.personas:
        st.error(tr("page.no_personas", directory=directory))
        for problem in catalog.errors:
            st.error(error_text(problem))
        st.stop()
    service = visitor_service(deployment)  # may stop the page to ask for sign-in
    view, entered = view_switch()  # at the top, above the notices
    # The shipped personas, then this visitor's own (which never replace a shipped one).
    own = {pid: p for pid, p in service.custom_personas().items() if pid not in catalog.personas}
    catalog = PersonaCatalog(
        catalog.directory, {**catalog.personas, **own}, [*catalog.errors, *service.persona_errors]
    )
    state = page_state()
    state.catalog_ids = tuple(catalog.personas)
    if state.persona_id not in catalog.personas:
        state.persona_id = next(iter(catalog.personas))
    persona, connection, under_persona, settings = sidebar(service, catalog, deployment)
    drawn = Frame(
        service,
        catalog,
        frozenset(own),
        persona,
        connection,
        under_persona,
        settings,
        view,
        entered,
    )
    _CURRENT.set(drawn)
    notices(service)
    if deployment.shared_with_strangers:
        st.warning(tr("access.shared_with_strangers"), icon="👥")
    title(persona)
    return drawn


def sidebar(
    service: VisitorService, catalog: PersonaCatalog, deployment: Deployment
) -> tuple[Persona, Connection, DeltaGenerator, DeltaGenerator | None]:
    """The persona and (the chat page's) conversations; the connection and every setting, the
    language's too, in one closed expander, so that few stops come before the chat input for a
    keyboard (the sidebar precedes the page in Tab order)."""
    with st.sidebar:
        signed_in_as()
        persona_id = st.selectbox(
            tr("sidebar.persona.label"),
            list(catalog.personas),
            format_func=lambda pid: f"{catalog.personas[pid].avatar} {catalog.personas[pid].name}",
            key=Key.PERSONA,
        )
        persona = catalog.personas[persona_id]  # its description is under the page's title
        under_persona = st.container()
        if catalog.errors:
            with st.expander(tr("sidebar.persona_errors", count=len(catalog.errors)), expanded=True):
                for error in catalog.errors:
                    st.error(error_text(error), icon="📄")
        # What the connection does, in view above the settings: they draw the key and URL it
        # uses while open, and the session state keeps both whether or not they are drawn.
        try:
            connection = service.connect(
                typed_key=st.session_state.get(Key.API_KEY, ""),
                typed_base_url=typed_base_url(deployment.access_mode, list(deployment.allowed_base_urls)),
                language=page_translator().language,
            )
        except DashboardError as error:  # a deployer's setting is malformed
            st.error(error_text(error))
            st.stop()
        if service.refused_base_url is not None:
            st.error(tr("sidebar.base_url.refused", error=error_text(service.refused_base_url)))
        connection_status(service, persona, connection)
        # Drawn only while open (ui/layout.lazy_expander): eight elements, five of them widgets,
        # that no rerun with it closed need build. The key and URL typed there are kept while
        # it is closed (`persist_state`); the model, budget and policy are the conversation's.
        settings = lazy_expander(tr("sidebar.settings"), Key.SETTINGS_OPEN)
        if settings is not None:
            with settings:
                # In the settings, as LibreChat's, Open WebUI's and LobeHub's: the browser's
                # language (or the link's ?lang=) is chosen without it.
                language_switch()
                st.subheader(tr("sidebar.connection.header"))
                st.text_input(
                    tr("sidebar.api_key.label"),
                    type="password",
                    key=Key.API_KEY,
                    help=tr("sidebar.api_key.help"),
                    persist_state="session",
                )
                base_url_field(deployment.access_mode, list(deployment.allowed_base_urls))
        html_lang()
    return persona, connection, under_persona, settings


def choose_view() -> None:
    """on_change of the view switch: the page switches to it in this run (a callback cannot)."""
    st.session_state[Key.VIEW_CHOSEN] = st.session_state[Key.VIEW]


def view_pages() -> dict[str, StreamlitPage]:
    """The views by their URL path, titled in the page's language: made once per session and
    language (four `st.Page`s, each resolving its file, cost a rerun half a millisecond)."""
    language = page_translator().language
    made = st.session_state.get(Key.VIEW_PAGES)
    if made is None or made[0] != language:
        views = [
            st.Page("app_pages/chat.py", title=tr("views.chat"), url_path="chat", default=True),
            st.Page("app_pages/personas.py", title=tr("views.personas"), url_path="personas"),
            st.Page("app_pages/compare.py", title=tr("views.compare"), url_path="compare"),
            st.Page("app_pages/whatif.py", title=tr("views.whatif"), url_path="whatif"),
        ]
        made = st.session_state[Key.VIEW_PAGES] = (language, {page.url_path: page for page in views})
    pages: dict[str, StreamlitPage] = made[1]
    return pages


def view_switch() -> tuple[StreamlitPage, bool]:
    """The view the link names, and whether this run is its first since another view was shown;
    and a switch to the others at the top of the page: one radio group, a single stop for Tab
    where Streamlit's navigation links were four."""
    pages = view_pages()
    current = st.navigation(list(pages.values()), position="hidden")
    chosen = st.session_state.pop(Key.VIEW_CHOSEN, None)
    if chosen is not None and chosen != current.url_path and chosen in pages:
        switch_page(pages[chosen])
    state = page_state()
    state.keep(Key.VIEW, current.url_path)  # the switch shows the view the link names
    # Whether this run is the view's first since another was shown (or the session began).
    entered = state.get(Key.VIEW_SHOWN) != current.url_path
    state.keep(Key.VIEW_SHOWN, current.url_path)
    st.radio(
        tr("views.label"),
        list(pages),
        format_func=lambda path: pages[path].title,
        key=Key.VIEW,
        horizontal=True,
        label_visibility="collapsed",
        on_change=choose_view,
    )
    return current, entered


def connection_status(service: VisitorService, persona: Persona, connection: Connection) -> None:
    if connection.offline:
        st.info(tr("connection.offline"), icon="🔌")
        return
    key_note = tr(f"connection.key_source.{connection.key_source or 'none'}")
    session = service.open_session(persona.id)
    if session is None or not isinstance(session.error, CONNECTION_ERRORS):
        st.success(tr("connection.connected", host=connection.host, key_source=key_note), icon="🔗")
    else:  # never a green "connected" beside "could not connect"
        st.warning(tr("connection.failing", host=connection.host, key_source=key_note), icon="🔗")


def typed_base_url(mode: AccessMode, allowed: list[str]) -> str:
    """The base URL this visitor chose, whether or not the settings are open: any on your own
    machine; on a public deployment one of the deployer's choices, else "" (the deployer's)."""
    chosen = str(st.session_state.get(Key.BASE_URL) or "")
    if mode == "single-user" or chosen in base_url_choices(allowed):
        return chosen
    return ""


def base_url_field(mode: AccessMode, allowed: list[str]) -> None:
    """Any base URL on your own machine; on a public deployment only the deployer's choices."""
    if mode == "single-user":
        st.text_input(
            tr("sidebar.base_url.label"),
            key=Key.BASE_URL,
            placeholder="https://api.openai.com/v1",
            help=tr("sidebar.base_url.help"),
            persist_state="session",
        )
        return
    choices = base_url_choices(allowed)
    if not choices:
        st.caption(tr("sidebar.base_url.locked"))
        return
    if st.session_state.get(Key.BASE_URL) not in ("", *choices):
        st.session_state[Key.BASE_URL] = ""
    st.selectbox(
        tr("sidebar.base_url.label"),
        ["", *choices],
        key=Key.BASE_URL,
        format_func=lambda url: url or tr("sidebar.base_url.deployer"),
        help=tr("sidebar.base_url.help"),
        persist_state="session",
    )


def notices(service: VisitorService) -> None:
    """What the service has to say since the last run, and a store that is not saving."""
    for notice in service.take_notices():
        show_notice(notice)
    if service.store_error is not None:
        st.warning(tr("store.not_saving", error=error_text(service.store_error)), icon="💾")
    elif service.store_problem is not None:
        show_notice(service.store_problem.model_copy(update={"level": "warning"}), icon="💾")


def switch_page(page: str | StreamlitPage) -> None:
    """Go to another page (`app_pages/chat.py`), keeping the link's workspace and language."""
    kept = {
        name: st.query_params[name] for name in (WORKSPACE_PARAM, LANGUAGE_PARAM) if name in st.query_params
    }
    st.switch_page(page, query_params=kept)


def title(persona: Persona) -> None:
    """The persona's name and what it is, as a chat app heads a conversation (the app's own name
    is the browser tab's title)."""
    # No anchor link: it would be a stop for Tab before the chat input, and leads nowhere new.
    st.title(as_markdown(f"{persona.avatar} {persona.name}"), anchor=False)
    st.caption(as_markdown(persona.description))
