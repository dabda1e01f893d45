"""English text of the page: the wording the page had before it was translated (tests look some of
it up by label). Keys and `{fields}` match zh_CN.py exactly; see core/i18n.py for the scheme."""

CATALOG: dict[str, str] = {
    # --- page, sign-in, workspace ------------------------------------------------------------
    "page.name": "Persona Chat Dashboard",
    "page.no_personas": "No persona could be loaded from {directory}.",
    "signin.prompt": "Sign in to see your conversations. They are private to you.",
    "signin.button": "Sign in",
    "signin.as": "Signed in as {who}",
    "signin.logout": "Sign out",
    "notice.private_workspace": (
        "This is your private workspace. **Bookmark this page's link: it is the key to your "
        "conversations**, and anyone with it can read them."
    ),
    "workspace.start_new": "Start a new workspace",
    "access.shared_with_strangers": (
        "**Everyone with this page's link sees these conversations**, and can use any base URL "
        "from this server: its deployer set ACCESS_MODE=single-user."
    ),
    "views.label": "View",
    "views.chat": "💬 Chat",
    "views.personas": "🎭 Personas",
    "views.compare": "⚖️ Compare",
    # --- saving, notices -----------------------------------------------------------------------
    "store.not_saving": "Conversations are not being saved: {error}",
    "store.reload.label": "Reload this conversation",
    "store.reload.help": "Another tab or server saved it since this page read it.",
    "notice.open_failed": "That conversation cannot be opened: {error}",
    "notice.not_renamed": "Not renamed: {error}",
    "notice.not_deleted": "Not deleted: {error}",
    "notice.not_restored": "“{title}” could not be restored: {error}",
    "notice.import_failed": "Import of {file} failed: {error}",
    "notice.imported": "Imported {count} messages from {file} into {persona} as a new conversation.",
    "notice.store_unsaved": "Your last change is not saved yet: {error}",
    "notice.stale": "Not saved: {error}",
    "notice.settings_refused": "Settings not changed: {error}",
    "notice.limit_applied": "Limited by this deployment: {note}",
    "notice.comparison_not_started": "The comparison cannot start: {error}",
    "notice.comparison_not_opened": "That comparison cannot be opened: {error}",
    "notice.comparison_unsaved": "The comparison is not saved yet: {error}",
    "notice.test_set_unsaved": "The test set is not saved yet: {error}",
    "notice.test_run_unsaved": "The test run is not saved yet: {error}",
    "notice.compare_refused": "Not done: {error}",
    "notice.persona_saved": "Saved {avatar} {name}.",
    # --- sidebar -------------------------------------------------------------------------------
    "sidebar.language": "🌐 Language",
    "sidebar.persona.label": "Persona",
    "sidebar.persona_errors": "⚠️ {count} persona file(s) could not be loaded",
    "sidebar.settings": "⚙️ Settings: language, connection, model, budget, export",
    "sidebar.connection.header": "Connection",
    "sidebar.api_key.label": "API key",
    "sidebar.api_key.help": (
        "Kept only in this browser session, never saved. Also read from secrets or OPENAI_API_KEY."
    ),
    "sidebar.base_url.label": "Base URL",
    "sidebar.base_url.help": "Any OpenAI-compatible server: Azure, Ollama, vLLM, LM Studio, llama.cpp.",
    "sidebar.base_url.deployer": "The deployment’s server",
    "sidebar.base_url.locked": "This deployment does not let visitors choose another server.",
    "sidebar.base_url.refused": "{error} Using the deployment’s own connection instead.",
    "sidebar.limits.applied": "Limited by this deployment: {note}",
    "sidebar.model.label": "Model",
    "sidebar.model.help": "Persona default: {model}",
    "sidebar.budget.header": "Budget",
    "sidebar.budget.label": "Context budget (prompt tokens)",
    "sidebar.budget.help": "The most prompt tokens a call may send. Older exchanges are trimmed to fit.",
    "sidebar.reply_cap.label": "Reply cap (max tokens per reply)",
    "sidebar.reply_cap.help": (
        "The most tokens one reply may have (max_tokens). Separate from the context budget."
    ),
    "sidebar.export.header": "Export / import",
    "sidebar.import.label": "Import a JSON export (as a new conversation)",
    "connection.offline": (
        "No API key set: replies come from the **built-in offline model**. "
        "It runs locally, costs nothing, and its usage figures are computed here."
    ),
    "connection.connected": "Connected to **{host}** (key {key_source}).",
    "connection.key_source.typed": "typed here",
    "connection.key_source.secrets": "from secrets",
    "connection.key_source.environment": "from environment",
    "connection.key_source.none": "no key",
    # --- conversation list ---------------------------------------------------------------------
    "conversations.label": "Conversations",
    "conversations.new": "New conversation",
    "conversations.deleted": "Deleted “{title}”.",
    "conversations.undo_delete": "Undo delete",
    "conversations.search.label": "Search conversations",
    "conversations.search.placeholder": "Search titles and messages",
    "conversations.list_failed": "The conversation list cannot be read: {error}",
    "conversations.no_match": "No conversation matches.",
    "conversations.item.numbered": "{title} ({number})",
    "conversations.item.details.one": "{updated:%Y-%m-%d %H:%M} UTC · {count} message",
    "conversations.item.details.other": "{updated:%Y-%m-%d %H:%M} UTC · {count} messages",
    "conversations.item.open": "Open now · {details}",
    "conversations.item.match": "“{snippet}”",
    "conversations.older": "{count} older ones: search to find them.",
    "conversations.manage": "Rename or delete this conversation",
    "conversations.title": "Title",
    "conversations.rename": "Rename",
    "conversations.delete": "Delete",
    # --- chat ----------------------------------------------------------------------------------
    "chat.input.placeholder": "Message {name}…",
    "chat.show_earlier.label": "Show {count:,} earlier messages",
    "chat.show_earlier.help": "All are in the export.",
    "chat.continued": "↪ Asked the model to continue: “{preview}”",
    "chat.badge.interrupted": "interrupted · partial reply",
    "chat.badge.cut_off": "cut by the reply cap",
    "chat.starters": "Try one of these:",
    "chat.retry": "Retry",
    "chat.regenerate": "Regenerate last answer",
    "chat.unsent_restored": (
        "What you wrote in this tab could not be saved (another tab saved this conversation first); "
        "it is back in the chat input, to send again."
    ),
    "chat.continue": "Continue the reply",
    # MessageState labels, by state value (core/chat/conversation.py says them in English).
    "state.context": "in context",
    "state.trimmed": "trimmed · no longer in the model's context",
    "state.unanswered": "not answered · not in context",
    "state.replaced": "regenerated · not in context",
    "state.summarized": "summarized · folded into the summary",
    # The data an error carries, joined by " · " under the error.
    "error.details.status": "HTTP {status}",
    "error.details.wait": "wait {seconds:.0f} s",
    "error.details.request_id": "request id `{request_id}`",
    "error.details.not_retryable": "retrying will not help until this is fixed",
    # --- dashboard -----------------------------------------------------------------------------
    "dashboard.header": "What the model sees",
    "dashboard.cost.label": "Cost",
    "dashboard.cost.unknown": "unknown price",
    "dashboard.cost.unknown_help": "{model} is not in models.yaml.",
    "dashboard.cost.offline_delta": "offline; would be {cost}",
    "dashboard.cost.offline_help": (
        "The offline model bills nothing; the figure under it is what these tokens would cost on {model}."
    ),
    "dashboard.cost.help": "From the prices in models.yaml.",
    "dashboard.cost.per_turn": "{cost} a turn on average",
    "dashboard.cost.no_turns": "nothing sent yet",
    "dashboard.tokens.label": "Tokens",
    "dashboard.tokens.delta": "{tokens_in} in · {tokens_out} out",
    "dashboard.tokens.help": "Prompt tokens (in) and reply tokens (out) of all turns.",
    "dashboard.tokens.help_some_counted": (
        "Prompt tokens (in) and reply tokens (out) of all turns (some counted locally)."
    ),
    "dashboard.cache.label": "Cache hit rate",
    "dashboard.cache.delta": "saved {saved}",
    "dashboard.cache.delta_offline": "offline; would save {saved}",
    "dashboard.cache.delta_unpriced": "unknown price",
    "dashboard.cache.help": (
        "The share of prompt tokens the server says it read from its prompt cache (billed at the "
        "cached price in models.yaml), and what the same tokens would have cost with no cache, "
        "less what they cost: negative when cache writes cost more than the reads saved. Trimming "
        "the oldest messages changes the prompt's start and empties the cache; the stable-prefix "
        "policy keeps it."
    ),
    "dashboard.server_cut": (
        "The server cut the last prompt without saying so: it read {read} of the {sent} tokens "
        "sent, so the model never saw the oldest of them. Its context window is probably about "
        "{read} tokens; a budget of {budget:,} keeps prompts below it. This turn was not used to "
        "calibrate the token estimate."
    ),
    "dashboard.server_cut.fix": "Set the budget to {budget:,}",
    "chart.usage.title": "Tokens per turn",
    "dashboard.usage.empty": "**Tokens per turn:** the chart fills in as you chat, one point per turn.",
    "dashboard.usage.offline": (
        "🔌 Offline model: its usage is computed locally, exactly as the API would report it."
    ),
    "dashboard.usage.mismatch": "Counted and reported prompt tokens differ on {count} turn(s).",
    "dashboard.usage.match": "✅ Counted prompt tokens equal the reported ones on every turn.",
    "chart.gauge.title": "Context now",
    "dashboard.gauge.parts": "Left to right: {parts}",
    # Parts of the context gauge, by name (core/stats.py ContextGauge.parts).
    "gauge.part.system": "system",
    "gauge.part.summary": "summary",
    "gauge.part.pinned": "pinned",
    "gauge.part.history": "history",
    "gauge.part.newest": "newest",
    "gauge.part.priming": "priming",
    "gauge.part.free": "free",
    "dashboard.context.drops.one": (
        "{count:,} message in context. The next turn would drop the oldest {drops} (from “{preview}”)."
    ),
    "dashboard.context.drops.other": (
        "{count:,} messages in context. The next turn would drop the oldest {drops} (from “{preview}”)."
    ),
    "dashboard.context.fits.one": "{count:,} message in context. The next turn fits without trimming.",
    "dashboard.context.fits.other": "{count:,} messages in context. The next turn fits without trimming.",
    "dashboard.next_call.header": "Exactly what the next call sends, and pins",
    "dashboard.next_call.tokens": "tokens",
    "dashboard.next_call.text": "text",
    "dashboard.next_call.role": "role",
    "dashboard.next_call.state": "next call",
    "dashboard.next_call.sent": "sent",
    "dashboard.next_call.sent_pinned": "sent, pinned",
    "dashboard.next_call.dropped": "dropped",
    "dashboard.role.system": "system",
    "dashboard.role.user": "user",
    "dashboard.role.assistant": "assistant",
    "dashboard.role.priming": "(reply priming)",
    "dashboard.trims.turn": "turn",
    "dashboard.trims.text": "what was dropped",
    "dashboard.next_call.total": (
        "Total: {used:,} prompt tokens, as the API will count them, before trimming."
    ),
    "dashboard.trims.header": "Trimming log",
    "dashboard.trims.empty": "Nothing trimmed yet.",
    "dashboard.trims.dropped": "dropped",
    "dashboard.trims.before": "before",
    "dashboard.trims.after": "after",
    "dashboard.turns.header": "Every turn",
    # --- personas: gallery, cards, editor (ui/personas_view.py) ----------------------------------
    "personas.gallery.header": "Personas",
    "personas.gallery.caption": (
        "Start a chat with a persona, or duplicate one to make it yours. The shipped personas are "
        "read-only; yours are saved in your workspace."
    ),
    "personas.gallery.new": "New persona",
    "personas.gallery.page": "Page (of {pages}; {count} personas)",
    "personas.card.budget": "budget {budget:,}",
    "personas.card.reply_cap": "reply cap {reply_cap:,}",
    "personas.card.tags": "Tags: {tags}",
    "personas.card.custom": "yours",
    "personas.card.shipped": "shipped",
    "personas.card.conversations.one": "{count} conversation",
    "personas.card.conversations.other": "{count} conversations",
    "personas.card.chat": "Chat",
    "personas.card.edit": "Edit",
    "personas.card.duplicate": "Duplicate",
    "personas.editor.new": "New persona",
    "personas.editor.edit": "Edit {avatar} {name}",
    "personas.editor.duplicate": "Duplicate {avatar} {name}",
    "personas.editor.caption": "Checked by the same rules as the YAML files in personas/ when you save.",
    "personas.editor.id": "Id (letters, digits, _ and -)",
    "personas.editor.name": "Name",
    "personas.editor.avatar": "Avatar (one emoji)",
    "personas.editor.description": "Description (one line)",
    "personas.editor.system_prompt": "System prompt (sent first, every call)",
    "personas.editor.model": "Model",
    "personas.editor.temperature": "Temperature (empty: not sent)",
    "personas.editor.budget": "Context budget (prompt tokens)",
    "personas.editor.reply_cap": "Reply cap (tokens per reply)",
    "personas.editor.greeting": "Greeting (shown, not sent)",
    "personas.editor.starters": "Starter prompts (one per line)",
    "personas.editor.examples": "Few-shot examples (optional)",
    "personas.editor.examples_help": (
        "Example messages sent after the system prompt on every call (they count against the budget). "
        "Start each message on a new line with `User:` or `Assistant:`."
    ),
    "personas.editor.tags": "Tags (comma-separated)",
    "personas.editor.save": "Save",
    "personas.editor.cancel": "Cancel",
    "personas.editor.id_taken": "The id '{id}' is taken; choose another.",
    "validation.required": "{label}: required, please fill it in.",
    "validation.too_short": "{label}: needs at least {limit:,} characters.",
    "validation.too_long": "{label}: at most {limit:,} characters.",
    "validation.too_many": "{label}: at most {limit:,} entries.",
    "validation.at_least": "{label}: at least {limit:,}.",
    "validation.more_than": "{label}: more than {limit:,}.",
    "validation.at_most": "{label}: at most {limit:,}.",
    "validation.less_than": "{label}: less than {limit:,}.",
    "validation.invalid": "{label}: {detail}",
    "validation.one_line": "{label}: must be a single line (no line breaks).",
    "validation.emoji": "{label}: must be an emoji such as 🍜 (one emoji only), got {value}",
    "validation.avatar_image": "{label}: the avatar image {problem}",
    "validation.extensions_too_large": "{label}: holds {size} KiB as JSON; at most {limit} KiB are kept.",
    "personas.editor.id_invalid": (
        "{label}: “{id}” is not a valid id: use letters, digits, '_' and '-' (at most 64), e.g. travel-pl"
        "anner."
    ),
    "personas.editor.not_saved": "Not saved: {error}",
    # --- importing from and exporting to other apps (ui/persona_exchange.py) ---------------------
    "personas.exchange.header": "Import from other apps",
    "personas.exchange.caption": (
        "Character cards (JSON, PNG, .charx), LobeHub agents, NextChat masks, Open WebUI model "
        "exports, LibreChat modelSpecs (YAML) and persona YAML files, several at once. Nothing is "
        "saved until you choose; links to pictures are never opened."
    ),
    "personas.exchange.files": "Files to import",
    "personas.exchange.user_name": "Your name (character cards write it as a placeholder)",
    "personas.exchange.failed": "Not imported: {error}",
    "personas.exchange.pick": "Save {name} as “{id}”",
    "personas.exchange.source": "From {file} · {format}",
    "personas.exchange.tokens": "System message: {tokens:,} tokens of a {budget:,}-token budget ({share})",
    "personas.exchange.col.ours": "Persona field",
    "personas.exchange.col.theirs": "From",
    "personas.exchange.col.note": "Note",
    "personas.exchange.col.why": "Why",
    "personas.exchange.dropped": "Not used or kept for export ({count})",
    "personas.exchange.prompt": "System prompt and examples as imported",
    "personas.exchange.save": "Save the ticked personas",
    "personas.exchange.saved": "Saved {name}.",
    "personas.exchange.not_saved": "{name} was not saved: {error}",
    "personas.export.label": "Export",
    "personas.export.yaml": "Persona YAML (this app)",
    "personas.export.card-v3": "Character card V3 (JSON)",
    "personas.export.card-png": "Character card (PNG)",
    "personas.export.lobehub": "LobeHub agent (JSON)",
    "sidebar.policy.label": "When the budget is full",
    "sidebar.policy.help": (
        "Drop the oldest exchanges, or fold them into a running summary written by a model (the "
        "summary is sent after the system prompt and counts against the budget), or keep a stable "
        "prefix: drop several exchanges at once, down to 65% of the budget, so the turns after only "
        "append and the server keeps serving the prompt from its cache (cheaper, faster)."
    ),
    "policy.drop_oldest": "Drop the oldest exchanges",
    "policy.summarize": "Summarize the oldest exchanges",
    "policy.stable_prefix": "Keep a stable prefix (cache-friendly)",
    "summary.title": "Summary of {count} earlier messages · {tokens} tokens, sent after the system prompt",
    "summary.version": "Version {number}: {source}, {at:%Y-%m-%d %H:%M} UTC",
    "summary.source.model": "written by the model",
    "summary.source.user": "edited by you",
    "summary.edit.label": "Edit the summary (the model sees your version from the next call on)",
    "summary.edit.save": "Save the summary",
    "summary.edit.tokens": "{tokens} tokens as edited.",
    "summary.fallback": (
        "Before turn {turn} the summary could not be written ({reason}); the oldest exchanges were "
        "dropped instead."
    ),
    "views.whatif": "🔬 What if",
    "whatif.header": "What if",
    "whatif.caption": (
        "Replay this conversation's messages under another budget, policy or model, without "
        "calling any model: the prompt tokens of each turn, what each turn would have dropped or "
        "summarized, and the cost, beside what really happened."
    ),
    "whatif.empty": "Chat first: the replay uses the messages this conversation recorded.",
    "whatif.running": "Replaying…",
    "whatif.cost": "Cost, what if",
    "whatif.cost.delta": "recorded {recorded}",
    "whatif.prompt_tokens": "Prompt tokens, what if",
    "whatif.forgotten": "Forgotten, what if",
    "whatif.forgotten.help": (
        "Messages the replay leaves out of the context that the recorded calls still sent."
    ),
    "whatif.forgotten.list": "What the model would have forgotten ({count} messages)",
    "whatif.cache_rule.label": "Prompt cache",
    "whatif.cache_rule.help": (
        "The server's prompt cache the replayed calls are served from, simulated: OpenAI's rule "
        "(the prefix shared with a recent request, from 1,024 tokens in blocks of 128), a plain "
        "prefix cache (llama.cpp, vLLM), or none."
    ),
    "whatif.cache_rule.none": "none",
    "whatif.cache_rule.openai": "OpenAI's rule",
    "whatif.cache_rule.prefix": "plain prefix cache",
    "whatif.cache": "From cache, what if",
    "whatif.cache.delta": "recorded {recorded}",
    "whatif.cache.help": (
        "The share of prompt tokens served from the prompt cache: simulated for the replay, as the "
        "server reported it for the record."
    ),
    "whatif.table.cached_recorded": "from cache, recorded",
    "whatif.table.cached_replayed": "from cache, what if",
    "whatif.policies.header": "Every policy on the same cache",
    "whatif.policies.policy": "policy",
    "whatif.policies.prompt": "prompt tokens",
    "whatif.policies.cached": "from cache",
    "whatif.policies.hit_rate": "hit rate",
    "whatif.policies.cost": "cost",
    "whatif.policies.cost_difference": "cost difference ($)",
    "whatif.policies.forgotten": "messages forgotten",
    "whatif.table.turn": "turn",
    "whatif.table.recorded": "prompt, recorded",
    "whatif.table.replayed": "prompt, what if",
    "whatif.table.difference": "difference",
    "whatif.table.dropped": "would drop",
    "whatif.table.summarized": "would summarize",
    "whatif.table.cost_difference": "cost difference ($)",
    "counting.tiktoken": "📏 Counted exactly, with tiktoken (the tokenizer OpenAI bills with).",
    "counting.server": "📏 Counted exactly, by the server's own tokenizer.",
    "counting.calibrated": (
        "📏 A calibrated estimate: within ±{error:.1f}% of what the server reported, fitted per "
        "script class (CJK, Latin words, digits, punctuation, emoji) by least squares over {turns} turns."
    ),
    "counting.uncalibrated": (
        "📏 tiktoken does not know `{model}` and the server offers no tokenizer: counts are "
        "estimates until the server reports usage, and calls keep a safety margin."
    ),
    "counting.window": "The server reports a context window of {window:,} tokens.",
    "counting.budget": (
        "Calls are fitted to {budget:,} prompt tokens (your budget is {setting:,}): the window "
        "less the reply cap, and a margin while the estimate learns."
    ),
    "chat.badge.pinned": "pinned",
    "pins.label": "Keep these in context",
    "pins.help": (
        "No context policy drops or summarizes a pinned message; if the pins alone do not fit the "
        "budget, nothing is sent and you are told."
    ),
    "connection.failing": "The last call to **{host}** failed (key {key_source}): see the error in the chat.",
    # --- leaderboard (ui/leaderboard_view.py) ------------------------------------------------
    "leaderboard.header": "Leaderboard",
    "leaderboard.about": (
        "Bradley–Terry ratings from your votes in comparisons, with 95% intervals from {samples} "
        "bootstrap resamples. What is ranked is a persona on a model with its settings; a "
        "preferred answer beats every other column's, a tie or “all bad” ties them."
    ),
    "leaderboard.empty": (
        "No votes yet: vote for the better answer in a comparison and the ranking starts here."
    ),
    "leaderboard.not_enough": (
        "Not enough votes yet: the ranking firms up once at least two contestants have {minimum} "
        "votes each. Until then the intervals are wide and the order may change."
    ),
    "leaderboard.row_not_enough": "not enough votes yet",
    "leaderboard.scope.label": "Votes counted",
    "leaderboard.scope.blind": "Blind votes only ({count})",
    "leaderboard.scope.all": "All votes ({count})",
    "leaderboard.scope.help": (
        "A blind vote is cast before you know who answered; an open vote knows (a comparison "
        "that was not blind, a blind pair's turns after its first vote, test-set results). Like "
        "Chatbot Arena, the ranking counts blind votes unless you choose all. Either way one vote "
        "per pair of answers per conversation counts: its last."
    ),
    "leaderboard.setting.budget": "budget {value}",
    "leaderboard.setting.reply_cap": "reply cap {value}",
    "leaderboard.setting.temperature": "temperature {value}",
    "leaderboard.setting.seed": "seed {value}",
    "leaderboard.counts": "{blind} blind · {open} open votes cast.",
    "leaderboard.empty_blind": (
        "No blind votes yet: vote in a blind comparison or a blind pair, or count all votes."
    ),
    "leaderboard.column.rank": "Rank",
    "leaderboard.column.persona": "Persona",
    "leaderboard.column.model": "Model",
    "leaderboard.column.settings": "Settings",
    "leaderboard.column.rating": "Rating",
    "leaderboard.column.interval": "95% interval",
    "leaderboard.column.record": "Won · lost · tied",
    "leaderboard.column.status": "Status",
    "leaderboard.record": "{wins} · {losses} · {ties}",
    "leaderboard.votes": "votes",
    "leaderboard.total": "{votes} pairwise votes.",
    "leaderboard.export_csv": "Leaderboard as CSV",
    "leaderboard.export_json": "Leaderboard as JSON",
    # --- charts (core/charts.py): axes, legends, tooltips ---
    "chart.axis.turn": "turn",
    "chart.axis.tokens": "tokens",
    "chart.axis.series": "series",
    "chart.series.counted": "prompt, counted",
    "chart.series.reported": "prompt, API",
    "chart.series.cached": "prompt, from cache",
    "chart.series.reply": "reply",
    "chart.series.budget": "budget",
    "chart.series.summary": "summary",
    "chart.series.trimmed": "trimmed",
    "chart.trim.turn": "trimmed before turn",
    "chart.trim.messages_dropped": "messages dropped",
    "chart.trim.tokens_freed": "tokens freed",
    "chart.trim.tokens_before": "tokens before",
    "chart.trim.tokens_after": "tokens after",
    "chart.trim.preview": "dropped",
    "chart.budget_off_scale": "budget {budget:,} ↑",
    "chart.gauge.part": "part",
    "chart.gauge.axis": "tokens of the {budget:,}-token budget",
    # --- the comparison chart (core/charts.py ComparisonChartTexts) ------------------------------
    "chart.compare.message": "message",
    "chart.compare.prompt_tokens": "prompt tokens",
    "chart.compare.reply_tokens": "reply tokens",
    "chart.compare.first_token_s": "first token (s)",
    "chart.compare.total_s": "total (s)",
    "chart.compare.cost_usd": "cost (USD)",
    "chart.replay.recorded": "recorded",
    "chart.replay.what_if": "what if",
    "chart.replay.run": "run",
    # --- the offline model's reply (core/providers/offline.py) ---
    "offline.reply.received": (
        "[Offline model] I received {messages} messages ({tokens} prompt tokens): the system prompt, "
        "{summary}{exchanges} and your message."
    ),
    "offline.reply.summary": "a summary of the earlier conversation, ",
    "offline.reply.exchanges.one": "{count} earlier exchange",
    "offline.reply.exchanges.other": "{count} earlier exchanges",
    "offline.reply.role.user": "user",
    "offline.reply.role.assistant": "assistant",
    "offline.reply.oldest": "The oldest message I can still see is from the {role}: “{text}”",
    "offline.reply.you_said": "You said: “{text}”",
    "offline.reply.hint": "Set an API key under Settings in the sidebar to talk to a real model.",
    "chart.compare.budget": "budget",
    # --- compare, blind pairs, test sets (ui/compare_view.py, ui/testsets_view.py) ---------------
    "compare.header": "Compare",
    "compare.mode.label": "What to compare",
    "compare.mode.columns": "⚖️ Side by side",
    "compare.mode.blind": "🙈 Blind pair",
    "compare.mode.tests": "🧪 Test sets",
    "compare.columns.about": (
        "Send one message to 2 to 4 personas or models at once and see, column by column, what each "
        "model saw, its tokens, speed and cost."
    ),
    "compare.columns.count": "Columns",
    "compare.columns.blind": "Blind: hide which column is which until I vote",
    "compare.column": "Column {number}",
    "compare.model": "Model",
    "compare.budget": "Context budget",
    "compare.start": "Start comparing",
    "compare.blind.about": (
        "Two answers side by side, in random order, without saying whose: chat as long as you like, "
        "then vote for the better one (or a tie, or both bad). Who answered, their sizes and their "
        "costs show after the vote."
    ),
    "compare.blind.start": "Start the blind pair",
    "compare.blind.header": "Blind comparison",
    "compare.blind.hidden": "Who answered is hidden until you vote: their sizes and costs too.",
    "compare.saved.header.one": "{count} saved comparison",
    "compare.saved.header.other": "{count} saved comparisons",
    "compare.saved.failed": "Saved comparisons cannot be read: {error}",
    "compare.new": "New comparison",
    "compare.input": "Ask every column…",
    "compare.column.caption": "`{model}` · budget {budget}",
    "compare.state.waiting": "⏳ waiting",
    "compare.state.streaming": "✍️ streaming",
    "compare.state.stopped": "⏹ stopped",
    "compare.state.interrupted": "⚡ interrupted · partial answer",
    "compare.stop": "Stop",
    "compare.retry": "Retry",
    "compare.figures.prompt": "prompt {tokens}",
    "compare.figures.api": " (API {tokens})",
    "compare.figures.reply": "reply {tokens}",
    "compare.figures.first_token": "first token {seconds} s",
    "compare.figures.total": "total {seconds} s",
    "compare.figures.trimmed": "trimmed {messages} ({tokens} tokens)",
    "chart.compare.title": "Per message, by column",
    "compare.vote.header": "Which answer is better?",
    "compare.vote.preferred": "{label} is better",
    "compare.vote.tie": "🤝 Tie",
    "compare.vote.both_bad": "👎 All bad",
    "compare.vote.done_preferred": "You preferred {label} on message {number}.",
    "compare.vote.done_tie": "You called message {number} a tie.",
    "compare.vote.done_both_bad": "You found every answer to message {number} bad.",
    "testsets.about": (
        "A named list of prompts, run against 2 to 4 personas or models, each prompt a fresh "
        "conversation. Run it again after editing a persona to see what changed; vote on the answers "
        "to feed the leaderboard."
    ),
    "testsets.choose": "Test set",
    "testsets.new": "➕ New test set",
    "testsets.name": "Name",
    "testsets.text": "Prompts, one per line",
    "testsets.text_help": "How do I cook Peking duck?\nWhat is a good ramen?",
    "testsets.file": "…or a file: text (one prompt per line), CSV (a “prompt” column) or YAML (a list)",
    "testsets.save": "Save the test set",
    "testsets.prompts.one": "{count} prompt",
    "testsets.prompts.other": "{count} prompts",
    "testsets.run": "Run the test set",
    "testsets.progress": "{done} of {total} prompts answered",
    "testsets.cancel": "Cancel",
    "testsets.results": "Last run, {when}",
    "testsets.cancelled": "This run was cancelled: the prompts it did not reach are marked skipped.",
    "testsets.difference": (
        "Against the run before: {changed} of {total} answers changed · prompt tokens {prompt} · "
        "reply tokens {reply} · cost {cost} USD"
    ),
    "testsets.skipped": "skipped",
    "testsets.changed": "🔁 changed since the last run",
    "testsets.same": "= same as the last run",
    "testsets.vote": "Which answer is better?",
    "testsets.col.column": "Column",
    "testsets.col.answered": "Answered",
    "testsets.col.prompt_tokens": "Prompt tokens",
    "testsets.col.reply_tokens": "Reply tokens",
    "testsets.col.latency": "Mean time (s)",
    "testsets.col.cost": "Cost (USD)",
    "testsets.col.changed": "Answers changed",
    "notice.test_set_needs_name": "Give the test set a name.",
    "notice.test_set_unusable": "The test set was not saved: {error}",
    "notice.test_set_not_started": "The test set cannot run: {error}",
    "notice.test_vote_refused": "The vote was not saved: {error}",
    # --- errors from core (core/errors.py: error.<code> with the error's fields) ---
    "error.generic": "{message}",
    "error.replay_too_large": (
        "This conversation has {messages} messages; a what-if replay takes at most {limit}."
    ),
    "error.too_many_personas": (
        "This workspace already holds {limit} personas, the most it may; delete one before adding another."
    ),
    "error.details.server_said": "Server says: {text}",
    "error.prompt_too_long": (
        "The system prompt and your message need {tokens:,} prompt tokens, {overflow:,} more than the "
        "context budget of {budget:,}. Shorten the message or raise the context budget; your text was "
        "not sent and is kept."
    ),
    "error.prompt_too_long_pinned": (
        "The system prompt, your message and the pinned messages ({pinned:,} tokens) need {tokens:,} "
        "prompt tokens, {overflow:,} more than the context budget of {budget:,}. Unpin a message, "
        "shorten yours or raise the context budget; your text was not sent and is kept."
    ),
    "error.message_too_long": (
        "This message has {length:,} characters; this deployment takes at most {limit:,}. Shorten it and "
        "send it again."
    ),
    "error.address_refused": (
        "{host} resolves to {reason}. For a base URL typed here, this deployment connects only to public "
        "addresses; nothing was sent."
    ),
    "error.unreachable": (
        "Could not reach the server at {host} for model “{model}”. Check the base URL {base_url}."
    ),
    "error.stalled": (
        "{host} stopped sending the reply of model “{model}” for over {seconds:g} s; the text received "
        "so far is kept. Try again."
    ),
    "error.timed_out": (
        "{host} did not answer within {seconds:g} s (model “{model}”). Try again; a slow or busy server "
        "may need a longer timeout."
    ),
    "error.stream_broken": (
        "The connection to {host} broke while model “{model}” was replying; the {chars:,} characters "
        "received are kept. Try again."
    ),
    "error.connection_failed": (
        "Could not connect to {host}{cause} — is the server running? Check the base URL {base_url}."
    ),
    "error.auth_failed": (
        "{host} rejected the API key (HTTP 401) for model “{model}”. Check the key (or OPENAI_API_KEY)."
    ),
    "error.permission_denied": (
        "{host} does not let this API key use model “{model}” (HTTP 403). Choose a model the key may "
        "use, or a key with access to it."
    ),
    "error.model_not_found": (
        "{host} does not know model “{model}” (HTTP 404). Check the model name; the base URL {base_url} "
        "may also be wrong."
    ),
    "error.bad_request": (
        "{host} refused the request for model “{model}” (HTTP {status}). An option may not be supported "
        "by this server or model."
    ),
    "error.no_quota": (
        "{host} is rate-limiting requests for model “{model}” (HTTP 429). No quota is left: check the "
        "account's plan and billing."
    ),
    "error.rate_limited_wait": (
        "{host} is rate-limiting requests for model “{model}” (HTTP 429). Try again in {seconds} s."
    ),
    "error.rate_limited_now": (
        "{host} is rate-limiting requests for model “{model}” (HTTP 429). Try again now."
    ),
    "error.rate_limited": (
        "{host} is rate-limiting requests for model “{model}” (HTTP 429). Wait a little and try again."
    ),
    "error.server_error": (
        "{host} failed with HTTP {status} for model “{model}”. The problem is on the server's side; try "
        "again later."
    ),
    "error.overloaded": (
        "{host} is overloaded (HTTP 529) and could not serve model “{model}”. Try again in a little while."
    ),
    "error.http_status": "{host} answered HTTP {status} for model “{model}”.",
    "error.reply_time_limit": (
        "The reply of model “{model}” from {host} was still going after {seconds:g} s, the time limit "
        "for one reply; reading stopped and the {chars:,} characters received are kept."
    ),
    "error.reply_too_long": (
        "The reply of model “{model}” from {host} passed {limit:,} bytes, the most its reply cap allows; "
        "reading stopped and the {chars:,} characters received are kept."
    ),
    "error.empty_reply": "The model sent an empty reply (finish reason: {finish_reason}).",
    "error.empty_reply_length": (
        "The model sent an empty reply (finish reason: {finish_reason}). Raise the reply cap: reasoning "
        "models can spend all of it on thinking."
    ),
    "error.test_set_too_large": "{file} is larger than {limit:,} bytes.",
    "error.test_set_not_utf8": "{file} is not UTF-8 text.",
    "error.test_set_invalid": "{file} holds no usable prompts: {problem}",
    # --- the headline: what the next call sends, and a budget fitted lower than set ---
    "dashboard.next_call.label": "Next call sends",
    "dashboard.next_call.of": "{fraction:.0%} of the {budget:,} budget",
    "dashboard.next_call.of_fitted": "{fraction:.0%} of {budget:,} (budget set: {setting:,})",
    "dashboard.next_call.help": (
        "About how many prompt tokens the next call sends: the system prompt, what stays in context "
        "after trimming, a question of typical length and the reply priming. In context now: {used:,}."
    ),
    "sidebar.budget.fitted": (
        "Calls are fitted to {budget:,} of the {setting:,} set (the server's context window or the "
        "counting's safety margin)."
    ),
    "chart.gauge.axis_fitted": "tokens of the {budget:,}-token budget (set: {setting:,})",
    "compare.saved.link_help": "A comparison: opens on the Compare page",
    "compare.answer": "Answer {letter}",
    # deployer's settings (ConfigError)
    "error.config_number": "The setting {setting} must be a number of at least 0, not “{value}”.",
    "error.config_number_positive": "The setting {setting} must be a number more than 0, not “{value}”.",
    "error.config_whole": "The setting {setting} must be a whole number of at least 0, not “{value}”.",
    "error.config_whole_positive": (
        "The setting {setting} must be a whole number of at least 1, not “{value}”."
    ),
    "error.config_range": "The setting {setting} must be between {low} and {high}, not {value}.",
    "error.config_model_name": "{setting}: “{value}” is not a model name.",
    "error.config_base_url": "{setting}: “{value}” is not a usable base URL ({reason}).",
    "error.config_host": (
        "{setting}: “{value}” is neither a URL (https://host/path) nor a host (host or host:port)."
    ),
    "error.config_access_mode": "The setting ACCESS_MODE must be one of {modes}, not “{value}”.",
    "error.config_database_url": (
        "DATABASE_URL ({url}) is not a database URL; expected e.g. sqlite:////path/to/dashboard.db or "
        "postgresql+psycopg://user:password@host/dbname."
    ),
    "error.config_database_kind": (
        "DATABASE_URL ({url}) names a {kind} database; only sqlite:/// and postgresql+psycopg:// URLs "
        "are supported."
    ),
    # the deployment's own rate limits (RateLimitedLocally)
    "error.local_requests_wait": (
        "Your workspace has sent {used:,} requests in the last minute, the most this deployment allows. "
        "Try again in {seconds} s."
    ),
    "error.local_tokens_wait": (
        "Your workspace has used {used:,} tokens in the last minute, the most this deployment allows. "
        "Try again in {seconds} s."
    ),
    "error.deployment_requests_wait": (
        "This deployment has sent {used:,} requests in the last minute, the most it allows for all "
        "visitors together. Try again in {seconds} s."
    ),
    "error.deployment_tokens_wait": (
        "This deployment has used {used:,} tokens in the last day, the most it allows for all visitors "
        "together. Try again in {seconds} s."
    ),
    "error.local_tokens_too_many": (
        "This request needs about {tokens:,} tokens, more than the {limit:,} tokens a minute this "
        "deployment allows. Lower the reply cap or the context budget."
    ),
    "error.deployment_tokens_too_many": (
        "This request needs about {tokens:,} tokens, more than the {limit:,} tokens a day this "
        "deployment allows. Lower the reply cap or the context budget."
    ),
    # base URLs and links
    "error.base_url_not_chosen": (
        "This deployment does not let visitors choose a base URL; clear the Base URL field to use the "
        "app's own connection."
    ),
    "error.base_url_unusable": "The base URL “{url}” cannot be used: {reason}.",
    "error.base_url_not_allowed": (
        "The base URL “{url}” is not one this deployment allows. Allowed: {allowed}."
    ),
    "error.workspace_link_invalid": (
        "This private link is not valid (it was cut short or changed). Open the link you bookmarked, "
        "or start a new workspace."
    ),
    "error.signin_no_identity": "The sign-in did not say who you are (no issuer or subject).",
    # the store
    "error.conversation_not_found": "There is no saved conversation “{id}”.",
    "error.conversation_unreadable": "The saved conversation “{id}” cannot be read back.",
    "error.comparison_not_found": "There is no saved comparison “{id}”.",
    "error.stale_conversation": (
        "This conversation was saved elsewhere (another tab or window) since it was loaded here "
        "(version {found}, expected {expected}); nothing was saved. Reload it to go on."
    ),
    "error.title_empty": "A title cannot be empty.",
    "error.title_too_long": "A title has at most {limit:,} characters; this one has {length:,}.",
    "error.store_not_open": "Saved conversations cannot be read: the database is not open.",
    "error.store_bad_url": "“{url}” is not a database URL.",
    "error.store_kind": "Only SQLite and PostgreSQL databases are supported, not {kind}.",
    "error.store_url_unusable": "The database URL for {where} is not usable: {reason}",
    "error.store_driver_missing": "The database driver for {where} is not installed: {driver}.",
    "error.store_busy": "The database {where} is busy: no connection was free in time. Try again.",
    "error.store_read_only_file": (
        "The database {where} is read-only: saved conversations can be read, but not saved. Check the "
        "file's and its folder's permissions."
    ),
    "error.store_read_only": (
        "The database {where} is read-only: saved conversations can be read, but not saved."
    ),
    "error.store_locked": "The database {where} is locked by another process. Try again in a moment.",
    "error.store_full": "The database {where} is full (no disk space left, or its size limit).",
    "error.store_not_sqlite": (
        "{where} is not a readable SQLite database (it may be corrupted, or another kind of file); it "
        "was left untouched. Move it aside or point DATABASE_URL elsewhere."
    ),
    "error.store_folder": "{where} is a folder, not a database file.",
    "error.store_cannot_open": (
        "The database {where} cannot be used ({reason}). Check that its folder exists and is writable."
    ),
    "error.store_unavailable": "The database {where} is unavailable ({reason}).",
    "error.store_refused": "The database {where} refused the change: {reason}.",
    "error.store_foreign_tables": (
        "The database {where} holds another application's tables ({tables}); it was left untouched. "
        "Use a database of its own for the dashboard."
    ),
    "error.store_unknown_schema": (
        "The database {where} has a schema this version of the app does not know (revision "
        "“{revision}”): another application's, or a newer version's. It was left untouched."
    ),
    "error.store_unversioned": (
        "The database {where} holds tables with no schema version; it was left untouched."
    ),
    # the deployer's limits applied to a conversation's settings (Notice)
    "notice.url_characters": "it contains spaces, backslashes, control characters or an '@'",
    "notice.url_scheme": "it must start with `http://` or `https://`",
    "notice.url_query": "a base URL has no query (?…) or fragment (#…)",
    "notice.url_host": "it has no host",
    "notice.url_port": "its port is not a number from 0 to 65535",
    "notice.url_dots": "it has '.' or '..' path segments",
    "notice.limit_model": "Model “{model}” is not available here; using “{used}”.",
    "notice.limit_summarizer": "Summarizer model “{model}” is not available here.",
    "notice.limit_reply_cap": "The reply cap is at most {limit:,} tokens here.",
    "notice.limit_context_budget": "The context budget is at most {limit:,} tokens here.",
    # the persona import report (core/personas/mapping.py ImportReport: notice.import_<…>)
    "personas.exchange.none_in_source": "(none in the source)",
    "notice.import_format_lobehub": "LobeHub agent",
    "notice.import_format_nextchat": "NextChat mask",
    "notice.import_format_open_webui": "Open WebUI model",
    "notice.import_format_librechat": "LibreChat modelSpec",
    "notice.import_format_card_json": "character card {version} (JSON)",
    "notice.import_format_card_png": "character card {version} (PNG, '{chunk}' chunk)",
    "notice.import_format_card_charx": "character card {version} (CHARX)",
    "notice.import_format_persona_yaml": "persona YAML (this app's own)",
    "notice.import_note_joined": "joined into one line",
    "notice.import_note_cut": "cut to {limit:,} characters",
    "notice.import_note_joined_cut": "joined into one line, cut to {limit:,} characters",
    "notice.import_note_messages": "{count} messages",
    "notice.import_note_filled_in": "filled in",
    "notice.import_value_null": "nothing (null)",
    "notice.import_value_mapping": "a mapping",
    "notice.import_value_list": "a list",
    "notice.import_drop_not_text": "is {value}, not text",
    "notice.import_drop_not_whole": "is {value}, not a whole number",
    "notice.import_drop_not_number": "is {value}, not a number",
    "notice.import_drop_not_model": "is {value}, not a model name",
    "notice.import_drop_not_list": "is {value}, not a list",
    "notice.import_drop_not_emoji": "{value} is not an emoji",
    "notice.import_drop_not_emoji_code": "{value} is not an emoji code; the default avatar is used",
    "notice.import_drop_not_one_line": "{value} is not one line of 1-{limit} characters",
    "notice.import_drop_out_of_range": "{value} is outside {field}'s range {low}-{high}",
    "notice.import_drop_too_many": "a persona holds at most {limit}",
    "notice.import_drop_examples": "{count} example messages past the first {limit}",
    "notice.import_drop_picture": "the picture {problem}; the emoji avatar is used",
    "notice.import_drop_picture_link": (
        "{url} is a link to a picture; it is never fetched, so the emoji avatar is used"
    ),
    "notice.import_drop_kept": "no place in a persona; kept for export",
    "notice.import_drop_not_sampling": "not a sampling option",
    "notice.import_drop_unknown_setting": "{value} is not a setting this version reads",
    "notice.import_drop_invalid": "not valid in a persona: {problem}",
    "notice.import_drop_too_large": "too large to keep in a persona file ({problem}); not kept",
    "notice.import_drop_not_message": "not a user or assistant message with text",
    "notice.import_drop_history_count": (
        "{field} counts messages, not tokens, so it cannot become the context budget (kept for export)"
    ),
    "notice.import_drop_post_history": (
        "not sent: the dashboard sends nothing after the conversation history (kept for export)"
    ),
    "notice.import_drop_alternate_greetings": "a persona has one greeting, first_mes (kept for export)",
    "notice.import_drop_group_greetings": "the dashboard has no group chats (kept for export)",
    "notice.import_drop_depth_prompt": (
        "not sent: the dashboard inserts nothing inside the history (kept for export)"
    ),
    "notice.import_drop_outside_data": "outside the card's data; not read",
    "notice.import_drop_asset_missing": "{uri} is not in the file",
    "notice.import_warn_budget": (
        "the system message takes {tokens:,} of the {budget:,}-token budget ({share:.0%}), leaving little "
        "room for the conversation"
    ),
    "notice.import_warn_example_cut": "example {number} was cut to {limit:,} characters",
    "notice.import_warn_no_system_prompt": "the source has no system prompt; it was set to “{prompt}”",
    "notice.import_warn_lorebook": (
        "lorebook entries triggered by keywords: {count}. The dashboard does not trigger entries; they "
        "are not used (kept for export)"
    ),
    "error.persona_file": "{file}: {problems}",
    "error.details.separator": "; ",
    # why a file could not be imported (ImportProblem -> PersonaFileError: notice.import_<…>)
    "notice.import_what_file": "the file",
    "notice.import_what_chunk": "its '{chunk}' chunk",
    "notice.import_what_card_json": "its card.json",
    "notice.import_json_too_large": "{what} holds {size} of JSON; at most {limit} is read",
    "notice.import_json_containers": "{what} has {count:,} JSON objects and lists; at most {limit:,}",
    "notice.import_json_too_deep": "{what} is JSON nested more than {limit} levels deep",
    "notice.json_expecting_value": "Expecting value",
    "notice.json_expecting_name": "Expecting property name enclosed in double quotes",
    "notice.json_expecting_colon": "Expecting ':' delimiter",
    "notice.json_expecting_comma": "Expecting ',' delimiter",
    "notice.json_unterminated_string": "Unterminated string starting at",
    "notice.json_control_character": "Invalid control character at",
    "notice.json_extra_data": "Extra data",
    "notice.json_bad_escape": "Invalid \\escape",
    "notice.json_bad_unicode_escape": "Invalid \\uXXXX escape",
    "notice.import_json_invalid_at": "{what} is not valid JSON: {problem} at line {line}, column {column}",
    "notice.import_json_invalid": "{what} is not valid JSON: {problem}",
    "notice.import_not_utf8": "{what} is not UTF-8 text (byte {byte} at offset {offset})",
    "notice.import_prompt_too_long": (
        "the system prompt is {length:,} characters ({theirs}); a persona holds at most {limit:,}, and a "
        "prompt is not cut"
    ),
    "notice.import_no_name": "it has no name",
    "notice.import_not_valid": "the persona could not be made valid",
    "notice.import_png_no_card": (
        "is a PNG with no character card in it (no 'ccv3' or 'chara' text chunk); export the card from "
        "its app as a PNG card"
    ),
    "notice.import_chunk_not_base64": "its '{chunk}' chunk is not valid base64",
    "notice.import_charx_not_zip": "is not a valid .charx (zip) file",
    "notice.import_charx_entries": "holds {count:,} files; a .charx is read with at most {limit}",
    "notice.import_charx_outside": "holds a file named '{name}', outside the archive; refused",
    "notice.import_charx_too_large": "unpacks to {size} MiB; a .charx is read up to {limit} MiB",
    "notice.import_charx_no_card": "is a zip with no card.json at its top level",
    "notice.import_charx_unpack": "its {name} cannot be unpacked ({problem})",
    "notice.import_charx_entry_too_large": "its {name} unpacks past {limit} MiB; refused",
    "notice.import_not_png": "is not a PNG file (its first bytes are not a PNG signature)",
    "notice.import_png_cut_short": "is a damaged PNG: it ends before its IEND chunk (the file is cut short)",
    "notice.import_png_chunk_past_end": "is a damaged PNG: its '{chunk}' chunk runs past the end of the file",
    "notice.import_png_checksum": "is a damaged PNG: its '{chunk}' chunk fails its checksum",
    "notice.import_png_chunks": "is a PNG with more than {limit:,} chunks; refused",
    "notice.import_card_not_object": "is not a character card: the JSON is not an object",
    "notice.import_card_no_data": "is a {spec} card without its 'data' object",
    "notice.import_card_spec": "is a card of spec '{spec}'; chara_card_v2 and chara_card_v3 are read",
    "notice.import_not_card": (
        "is not a character card (no 'spec', and not a V1 card's name and description)"
    ),
    "notice.import_not_regular": "is not a regular file",
    "notice.import_empty": "is empty",
    "notice.import_unknown_json": (
        "is JSON in no format this app reads; it reads a character card (JSON, PNG or .charx), a "
        "LobeHub agent, a NextChat mask, an Open WebUI model export, LibreChat modelSpecs (YAML) or a "
        "persona YAML file"
    ),
    "notice.import_not_yaml": "is not readable YAML: {problem}",
    "notice.import_too_large": "is {size} MiB; imports read files of at most {limit} MiB",
    "notice.import_not_librechat": (
        "is not a LibreChat config: no modelSpecs.list of specs (each with a label and a preset)"
    ),
    "notice.import_librechat_no_preset": "a LibreChat modelSpecs list item has no preset",
    # why a persona file cannot be read (core/personas/persona.py FileProblem: notice.persona_<…>)
    "notice.persona_alias": (
        "line {line}: YAML aliases (*{name}) are not allowed in persona files; write the value out"
    ),
    "notice.persona_anchor": (
        "line {line}: YAML anchors and aliases (&{name}, *{name}) are not allowed in persona files; write "
        "the value out"
    ),
    "notice.persona_too_many_nodes": (
        "line {line}, column {column}: more than {limit} keys and values; a persona needs far fewer"
    ),
    "notice.persona_too_deep": "line {line}, column {column}: nested more than {limit} levels deep",
    "notice.persona_merge_key": (
        "line {line}: YAML merge keys (<<) are not allowed in persona files; write the keys out (or quote "
        "'<<' if it is meant as text)"
    ),
    "notice.persona_tag": (
        "line {line}: YAML tag {tag} is not allowed; persona files hold plain text, numbers, lists and "
        "mappings only"
    ),
    "notice.persona_long_number": (
        "line {line}: a number of {length} characters is too long (quote it if it is meant as text)"
    ),
    "notice.persona_duplicate_key": "line {line}: key '{key}' appears twice",
    "notice.persona_yaml_character": (
        "line {line}, column {column}: character {character} is not allowed in YAML"
    ),
    "notice.persona_yaml_syntax": "line {line}, column {column}: YAML syntax error: {problem}{context}",
    "notice.persona_yaml_error": "line {line}, column {column}: {problem}{context}",
    "notice.persona_yaml_context": " ({context} that starts at line {line}, column {column})",
    "notice.persona_yaml_other": "YAML error: {problem}",
    "notice.persona_second_document": (
        "line {line}: a second YAML document starts here; a persona file holds exactly one (remove the "
        "'---' separator)"
    ),
    "notice.persona_value_unreadable": "a value could not be read as YAML: {problem}",
    "notice.persona_broken_symlink": "is a broken symlink (its target does not exist)",
    "notice.persona_symlink_outside": "is a symlink to {target}, outside the persona folder; refused",
    "notice.persona_unreadable": "cannot be read: {problem}",
    "notice.persona_is_folder": "is a folder, not a regular file",
    "notice.persona_is_special": "is a special file, not a regular file",
    "notice.persona_not_regular": "is not a regular file",
    "notice.persona_too_large": "is {size}; persona files are limited to {limit} KiB",
    "notice.persona_not_utf8": (
        "is not UTF-8 text: byte {byte} at line {line}, column {column}; save the file as UTF-8"
    ),
    "notice.persona_bad_file_name": (
        "the file name must make a valid persona id ({id} is not): use letters, digits, '_' and '-', e.g. "
        "travel-planner"
    ),
    "notice.persona_bad_id": (
        "the id must make a valid persona id ({id} is not): use letters, digits, '_' and '-', e.g. "
        "travel-planner"
    ),
    "notice.persona_empty": "is empty; a persona needs at least name, avatar, description and system_prompt",
    "notice.persona_not_mapping": (
        "the top level must be a mapping of persona fields (name: ..., avatar: ...), not {value}"
    ),
    "notice.persona_folder_missing": "the persona folder does not exist",
    "notice.persona_folder_not_folder": "is not a folder; PERSONAS_DIR must name a folder",
    "notice.persona_folder_unreadable": "the persona folder cannot be read: {problem}",
    "notice.persona_id_taken": "id '{id}' is already taken by {other}; rename or remove one of the two files",
    # a validation error, as loaders word it (core/validation.py problem_notices: notice.validation_<…>)
    "notice.validation_line": "line {line}: {problem}",
    "notice.validation_top_level": "the top level",
    "notice.validation_unknown": "unknown field '{name}'{where}{hint}{suggestion}{allowed}",
    "notice.validation_in": " in {parent}",
    "notice.validation_hint": ": {hint}",
    "notice.validation_did_you_mean": " (did you mean '{name}'?)",
    "notice.validation_allowed": "; allowed fields: {fields}",
    "notice.validation_missing": "missing required field '{path}'",
    "notice.validation_invalid_key": "key {key}{where} is not a field name (keys must be text)",
    "notice.validation_own": "{path}: {problem}",
    "notice.validation_field": "{path}: {problem} (got {value})",
    "notice.validation_more_one": "and 1 more problem",
    "notice.validation_more": "and {count} more problems",
    "notice.validation_one_line": "must be a single line (no line breaks)",
    "notice.validation_emoji": "must be an emoji such as 🍜 (one emoji only), got {value}",
    "notice.validation_avatar_image": "the avatar image {problem}",
    "notice.validation_extensions_too_large": (
        "holds {size} KiB as JSON; extensions are limited to {limit} KiB"
    ),
    "notice.persona_id_hint": "the id is the file name ({id}), so remove this line",
    "notice.pydantic_string_type": "Input should be a valid string",
    "notice.pydantic_int_type": "Input should be a valid integer",
    "notice.pydantic_float_type": "Input should be a valid number",
    "notice.pydantic_list_type": "Input should be a valid list",
    "notice.pydantic_dict_type": "Input should be a valid dictionary",
    "notice.pydantic_bool_type": "Input should be a valid boolean",
    "notice.pydantic_model_type": "Input should be a valid dictionary or instance of {class_name}",
    "notice.pydantic_int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "notice.pydantic_finite_number": "Input should be a finite number",
    "notice.pydantic_literal_error": "Input should be {expected}",
    "notice.pydantic_string_pattern_mismatch": "String should match pattern '{pattern}'",
    "notice.pydantic_string_too_short": "String should have at least {min_length} characters",
    "notice.pydantic_string_too_short_one": "String should have at least {min_length} character",
    "notice.pydantic_string_too_long": "String should have at most {max_length} characters",
    "notice.pydantic_string_too_long_one": "String should have at most {max_length} character",
    "notice.pydantic_too_short": (
        "List should have at least {min_length} items after validation, not {actual_length}"
    ),
    "notice.pydantic_too_short_one": (
        "List should have at least {min_length} item after validation, not {actual_length}"
    ),
    "notice.pydantic_too_long": (
        "List should have at most {max_length} items after validation, not {actual_length}"
    ),
    "notice.pydantic_too_long_one": (
        "List should have at most {max_length} item after validation, not {actual_length}"
    ),
    "notice.pydantic_greater_than_equal": "Input should be greater than or equal to {ge}",
    "notice.pydantic_less_than_equal": "Input should be less than or equal to {le}",
    "notice.pydantic_greater_than": "Input should be greater than {gt}",
    "notice.pydantic_less_than": "Input should be less than {lt}",
    "error.invalid_settings": "{problems}",
    "notice.test_set_not_a_list": "expected a list of prompts",
    # a conversation file that is not imported (core/chat/conversation.py not_imported)
    "error.conversation_import": "{problem}",
    "notice.conversation_file_too_large": "The file is larger than {limit:,} bytes.",
    "notice.conversation_too_large": (
        "The file is {size:,} bytes; conversations over {limit:,} bytes are not imported."
    ),
    "notice.conversation_not_export": "This is not a conversation export: {problems}.",
    "notice.conversation_not_utf8": "The file is not UTF-8 text.",
    "notice.conversation_json_at": "The file is not valid JSON (line {line}, column {column}: {problem}).",
    "notice.conversation_too_deep": "The file's JSON is nested too deeply.",
    "notice.conversation_huge_number": (
        "The file holds a number with thousands of digits; no conversation has one."
    ),
    "notice.conversation_not_json": "The file is not valid JSON.",
    "notice.conversation_surrogate": (
        "{where} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text."
    ),
    "notice.conversation_surrogate_key": "A field name in {where} holds a lone surrogate, which is not text.",
    "notice.conversation_big_integer": (
        "{where} holds an integer beyond 64 bits, too large for any count or setting."
    ),
    "notice.conversation_not_finite": "{where} holds {value}, which is not a finite number.",
    "notice.conversation_first_not_system": "The first message must be the system prompt, in context.",
    "notice.conversation_second_system": "Only the first message may be a system prompt.",
    "notice.conversation_duplicate_id": "Two messages share one id; every message needs its own.",
    "notice.conversation_not_alternating": (
        "Message {position} is a {role} message in context where a {expected} message was expected; "
        "in-context messages must alternate user/assistant."
    ),
    "notice.conversation_trim_unknown": "Trim event of turn {turn} names a message that does not exist.",
    "notice.conversation_trim_turn": (
        "A trim event names turn {turn}, but the conversation has {turns} turns."
    ),
    "notice.conversation_turn_number": (
        "Turn {position} is numbered {number}; turns must be numbered 1, 2, 3, … in order."
    ),
    "notice.conversation_turn_sent": (
        "Turn {position} says it sent {count} messages, more than the conversation holds."
    ),
    "notice.conversation_turn_reply": (
        "Turn {position} names a reply {id} that is not an answer in this conversation."
    ),
    "notice.conversation_turn_same_reply": "Turns {position} and an earlier one name the same reply.",
    "notice.conversation_summary_unknown": "A summary version names a message that does not exist.",
    "notice.conversation_summary_event_unknown": (
        "Summary event of turn {turn} names a message that does not exist."
    ),
    "error.summary_too_long": "The summary could not be cut to its {limit} tokens.",
    "error.summary_empty": "The summarizer sent an empty summary.",
    "error.no_api_key": (
        "No API key: enter one or set OPENAI_API_KEY. A local server that needs no key (Ollama, LM Studio, "
        "...) accepts any placeholder, e.g. `local`."
    ),
    "error.no_anthropic_key": "No API key: enter your Anthropic key (`sk-ant-...`).",
    # why a picture cannot be an avatar (core/personas/avatars.py AvatarImageError: notice.avatar_<…>)
    "notice.avatar_too_many_pixels": (
        "the image is {width}×{height} pixels; at most {limit} megapixels are read"
    ),
    "notice.avatar_damaged": "the image data is damaged ({problem})",
    "notice.avatar_does_not_fit": "the image does not fit the avatar size limit even at {side} pixels",
    "notice.avatar_too_large": "is {size} KiB; an avatar image is at most {limit} KiB",
    "notice.avatar_not_png": "must be a PNG image",
    "notice.avatar_too_wide": "is {width}×{height} pixels; at most {limit} pixels a side",
    "notice.avatar_png_damaged": "the PNG data is damaged ({problem})",
    "notice.avatar_not_base64": "is not valid base64",
    "notice.avatar_not_data_url": "is not a data:image URL; remote images are never fetched",
    "notice.avatar_data_url_not_base64": "is a data URL that is not base64",
    "notice.avatar_data_url_too_large": "is a data URL larger than {limit} MiB",
    "notice.avatar_data_url_bad_base64": "is a data URL whose base64 is not valid",
    "notice.avatar_not_image": "is not a PNG, JPEG, WebP or GIF image",
    "notice.avatar_bomb": "declares too many pixels ({problem})",
    "error.empty_message": "An empty message cannot be sent.",
    "error.columns_replying": "The columns are still replying: stop them or wait for them first.",
    "error.column_replying": "Column {letter} is still replying.",
    "error.column_nothing_to_retry": "Column {letter} has no failed answer to ask again.",
    "error.nothing_asked": "Nothing has been asked yet.",
    "error.pick_after_all_finished": "Pick an answer once every column has finished.",
    "error.already_picked": "An answer to this message has already been picked.",
    "error.column_no_answer": "Column {letter} has no answer to this message to pick.",
    "error.wait_for_columns": "Wait until every column has finished its reply.",
    "error.nothing_to_regenerate": "There is no answer to regenerate.",
    "error.no_summary_yet": "There is no summary to edit yet.",
    "error.summary_empty_edit": "A summary cannot be empty.",
    "error.test_set_running": "A test set is already running: cancel it or wait for it.",
    "error.no_comparison": "There is no comparison open.",
    "error.nothing_to_resend": "There is no unanswered message to send again.",
    "error.nothing_to_continue": "The last reply was not cut off by the reply cap or interrupted.",
    "error.run_no_prompt": "This run has no prompt {number}.",
    "error.run_no_answer": "Column {column} has no answer to prompt {number}.",
}
