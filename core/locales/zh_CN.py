"""简体中文界面文本。Keys and `{fields}` match en.py exactly; see core/i18n.py for the scheme.
Product and format names (API, URL, JSON, YAML, Markdown, OpenAI, model ids) stay as they are."""

CATALOG: dict[str, str] = {
    # --- page, sign-in, workspace ------------------------------------------------------------
    "page.name": "角色聊天仪表盘",
    "page.no_personas": "无法从 {directory} 加载任何角色。",
    "signin.prompt": "登录后即可查看你的对话，这些对话仅你本人可见。",
    "signin.button": "登录",
    "signin.as": "已登录：{who}",
    "signin.logout": "退出登录",
    "notice.private_workspace": (
        "这是你的私人工作区。**请收藏本页链接：它是打开你的对话的钥匙**，任何拿到该链接的人都能阅读这些对话。"
    ),
    "workspace.start_new": "新建工作区",
    "access.shared_with_strangers": (
        "**任何拿到本页链接的人都能看到这些对话**，并能让本服务器访问任意 API 基础地址："
        "部署者设置了 ACCESS_MODE=single-user。"
    ),
    "views.label": "视图",
    "views.chat": "💬 聊天",
    "views.personas": "🎭 角色",
    "views.compare": "⚖️ 对比",
    # --- saving, notices -----------------------------------------------------------------------
    "store.not_saving": "对话目前无法保存：{error}",
    "store.reload.label": "重新载入此对话",
    "store.reload.help": "自本页读取以来，另一个标签页或服务器已保存过此对话。",
    "notice.open_failed": "无法打开该对话：{error}",
    "notice.not_renamed": "未能重命名：{error}",
    "notice.not_deleted": "未能删除：{error}",
    "notice.not_restored": "无法恢复“{title}”：{error}",
    "notice.import_failed": "导入 {file} 失败：{error}",
    "notice.imported": "已从 {file} 导入 {count} 条消息，作为 {persona} 的新对话。",
    "notice.store_unsaved": "你的最近一次更改尚未保存：{error}",
    "notice.stale": "未保存：{error}",
    "notice.settings_refused": "设置未更改：{error}",
    "notice.limit_applied": "受此部署限制：{note}",
    "notice.comparison_not_started": "无法开始对比：{error}",
    "notice.comparison_not_opened": "无法打开该对比：{error}",
    "notice.comparison_unsaved": "对比尚未保存：{error}",
    "notice.test_set_unsaved": "测试集尚未保存：{error}",
    "notice.test_run_unsaved": "测试运行结果尚未保存：{error}",
    "notice.compare_refused": "未完成：{error}",
    "notice.persona_saved": "已保存 {avatar} {name}。",
    # --- sidebar -------------------------------------------------------------------------------
    "sidebar.language": "🌐 语言",
    "sidebar.persona.label": "角色",
    "sidebar.persona_errors": "⚠️ 有 {count} 个角色文件无法加载",
    "sidebar.settings": "⚙️ 设置：语言、连接、模型、预算、导出",
    "sidebar.connection.header": "连接",
    "sidebar.api_key.label": "API 密钥",
    "sidebar.api_key.help": (
        "仅保存在当前浏览器会话中，从不写入存储。"
        "也可由部署方在 secrets.toml 或环境变量 OPENAI_API_KEY 中提供。"
    ),
    "sidebar.base_url.label": "API 基础地址",
    "sidebar.base_url.help": "任何兼容 OpenAI 的服务器：Azure、Ollama、vLLM、LM Studio、llama.cpp。",
    "sidebar.base_url.deployer": "部署方配置的服务器",
    "sidebar.base_url.locked": "此部署不允许访客选择其他服务器。",
    "sidebar.base_url.refused": "{error} 已改用部署方自己的连接。",
    "sidebar.limits.applied": "受此部署限制：{note}",
    "sidebar.model.label": "模型",
    "sidebar.model.help": "角色默认模型：{model}",
    "sidebar.budget.header": "预算",
    "sidebar.budget.label": "上下文预算（提示词 token 数）",
    "sidebar.budget.help": "一次调用最多发送的提示词 token 数。超出时会裁剪较早的对话轮次。",
    "sidebar.reply_cap.label": "回复上限（每条回复的最大 token 数）",
    "sidebar.reply_cap.help": "单条回复最多可包含的 token 数（max_tokens），与上下文预算相互独立。",
    "sidebar.export.header": "导出 / 导入",
    "sidebar.import.label": "导入 JSON 导出文件（作为新对话）",
    "connection.offline": (
        "未设置 API 密钥：回复来自**内置离线模型**。它在本地运行、不产生费用，用量数据也在本地计算。"
    ),
    "connection.connected": "已连接到 **{host}**（密钥{key_source}）。",
    "connection.key_source.typed": "在此输入",
    "connection.key_source.secrets": "来自部署方配置",
    "connection.key_source.environment": "来自环境变量",
    "connection.key_source.none": "未设置",
    # --- conversation list ---------------------------------------------------------------------
    "conversations.label": "对话",
    "conversations.new": "新对话",
    "conversations.deleted": "已删除“{title}”。",
    "conversations.undo_delete": "撤销删除",
    "conversations.search.label": "搜索对话",
    "conversations.search.placeholder": "搜索标题和消息",
    "conversations.list_failed": "无法读取对话列表：{error}",
    "conversations.no_match": "没有匹配的对话。",
    "conversations.item.numbered": "{title}（{number}）",
    "conversations.item.details.one": "{updated:%Y-%m-%d %H:%M} UTC · {count} 条消息",
    "conversations.item.details.other": "{updated:%Y-%m-%d %H:%M} UTC · {count} 条消息",
    "conversations.item.open": "当前打开 · {details}",
    "conversations.item.match": "“{snippet}”",
    "conversations.older": "还有 {count} 个较早的对话：请通过搜索查找。",
    "conversations.manage": "重命名或删除此对话",
    "conversations.title": "标题",
    "conversations.rename": "重命名",
    "conversations.delete": "删除",
    # --- chat ----------------------------------------------------------------------------------
    "chat.input.placeholder": "给 {name} 发消息…",
    "chat.show_earlier.label": "显示更早的 {count:,} 条消息",
    "chat.show_earlier.help": "导出文件中包含全部消息。",
    "chat.continued": "↪ 已请模型继续：“{preview}”",
    "chat.badge.interrupted": "已中断 · 部分回复",
    "chat.badge.cut_off": "因回复上限被截断",
    "chat.starters": "试试这些：",
    "chat.retry": "重试",
    "chat.regenerate": "重新生成上一条回答",
    "chat.unsent_restored": (
        "你在此标签页中写的内容未能保存（另一个标签页先保存了此对话）；它已放回聊天输入框，可以再次发送。"
    ),
    "chat.continue": "继续回复",
    # MessageState labels, by state value (core/chat/conversation.py says them in English).
    "state.context": "在上下文中",
    "state.trimmed": "已裁剪 · 不再在模型的上下文中",
    "state.unanswered": "未获回答 · 不在上下文中",
    "state.replaced": "已重新生成 · 不在上下文中",
    "state.summarized": "已摘要 · 已并入摘要",
    # The data an error carries, joined by " · " under the error.
    "error.details.status": "HTTP {status}",
    "error.details.wait": "请等待 {seconds:.0f} 秒",
    "error.details.request_id": "请求 ID `{request_id}`",
    "error.details.not_retryable": "问题解决之前，重试无济于事",
    # --- dashboard -----------------------------------------------------------------------------
    "dashboard.header": "模型看到的内容",
    "dashboard.cost.label": "费用",
    "dashboard.cost.unknown": "价格未知",
    "dashboard.cost.unknown_help": "models.yaml 中没有 {model}。",
    "dashboard.cost.offline_delta": "离线；原应 {cost}",
    "dashboard.cost.offline_help": "离线模型不收费；下方数字是这些 token 在 {model} 上的费用。",
    "dashboard.cost.help": "依据 models.yaml 中的价格计算。",
    "dashboard.cost.per_turn": "平均每轮 {cost}",
    "dashboard.cost.no_turns": "尚未发送",
    "dashboard.tokens.label": "token 用量",
    "dashboard.tokens.delta": "输入 {tokens_in} · 输出 {tokens_out}",
    "dashboard.tokens.help": "所有轮次的提示词 token（输入）与回复 token（输出）。",
    "dashboard.tokens.help_some_counted": (
        "所有轮次的提示词 token（输入）与回复 token（输出），部分为本地计数。"
    ),
    "dashboard.cache.label": "缓存命中率",
    "dashboard.cache.delta": "节省 {saved}",
    "dashboard.cache.delta_offline": "离线；原可节省 {saved}",
    "dashboard.cache.delta_unpriced": "价格未知",
    "dashboard.cache.help": (
        "服务器报告从提示缓存读取的提示 token 所占比例（按 models.yaml 中的缓存价格计费），"
        "以及同样的 token 不用缓存时的费用减去实际费用（缓存写入比读取节省得更多时为负数）。"
        "裁剪最早的消息会改变提示的开头，使缓存失效；“稳定前缀”策略能保住缓存。"
    ),
    "dashboard.server_cut": (
        "服务器悄悄截断了上一次的提示：发送的 {sent} 个 token 中只读取了 {read} 个，"
        "模型没有看到最早的部分。它的上下文窗口大约是 {read} 个 token；把预算设为 {budget:,} "
        "可让提示保持在其之下。这一轮没有用于校准 token 估算。"
    ),
    "dashboard.server_cut.fix": "把预算设为 {budget:,}",
    "chart.usage.title": "每轮 token 数",
    "dashboard.usage.empty": "**每轮 token 数：**图表会随聊天逐步填充，每轮一个点。",
    "dashboard.usage.offline": "🔌 离线模型：其用量在本地计算，与 API 的报告方式完全相同。",
    "dashboard.usage.mismatch": "有 {count} 轮的本地计数与 API 报告的提示词 token 数不一致。",
    "dashboard.usage.match": "✅ 每一轮本地计数的提示词 token 数都与 API 报告的一致。",
    "chart.gauge.title": "当前上下文",
    "dashboard.gauge.parts": "从左到右：{parts}",
    # Parts of the context gauge, by name (core/stats.py ContextGauge.parts).
    "gauge.part.system": "系统提示",
    "gauge.part.summary": "摘要",
    "gauge.part.pinned": "已固定",
    "gauge.part.history": "历史",
    "gauge.part.newest": "最新",
    "gauge.part.priming": "回复预置",
    "gauge.part.free": "剩余",
    "dashboard.context.drops.one": (
        "上下文中有 {count:,} 条消息。下一轮将丢弃最早的 {drops} 条（从“{preview}”开始）。"
    ),
    "dashboard.context.drops.other": (
        "上下文中有 {count:,} 条消息。下一轮将丢弃最早的 {drops} 条（从“{preview}”开始）。"
    ),
    "dashboard.context.fits.one": "上下文中有 {count:,} 条消息。下一轮无需裁剪即可容纳。",
    "dashboard.context.fits.other": "上下文中有 {count:,} 条消息。下一轮无需裁剪即可容纳。",
    "dashboard.next_call.header": "下一次调用发送的确切内容，以及置顶",
    "dashboard.next_call.tokens": "token 数",
    "dashboard.next_call.text": "文本",
    "dashboard.next_call.role": "角色",
    "dashboard.next_call.state": "下一次调用",
    "dashboard.next_call.sent": "发送",
    "dashboard.next_call.sent_pinned": "发送（已固定）",
    "dashboard.next_call.dropped": "丢弃",
    "dashboard.role.system": "系统",
    "dashboard.role.user": "用户",
    "dashboard.role.assistant": "助手",
    "dashboard.role.priming": "（回复预置）",
    "dashboard.trims.turn": "轮次",
    "dashboard.trims.text": "丢弃的内容",
    "dashboard.next_call.total": "合计：{used:,} 个提示词 token（按 API 的计数方式，裁剪前）。",
    "dashboard.trims.header": "裁剪记录",
    "dashboard.trims.empty": "尚未裁剪任何内容。",
    "dashboard.trims.dropped": "丢弃",
    "dashboard.trims.before": "裁剪前",
    "dashboard.trims.after": "裁剪后",
    "dashboard.turns.header": "所有轮次",
    # --- personas: gallery, cards, editor (ui/personas_view.py) ----------------------------------
    "personas.gallery.header": "角色",
    "personas.gallery.caption": (
        "选择一个角色开始聊天，或复制一个改成你自己的。内置角色为只读；你的角色保存在你的工作区中。"
    ),
    "personas.gallery.page": "页码（共 {pages} 页，{count} 个角色）",
    "personas.gallery.new": "新建角色",
    "personas.card.budget": "预算 {budget:,}",
    "personas.card.reply_cap": "回复上限 {reply_cap:,}",
    "personas.card.tags": "标签：{tags}",
    "personas.card.custom": "我的",
    "personas.card.shipped": "内置",
    "personas.card.conversations.one": "{count} 个对话",
    "personas.card.conversations.other": "{count} 个对话",
    "personas.card.chat": "聊天",
    "personas.card.edit": "编辑",
    "personas.card.duplicate": "复制",
    "personas.editor.new": "新建角色",
    "personas.editor.edit": "编辑 {avatar} {name}",
    "personas.editor.duplicate": "复制 {avatar} {name}",
    "personas.editor.caption": "保存时按与 personas/ 中 YAML 文件相同的规则检查。",
    "personas.editor.id": "ID（字母、数字、_ 和 -）",
    "personas.editor.name": "名称",
    "personas.editor.avatar": "头像（一个表情符号）",
    "personas.editor.description": "简介（一行）",
    "personas.editor.system_prompt": "系统提示词（每次调用都最先发送）",
    "personas.editor.model": "模型",
    "personas.editor.temperature": "温度（留空则不发送）",
    "personas.editor.budget": "上下文预算（提示词 token 数）",
    "personas.editor.reply_cap": "回复上限（每条回复的 token 数）",
    "personas.editor.greeting": "问候语（仅显示，不发送）",
    "personas.editor.starters": "开场提示（每行一条）",
    "personas.editor.examples": "少样本示例（可选）",
    "personas.editor.examples_help": (
        "每次调用都会在系统提示词之后发送的示例消息（计入预算）。"
        "每条消息另起一行，以 `User:` 或 `Assistant:` 开头。"
    ),
    "personas.editor.tags": "标签（用逗号分隔）",
    "personas.editor.save": "保存",
    "personas.editor.cancel": "取消",
    "personas.editor.id_taken": "ID“{id}”已被占用，请另选一个。",
    "validation.required": "{label}：必填，请填写。",
    "validation.too_short": "{label}：至少需要 {limit:,} 个字符。",
    "validation.too_long": "{label}：最多 {limit:,} 个字符。",
    "validation.too_many": "{label}：最多 {limit:,} 项。",
    "validation.at_least": "{label}：不能小于 {limit:,}。",
    "validation.more_than": "{label}：必须大于 {limit:,}。",
    "validation.at_most": "{label}：不能大于 {limit:,}。",
    "validation.less_than": "{label}：必须小于 {limit:,}。",
    "validation.invalid": "{label}：{detail}",
    "validation.one_line": "{label}：只能是一行（不能换行）。",
    "validation.emoji": "{label}：必须是一个表情符号，例如 🍜（只能一个），而不是 {value}",
    "validation.avatar_image": "{label}：头像图片无法使用（{problem}）",
    "validation.extensions_too_large": "{label}：以 JSON 计占 {size} KiB；最多保留 {limit} KiB。",
    "personas.editor.id_invalid": (
        "{label}：“{id}”不是有效的 ID：只能使用字母、数字、“_”和“-”（最多 64 个），例如 travel-planner。"
    ),
    "personas.editor.not_saved": "未保存：{error}",
    # --- importing from and exporting to other apps (ui/persona_exchange.py) ---------------------
    "personas.exchange.header": "从其他应用导入",
    "personas.exchange.caption": (
        "角色卡（JSON、PNG、.charx）、LobeHub 助手、NextChat 面具、Open WebUI 模型导出、"
        "LibreChat modelSpecs（YAML）以及角色 YAML 文件，可一次选多个。在你选择之前不会保存任何内容；"
        "图片链接从不打开。"
    ),
    "personas.exchange.files": "要导入的文件",
    "personas.exchange.user_name": "你的名字（角色卡中用占位符表示）",
    "personas.exchange.failed": "未导入：{error}",
    "personas.exchange.pick": "保存 {name}，编号为“{id}”",
    "personas.exchange.source": "来自 {file} · {format}",
    "personas.exchange.tokens": "系统消息：{tokens:,} 个词元，预算 {budget:,}（{share}）",
    "personas.exchange.col.ours": "角色字段",
    "personas.exchange.col.theirs": "来源",
    "personas.exchange.col.note": "说明",
    "personas.exchange.col.why": "原因",
    "personas.exchange.dropped": "未使用或为导出而保留（{count}）",
    "personas.exchange.prompt": "导入后的系统提示词和示例",
    "personas.exchange.save": "保存勾选的角色",
    "personas.exchange.saved": "已保存 {name}。",
    "personas.exchange.not_saved": "{name} 未保存：{error}",
    "personas.export.label": "导出",
    "personas.export.yaml": "角色 YAML（本应用）",
    "personas.export.card-v3": "角色卡 V3（JSON）",
    "personas.export.card-png": "角色卡（PNG）",
    "personas.export.lobehub": "LobeHub 助手（JSON）",
    "sidebar.policy.label": "预算用满时",
    "sidebar.policy.help": (
        "丢弃最早的对话轮次，或把它们折叠进由模型撰写的滚动摘要（摘要紧跟系统提示词发送，并计入预算），"
        "或保持稳定前缀：一次丢弃多轮，降到预算的 65%，之后的轮次只追加内容，服务器便能继续从缓存"
        "提供提示（更便宜、更快）。"
    ),
    "policy.drop_oldest": "丢弃最早的对话轮次",
    "policy.summarize": "摘要最早的对话轮次",
    "policy.stable_prefix": "保持稳定前缀（利于缓存）",
    "summary.title": "前 {count} 条消息的摘要 · {tokens} 个 token，紧跟系统提示词发送",
    "summary.version": "第 {number} 版：{source}，{at:%Y-%m-%d %H:%M} UTC",
    "summary.source.model": "由模型撰写",
    "summary.source.user": "由你编辑",
    "summary.edit.label": "编辑摘要（从下一次调用起，模型看到的是你的版本）",
    "summary.edit.save": "保存摘要",
    "summary.edit.tokens": "编辑后共 {tokens} 个 token。",
    "summary.fallback": "第 {turn} 轮之前未能写出摘要（{reason}）；改为丢弃了最早的对话轮次。",
    "views.whatif": "🔬 假如",
    "whatif.header": "假如",
    "whatif.caption": (
        "在不调用任何模型的情况下，用另一种预算、策略或模型重放这段对话的消息：每一轮的提"
        "示词 token 数、每一轮会丢弃或摘要的内容以及费用，并与实际发生的情况并排对"
        "比。"
    ),
    "whatif.empty": "请先聊天：重放使用的是这段对话记录下的消息。",
    "whatif.running": "正在重放…",
    "whatif.cost": "费用（假如）",
    "whatif.cost.delta": "实际 {recorded}",
    "whatif.prompt_tokens": "提示词 token（假如）",
    "whatif.forgotten": "遗忘（假如）",
    "whatif.forgotten.help": "重放时不再放入上下文、而实际调用仍然发送的消息。",
    "whatif.forgotten.list": "模型会遗忘的内容（{count} 条消息）",
    "whatif.cache_rule.label": "提示缓存",
    "whatif.cache_rule.help": (
        "模拟重放调用所用的服务器提示缓存：OpenAI 的规则（与近期请求共享的前缀，从 1,024 个 token 起、"
        "以 128 个为一块计）、普通前缀缓存（llama.cpp、vLLM），或不用缓存。"
    ),
    "whatif.cache_rule.none": "无",
    "whatif.cache_rule.openai": "OpenAI 的规则",
    "whatif.cache_rule.prefix": "普通前缀缓存",
    "whatif.cache": "来自缓存（假如）",
    "whatif.cache.delta": "实际 {recorded}",
    "whatif.cache.help": "来自提示缓存的提示 token 所占比例：重放中为模拟值，实际记录中为服务器报告的值。",
    "whatif.table.cached_recorded": "来自缓存（实际）",
    "whatif.table.cached_replayed": "来自缓存（假如）",
    "whatif.policies.header": "同一缓存下的各策略",
    "whatif.policies.policy": "策略",
    "whatif.policies.prompt": "提示 token",
    "whatif.policies.cached": "来自缓存",
    "whatif.policies.hit_rate": "命中率",
    "whatif.policies.cost": "费用",
    "whatif.policies.cost_difference": "费用差（美元）",
    "whatif.policies.forgotten": "遗忘的消息",
    "whatif.table.turn": "轮次",
    "whatif.table.recorded": "提示词（实际）",
    "whatif.table.replayed": "提示词（假如）",
    "whatif.table.difference": "差值",
    "whatif.table.dropped": "会丢弃",
    "whatif.table.summarized": "会摘要",
    "whatif.table.cost_difference": "费用差（美元）",
    "counting.tiktoken": ("📏 用 tiktoken（OpenAI 计费所用的分词器）精确计数。"),
    "counting.server": "📏 由服务器自己的分词器精确计数。",
    "counting.calibrated": (
        "📏 校准估算：与服务器报告的用量相差在 ±{error:.1f}% 以内，按文字类别（中日韩文字、拉丁词、数字、"
        "标点、表情符号）对 {turns} 轮做最小二乘拟合。"
    ),
    "counting.uncalibrated": (
        "📏 tiktoken 不认识 `{model}`，服务器也不提供分词器：在服务器"
        "报告用量之前均为估算，调用会保留安全余量。"
    ),
    "counting.window": "服务器报告的上下文窗口为 {window:,} 个 token。",
    "counting.budget": (
        "调用按 {budget:,} 个提示词 token 裁剪（你的预算是 "
        "{setting:,}）：即窗口减去回复上限，并在估算学习期间保留余量。"
    ),
    "chat.badge.pinned": "已置顶",
    "pins.label": "始终保留在上下文中",
    "pins.help": ("任何上下文策略都不会丢弃或摘要置顶消息；如果仅置顶消息就超出预算，将不会发送并提示你。"),
    "connection.failing": "上一次调用 **{host}** 失败（密钥{key_source}）：请查看聊天中的错误。",
    # --- leaderboard (ui/leaderboard_view.py) ------------------------------------------------
    "leaderboard.header": "排行榜",
    "leaderboard.about": (
        "根据你在对比中的投票计算的 Bradley–Terry 评分，95% 区间来自 {samples} 次自助重抽样。"
        "排名的对象是“角色 + 模型 + 设置”；被选中的回答胜过其他每一栏，平局或“都不好”算作平局。"
    ),
    "leaderboard.empty": "还没有投票：在对比中为更好的回答投票后，排名就从这里开始。",
    "leaderboard.not_enough": (
        "票数还不够：至少有两个参赛者各得到 {minimum} 票后排名才稳定。在此之前区间较宽，顺序可能变化。"
    ),
    "leaderboard.row_not_enough": "票数还不够",
    "leaderboard.scope.label": "计入的投票",
    "leaderboard.scope.blind": "仅盲投（{count}）",
    "leaderboard.scope.all": "全部投票（{count}）",
    "leaderboard.scope.help": (
        "盲投是在不知道谁回答的情况下投出的；公开投票则知道（非盲对比、盲测对在第一次投票后的各轮、"
        "测试集结果）。与 Chatbot Arena 一样，除非你选择全部，排名只计入盲投。无论哪种，"
        "每个对话中每对回答只计一票：最后一票。"
    ),
    "leaderboard.setting.budget": "预算 {value}",
    "leaderboard.setting.reply_cap": "回复上限 {value}",
    "leaderboard.setting.temperature": "温度 {value}",
    "leaderboard.setting.seed": "随机种子 {value}",
    "leaderboard.counts": "已投 {blind} 张盲投 · {open} 张公开投票。",
    "leaderboard.empty_blind": "还没有盲投：在盲测对比或盲测对中投票，或选择计入全部投票。",
    "leaderboard.column.rank": "名次",
    "leaderboard.column.persona": "角色",
    "leaderboard.column.model": "模型",
    "leaderboard.column.settings": "设置",
    "leaderboard.column.rating": "评分",
    "leaderboard.column.interval": "95% 区间",
    "leaderboard.column.record": "战绩",
    "leaderboard.column.status": "状态",
    "leaderboard.record": "{wins} 胜 · {losses} 负 · {ties} 平",
    "leaderboard.votes": "票数",
    "leaderboard.total": "共 {votes} 次两两投票。",
    "leaderboard.export_csv": "导出排行榜 CSV",
    "leaderboard.export_json": "导出排行榜 JSON",
    # --- charts (core/charts.py): axes, legends, tooltips ---
    "chart.axis.turn": "轮次",
    "chart.axis.tokens": "token 数",
    "chart.axis.series": "数据系列",
    "chart.series.counted": "提示词（本地计数）",
    "chart.series.reported": "提示词（接口报告）",
    "chart.series.cached": "提示词（来自缓存）",
    "chart.series.reply": "回复",
    "chart.series.budget": "预算",
    "chart.series.summary": "摘要",
    "chart.series.trimmed": "已裁剪",
    "chart.trim.turn": "裁剪发生在此轮之前",
    "chart.trim.messages_dropped": "丢弃的消息数",
    "chart.trim.tokens_freed": "释放的 token 数",
    "chart.trim.tokens_before": "裁剪前 token 数",
    "chart.trim.tokens_after": "裁剪后 token 数",
    "chart.trim.preview": "丢弃内容",
    "chart.budget_off_scale": "预算 {budget:,} ↑",
    "chart.gauge.part": "部分",
    "chart.gauge.axis": "占 {budget:,} token 预算的 token 数",
    "chart.replay.recorded": "实际记录",
    "chart.replay.what_if": "假设情形",
    "chart.replay.run": "运行",
    # --- the offline model's reply (core/providers/offline.py) ---
    "offline.reply.received": (
        "[离线模型] 我收到了 {messages} 条消息（{tokens} 个提示词 token）："
        "系统提示、{summary}{exchanges}，以及你的消息。"
    ),
    "offline.reply.summary": "先前对话的摘要、",
    "offline.reply.exchanges.one": "{count} 轮较早的问答",
    "offline.reply.exchanges.other": "{count} 轮较早的问答",
    "offline.reply.role.user": "用户",
    "offline.reply.role.assistant": "助手",
    "offline.reply.oldest": "我仍能看到的最早一条消息来自{role}：“{text}”",
    "offline.reply.you_said": "你说：“{text}”",
    "offline.reply.hint": "在侧边栏的“设置”中填入 API 密钥，即可与真实模型对话。",
    # --- the comparison chart (core/charts.py ComparisonChartTexts) ------------------------------
    "chart.compare.message": "消息",
    "chart.compare.prompt_tokens": "提示词 token 数",
    "chart.compare.reply_tokens": "回复 token 数",
    "chart.compare.first_token_s": "首个 token（秒）",
    "chart.compare.total_s": "总耗时（秒）",
    "chart.compare.cost_usd": "费用（美元）",
    "chart.compare.budget": "预算",
    # --- compare, blind pairs, test sets (ui/compare_view.py, ui/testsets_view.py) ---------------
    "compare.header": "对比",
    "compare.mode.label": "对比方式",
    "compare.mode.columns": "⚖️ 并排对比",
    "compare.mode.blind": "🙈 盲测对决",
    "compare.mode.tests": "🧪 测试集",
    "compare.columns.about": (
        "把同一条消息同时发给 2 到 4 个角色或模型，逐栏查看每个模型看到了什么、用了多少 token、速度和费用。"
    ),
    "compare.columns.count": "栏数",
    "compare.columns.blind": "盲测：投票前隐藏每一栏是谁",
    "compare.column": "第 {number} 栏",
    "compare.model": "模型",
    "compare.budget": "上下文预算",
    "compare.start": "开始对比",
    "compare.blind.about": (
        "两个回答并排显示，顺序随机，不告诉你是谁：想聊多久都可以，然后为更好的那个投票（"
        "或平局、或都不好）。投票后才显示是谁回答的、用了多少 token 和费用。"
    ),
    "compare.blind.start": "开始盲测对决",
    "compare.blind.header": "盲测对比",
    "compare.blind.hidden": "投票前隐藏回答者，以及他们的 token 数和费用。",
    "compare.saved.header.one": "{count} 个已保存的对比",
    "compare.saved.header.other": "{count} 个已保存的对比",
    "compare.saved.failed": "无法读取已保存的对比：{error}",
    "compare.new": "新建对比",
    "compare.input": "向每一栏提问…",
    "compare.column.caption": "`{model}` · 预算 {budget}",
    "compare.state.waiting": "⏳ 等待中",
    "compare.state.streaming": "✍️ 输出中",
    "compare.state.stopped": "⏹ 已停止",
    "compare.state.interrupted": "⚡ 已中断 · 部分回答",
    "compare.stop": "停止",
    "compare.retry": "重试",
    "compare.figures.prompt": "提示词 {tokens}",
    "compare.figures.api": "（接口报告 {tokens}）",
    "compare.figures.reply": "回复 {tokens}",
    "compare.figures.first_token": "首个 token {seconds} 秒",
    "compare.figures.total": "总计 {seconds} 秒",
    "compare.figures.trimmed": "裁剪 {messages} 条（{tokens} 个 token）",
    "chart.compare.title": "每条消息，按栏",
    "compare.vote.header": "哪个回答更好？",
    "compare.vote.preferred": "{label} 更好",
    "compare.vote.tie": "🤝 平局",
    "compare.vote.both_bad": "👎 都不好",
    "compare.vote.done_preferred": "你在第 {number} 条消息上选择了 {label}。",
    "compare.vote.done_tie": "你认为第 {number} 条消息打成平局。",
    "compare.vote.done_both_bad": "你认为第 {number} 条消息的回答都不好。",
    "testsets.about": (
        "一组命名的提示词，针对 2 到 4 个角色或模型运行，每条提示词都是全新的对话。编辑角"
        "色后再运行一次，看看有什么变化；为回答投票，结果计入排行榜。"
    ),
    "testsets.choose": "测试集",
    "testsets.new": "➕ 新建测试集",
    "testsets.name": "名称",
    "testsets.text": "提示词，每行一条",
    "testsets.text_help": "北京烤鸭怎么做？\n什么样的拉面好吃？",
    "testsets.file": "……或上传文件：文本（每行一条）、CSV（“prompt”列）或 YAML（列表）",
    "testsets.save": "保存测试集",
    "testsets.prompts.one": "{count} 条提示词",
    "testsets.prompts.other": "{count} 条提示词",
    "testsets.run": "运行测试集",
    "testsets.progress": "已回答 {done} / {total} 条提示词",
    "testsets.cancel": "取消",
    "testsets.results": "最近一次运行，{when}",
    "testsets.cancelled": "这次运行已取消：未运行到的提示词标记为已跳过。",
    "testsets.difference": (
        "与上一次运行相比：{total} 个回答中有 {changed} 个变化 · 提示词 token"
        " {prompt} · 回复 token {reply} · 费用 {cost} 美元"
    ),
    "testsets.skipped": "已跳过",
    "testsets.changed": "🔁 与上次运行不同",
    "testsets.same": "= 与上次运行相同",
    "testsets.vote": "哪个回答更好？",
    "testsets.col.column": "栏",
    "testsets.col.answered": "已回答",
    "testsets.col.prompt_tokens": "提示词 token",
    "testsets.col.reply_tokens": "回复 token",
    "testsets.col.latency": "平均耗时（秒）",
    "testsets.col.cost": "费用（美元）",
    "testsets.col.changed": "变化的回答",
    "notice.test_set_needs_name": "请为测试集命名。",
    "notice.test_set_unusable": "测试集未保存：{error}",
    "notice.test_set_not_started": "测试集无法运行：{error}",
    "notice.test_vote_refused": "投票未保存：{error}",
    # --- errors from core (core/errors.py: error.<code> with the error's fields) ---
    "error.generic": "出错了：{message}",
    "error.replay_too_large": "此对话有 {messages} 条消息；假设重放最多支持 {limit} 条。",
    "error.too_many_personas": "此工作区已有 {limit} 个角色，已达上限；请先删除一个再添加。",
    "error.details.server_said": "服务器回复：{text}",
    "error.prompt_too_long": (
        "系统提示和你的消息共需 {tokens:,} 个提示词 token，比上下文预算 {budget:,} 多 {overflow:,} 个。请"
        "缩短消息或提高上下文预算；你的文字尚未发送，已保留。"
    ),
    "error.prompt_too_long_pinned": (
        "系统提示、你的消息和已固定的消息（{pinned:,} 个 token）共需 {tokens:,} 个提示词 token，比上下文"
        "预算 {budget:,} 多 {overflow:,} 个。请取消固定某条消息、缩短你的消息或提高上下文预算；你的文字尚"
        "未发送，已保留。"
    ),
    "error.message_too_long": "这条消息有 {length:,} 个字符，本部署最多接受 {limit:,} 个。请缩短后再发送。",
    "error.address_refused": (
        "{host} 解析到{reason}。对于在此输入的接口地址，本部署只连接公网地址；没有发送任何内容。"
    ),
    "error.unreachable": "无法连接到 {host} 上的服务器（模型“{model}”）。请检查接口地址 {base_url}。",
    "error.stalled": (
        "{host} 在回复模型“{model}”时超过 {seconds:g} 秒没有继续发送；已收到的文字已保留。请重试。"
    ),
    "error.timed_out": (
        "{host} 在 {seconds:g} 秒内没有响应（模型“{model}”）。请重试；较慢或繁忙的服务器可能需要更长的超"
        "时时间。"
    ),
    "error.stream_broken": (
        "模型“{model}”回复时与 {host} 的连接中断；已收到的 {chars:,} 个字符已保留。请重试。"
    ),
    "error.connection_failed": "无法连接到 {host}{cause}——服务器在运行吗？请检查接口地址 {base_url}。",
    "error.auth_failed": (
        "{host} 拒绝了该 API 密钥（HTTP 401，模型“{model}”）。请检查密钥（或 OPENAI_API_KEY）。"
    ),
    "error.permission_denied": (
        "{host} 不允许该 API 密钥使用模型“{model}”（HTTP 403）。请选择该密钥可用的模型，或换用有权限的密钥。"
    ),
    "error.model_not_found": (
        "{host} 不认识模型“{model}”（HTTP 404）。请检查模型名称；接口地址 {base_url} 也可能有误。"
    ),
    "error.bad_request": (
        "{host} 拒绝了模型“{model}”的请求（HTTP {status}）。该服务器或模型可能不支持某个选项。"
    ),
    "error.no_quota": "{host} 正在限制模型“{model}”的请求（HTTP 429）。额度已用完：请检查账户的套餐和账单。",
    "error.rate_limited_wait": "{host} 正在限制模型“{model}”的请求（HTTP 429）。请在 {seconds} 秒后重试。",
    "error.rate_limited_now": "{host} 正在限制模型“{model}”的请求（HTTP 429）。现在可以重试。",
    "error.rate_limited": "{host} 正在限制模型“{model}”的请求（HTTP 429）。请稍等片刻再试。",
    "error.server_error": (
        "{host} 处理模型“{model}”的请求失败（HTTP {status}）。问题出在服务器端；请稍后再试。"
    ),
    "error.overloaded": "{host} 过载（HTTP 529），无法处理模型“{model}”的请求。请稍后再试。",
    "error.http_status": "{host} 对模型“{model}”的请求返回了 HTTP {status}。",
    "error.reply_time_limit": (
        "模型“{model}”（{host}）的回复在 {seconds:g} 秒后仍未结束，已达到单条回复的时间上限；已停止读取，"
        "收到的 {chars:,} 个字符已保留。"
    ),
    "error.reply_too_long": (
        "模型“{model}”（{host}）的回复超过了 {limit:,} 字节，即回复上限所允许的最大值；已停止读取，收到的"
        " {chars:,} 个字符已保留。"
    ),
    "error.empty_reply": "模型返回了空回复（结束原因：{finish_reason}）。",
    "error.empty_reply_length": (
        "模型返回了空回复（结束原因：{finish_reason}）。请提高回复上限：推理模型可能把它全部用于思考。"
    ),
    "error.test_set_too_large": "{file} 超过 {limit:,} 字节。",
    "error.test_set_not_utf8": "{file} 不是 UTF-8 文本。",
    "error.test_set_invalid": "{file} 中没有可用的提示词：{problem}",
    # --- the headline: what the next call sends, and a budget fitted lower than set ---
    "dashboard.next_call.label": "下一次调用发送",
    "dashboard.next_call.of": "占 {budget:,} 预算的 {fraction:.0%}",
    "dashboard.next_call.of_fitted": "占 {budget:,} 的 {fraction:.0%}（设定预算：{setting:,}）",
    "dashboard.next_call.help": (
        "下一次调用大约发送的提示词 token 数：系统提示、裁剪后仍在上下文中的内容、一条常见长度的提问和回"
        "复预置。当前上下文：{used:,}。"
    ),
    "sidebar.budget.fitted": (
        "调用按 {budget:,} 适配，低于设定的 {setting:,}（受服务器上下文窗口或计数安全余量限制）。"
    ),
    "chart.gauge.axis_fitted": "占 {budget:,} token 预算的 token 数（设定：{setting:,}）",
    "compare.saved.link_help": "这是一个对比：在对比页面中打开",
    "compare.answer": "回答 {letter}",
    # 部署者的设置（ConfigError）
    "error.config_number": "设置 {setting} 必须是不小于 0 的数字，而不是“{value}”。",
    "error.config_number_positive": "设置 {setting} 必须是大于 0 的数字，而不是“{value}”。",
    "error.config_whole": "设置 {setting} 必须是不小于 0 的整数，而不是“{value}”。",
    "error.config_whole_positive": "设置 {setting} 必须是不小于 1 的整数，而不是“{value}”。",
    "error.config_range": "设置 {setting} 必须在 {low} 到 {high} 之间，而不是 {value}。",
    "error.config_model_name": "{setting}：“{value}”不是模型名称。",
    "error.config_base_url": "{setting}：“{value}”不是可用的基础 URL（{reason}）。",
    "error.config_host": (
        "{setting}：“{value}”既不是 URL（https://host/path），也不是主机（host 或 host:port）。"
    ),
    "error.config_access_mode": "设置 ACCESS_MODE 必须是 {modes} 之一，而不是“{value}”。",
    "error.config_database_url": (
        "DATABASE_URL（{url}）不是数据库 URL；应为例如 sqlite:////path/to/dashboard.db 或 "
        "postgresql+psycopg://user:password@host/dbname。"
    ),
    "error.config_database_kind": (
        "DATABASE_URL（{url}）指向 {kind} 数据库；只支持 sqlite:/// 和 postgresql+psycopg:// 开头的 URL。"
    ),
    # 本部署自己的速率限制（RateLimitedLocally）
    "error.local_requests_wait": (
        "你的工作区在过去一分钟内已发送 {used:,} 个请求，达到此部署允许的上限。请在 {seconds} 秒后重试。"
    ),
    "error.local_tokens_wait": (
        "你的工作区在过去一分钟内已使用 {used:,} 个 token，达到此部署允许的上限。请在 {seconds} 秒后重试。"
    ),
    "error.deployment_requests_wait": (
        "此部署在过去一分钟内已发送 {used:,} 个请求，达到所有访客合计允许的上限。请在 {seconds} 秒后重试。"
    ),
    "error.deployment_tokens_wait": (
        "此部署在过去一天内已使用 {used:,} 个 token，达到所有访客合计允许的上限。请在 {seconds} 秒后重试。"
    ),
    "error.local_tokens_too_many": (
        "此请求约需 {tokens:,} 个 token，超过此部署每分钟允许的 {limit:,} 个 token。请降低回复上限或上下"
        "文预算。"
    ),
    "error.deployment_tokens_too_many": (
        "此请求约需 {tokens:,} 个 token，超过此部署每天允许的 {limit:,} 个 token。请降低回复上限或上下文"
        "预算。"
    ),
    # 基础 URL 与链接
    "error.base_url_not_chosen": "此部署不允许访客选择基础 URL；清空“基础 URL”一栏即可使用应用自己的连接。",
    "error.base_url_unusable": "基础 URL“{url}”无法使用：{reason}。",
    "error.base_url_not_allowed": "基础 URL“{url}”不在此部署允许的范围内。允许的有：{allowed}。",
    "error.workspace_link_invalid": (
        "此私人链接无效（被截断或改动过）。请打开你收藏的链接，或新建一个工作区。"
    ),
    "error.signin_no_identity": "登录结果没有说明你是谁（缺少签发者或主体）。",
    # 存储
    "error.conversation_not_found": "没有已保存的对话“{id}”。",
    "error.conversation_unreadable": "已保存的对话“{id}”无法读回。",
    "error.comparison_not_found": "没有已保存的对比“{id}”。",
    "error.stale_conversation": (
        "此对话在这里加载之后已在别处（另一个标签页或窗口）保存过（版本 {found}，预期 {expected}）；"
        "本次没有保存任何内容。请重新加载后继续。"
    ),
    "error.title_empty": "标题不能为空。",
    "error.title_too_long": "标题最多 {limit:,} 个字符；这个标题有 {length:,} 个。",
    "error.store_not_open": "无法读取已保存的对话：数据库没有打开。",
    "error.store_bad_url": "“{url}”不是数据库 URL。",
    "error.store_kind": "只支持 SQLite 和 PostgreSQL 数据库，不支持 {kind}。",
    "error.store_url_unusable": "{where} 的数据库 URL 无法使用：{reason}",
    "error.store_driver_missing": "{where} 的数据库驱动没有安装：{driver}。",
    "error.store_busy": "数据库 {where} 正忙：没有及时等到空闲连接。请重试。",
    "error.store_read_only_file": (
        "数据库 {where} 是只读的：可以读取已保存的对话，但无法保存。请检查该文件及其文件夹的权限。"
    ),
    "error.store_read_only": "数据库 {where} 是只读的：可以读取已保存的对话，但无法保存。",
    "error.store_locked": "数据库 {where} 被另一个进程锁定。请稍后再试。",
    "error.store_full": "数据库 {where} 已满（磁盘空间不足，或达到其大小上限）。",
    "error.store_not_sqlite": (
        "{where} 不是可读取的 SQLite 数据库（可能已损坏，或是别的文件）；它未被改动。请把它移开，或让 DAT"
        "ABASE_URL 指向别处。"
    ),
    "error.store_folder": "{where} 是文件夹，不是数据库文件。",
    "error.store_cannot_open": "数据库 {where} 无法使用（{reason}）。请检查其文件夹是否存在且可写。",
    "error.store_unavailable": "数据库 {where} 不可用（{reason}）。",
    "error.store_refused": "数据库 {where} 拒绝了这次更改：{reason}。",
    "error.store_foreign_tables": (
        "数据库 {where} 中有其他应用的表（{tables}）；它未被改动。请为本应用使用单独的数据库。"
    ),
    "error.store_unknown_schema": (
        "数据库 {where} 的结构版本（“{revision}”）不为此版本的应用所知：属于其他应用或更新的版本。它未被"
        "改动。"
    ),
    "error.store_unversioned": "数据库 {where} 中的表没有结构版本；它未被改动。",
    # 部署者对对话设置的限制（Notice）
    "notice.url_characters": "其中含有空格、反斜杠、控制字符或“@”",
    "notice.url_scheme": "必须以 `http://` 或 `https://` 开头",
    "notice.url_query": "基础 URL 不能带查询（?…）或片段（#…）",
    "notice.url_host": "缺少主机名",
    "notice.url_port": "端口不是 0 到 65535 之间的数字",
    "notice.url_dots": "路径中含有“.”或“..”段",
    "notice.limit_model": "此处不提供模型“{model}”；改用“{used}”。",
    "notice.limit_summarizer": "此处不提供摘要模型“{model}”。",
    "notice.limit_reply_cap": "此处回复上限最多为 {limit:,} 个 token。",
    "notice.limit_context_budget": "此处上下文预算最多为 {limit:,} 个 token。",
    # 角色导入报告（core/personas/mapping.py ImportReport：notice.import_<…>）
    "personas.exchange.none_in_source": "（来源中没有）",
    "notice.import_format_lobehub": "LobeHub 助手",
    "notice.import_format_nextchat": "NextChat 面具",
    "notice.import_format_open_webui": "Open WebUI 模型",
    "notice.import_format_librechat": "LibreChat 模型预设（modelSpec）",
    "notice.import_format_card_json": "角色卡 {version}（JSON）",
    "notice.import_format_card_png": "角色卡 {version}（PNG，“{chunk}”块）",
    "notice.import_format_card_charx": "角色卡 {version}（CHARX）",
    "notice.import_format_persona_yaml": "角色 YAML（本应用自己的格式）",
    "notice.import_note_joined": "已合并为一行",
    "notice.import_note_cut": "已截断为 {limit:,} 个字符",
    "notice.import_note_joined_cut": "已合并为一行，并截断为 {limit:,} 个字符",
    "notice.import_note_messages": "{count} 条消息",
    "notice.import_note_filled_in": "已自动填写",
    "notice.import_value_null": "空值（null）",
    "notice.import_value_mapping": "一个映射",
    "notice.import_value_list": "一个列表",
    "notice.import_drop_not_text": "值为 {value}，不是文本",
    "notice.import_drop_not_whole": "值为 {value}，不是整数",
    "notice.import_drop_not_number": "值为 {value}，不是数字",
    "notice.import_drop_not_model": "值为 {value}，不是模型名称",
    "notice.import_drop_not_list": "值为 {value}，不是列表",
    "notice.import_drop_not_emoji": "{value} 不是表情符号",
    "notice.import_drop_not_emoji_code": "{value} 不是表情符号编码；使用默认头像",
    "notice.import_drop_not_one_line": "{value} 不是 1 到 {limit} 个字符的一行文字",
    "notice.import_drop_out_of_range": "{value} 超出了 {field} 的范围 {low} 到 {high}",
    "notice.import_drop_too_many": "一个角色最多容纳 {limit} 项",
    "notice.import_drop_examples": "前 {limit} 条之后的 {count} 条示例消息",
    "notice.import_drop_picture": "图片无法使用（{problem}）；使用表情头像",
    "notice.import_drop_picture_link": "{url} 是图片链接；链接从不获取，因此使用表情头像",
    "notice.import_drop_kept": "角色中没有对应位置；保留以便导出",
    "notice.import_drop_not_sampling": "不是采样选项",
    "notice.import_drop_unknown_setting": "{value} 不是此版本读取的设置",
    "notice.import_drop_invalid": "在角色中无效：{problem}",
    "notice.import_drop_too_large": "太大，无法保留在角色文件中（{problem}）；未保留",
    "notice.import_drop_not_message": "不是带文字的用户或助手消息",
    "notice.import_drop_history_count": (
        "{field} 计算的是消息条数而不是 token，不能作为上下文预算（保留以便导出）"
    ),
    "notice.import_drop_post_history": "不发送：本应用不会在对话历史之后附加内容（保留以便导出）",
    "notice.import_drop_alternate_greetings": "一个角色只有一条开场白，即 first_mes（保留以便导出）",
    "notice.import_drop_group_greetings": "本应用没有群聊（保留以便导出）",
    "notice.import_drop_depth_prompt": "不发送：本应用不会在历史中间插入内容（保留以便导出）",
    "notice.import_drop_outside_data": "在角色卡的 data 之外；未读取",
    "notice.import_drop_asset_missing": "文件中没有 {uri}",
    "notice.import_warn_budget": (
        "系统消息占用 {budget:,} token 预算中的 {tokens:,} 个（{share:.0%}），留给对话的空间很少"
    ),
    "notice.import_warn_example_cut": "第 {number} 条示例已截断为 {limit:,} 个字符",
    "notice.import_warn_no_system_prompt": "来源中没有系统提示词；已设为“{prompt}”",
    "notice.import_warn_lorebook": (
        "由关键词触发的世界书条目：{count} 条。本应用不会触发条目，因此不使用它们（保留以便导出）"
    ),
    "error.persona_file": "{file}：{problems}",
    "error.details.separator": "；",
    # 文件无法导入的原因（ImportProblem -> PersonaFileError：notice.import_<…>）
    "notice.import_what_file": "该文件",
    "notice.import_what_chunk": "其中的“{chunk}”块",
    "notice.import_what_card_json": "其中的 card.json",
    "notice.import_json_too_large": "{what}含有 {size} 的 JSON；最多读取 {limit}",
    "notice.import_json_containers": "{what}有 {count:,} 个 JSON 对象和列表；最多 {limit:,} 个",
    "notice.import_json_too_deep": "{what}的 JSON 嵌套超过 {limit} 层",
    "notice.json_expecting_value": "此处应为一个值",
    "notice.json_expecting_name": "此处应为用双引号括起的属性名",
    "notice.json_expecting_colon": "此处应为冒号“:”",
    "notice.json_expecting_comma": "此处应为逗号“,”",
    "notice.json_unterminated_string": "字符串没有结束",
    "notice.json_control_character": "字符串中有无效的控制字符",
    "notice.json_extra_data": "JSON 结束后还有多余内容",
    "notice.json_bad_escape": "无效的转义（\\）",
    "notice.json_bad_unicode_escape": "无效的 \\uXXXX 转义",
    "notice.import_json_invalid_at": "{what}不是有效的 JSON：第 {line} 行第 {column} 列：{problem}",
    "notice.import_json_invalid": "{what}不是有效的 JSON：{problem}",
    "notice.import_not_utf8": "{what}不是 UTF-8 文本（偏移 {offset} 处的字节 {byte}）",
    "notice.import_prompt_too_long": (
        "系统提示词有 {length:,} 个字符（{theirs}）；一个角色最多容纳 {limit:,} 个，且提示词不会被截断"
    ),
    "notice.import_no_name": "没有名称",
    "notice.import_not_valid": "无法使该角色有效",
    "notice.import_png_no_card": (
        "这个 PNG 中没有角色卡（没有“ccv3”或“chara”文本块）；请在原应用中把角色卡导出为 PNG 卡片"
    ),
    "notice.import_chunk_not_base64": "其中的“{chunk}”块不是有效的 base64",
    "notice.import_charx_not_zip": "不是有效的 .charx（zip）文件",
    "notice.import_charx_entries": "含有 {count:,} 个文件；读取 .charx 时最多 {limit} 个",
    "notice.import_charx_outside": "含有位于压缩包之外的文件“{name}”；已拒绝",
    "notice.import_charx_too_large": "解压后有 {size} MiB；读取 .charx 时最多 {limit} MiB",
    "notice.import_charx_no_card": "这个 zip 的顶层没有 card.json",
    "notice.import_charx_unpack": "其中的 {name} 无法解压（{problem}）",
    "notice.import_charx_entry_too_large": "其中的 {name} 解压后超过 {limit} MiB；已拒绝",
    "notice.import_not_png": "不是 PNG 文件（开头的字节不是 PNG 签名）",
    "notice.import_png_cut_short": "PNG 已损坏：在 IEND 块之前就结束了（文件不完整）",
    "notice.import_png_chunk_past_end": "PNG 已损坏：其中的“{chunk}”块超出了文件末尾",
    "notice.import_png_checksum": "PNG 已损坏：其中的“{chunk}”块校验和不符",
    "notice.import_png_chunks": "这个 PNG 的块多于 {limit:,} 个；已拒绝",
    "notice.import_card_not_object": "不是角色卡：其 JSON 不是对象",
    "notice.import_card_no_data": "是缺少“data”对象的 {spec} 角色卡",
    "notice.import_card_spec": "是规范为“{spec}”的角色卡；只读取 chara_card_v2 和 chara_card_v3",
    "notice.import_not_card": "不是角色卡（没有“spec”，也不是带名称和描述的 V1 角色卡）",
    "notice.import_not_regular": "不是普通文件",
    "notice.import_empty": "是空的",
    "notice.import_unknown_json": (
        "是本应用不认识的 JSON 格式；本应用读取：角色卡（JSON、PNG 或 .charx）、LobeHub 助手、NextChat 面具、"
        "Open WebUI 模型导出、LibreChat modelSpecs（YAML）或角色 YAML 文件"
    ),
    "notice.import_not_yaml": "不是可读取的 YAML：{problem}",
    "notice.import_too_large": "大小为 {size} MiB；导入只读取最多 {limit} MiB 的文件",
    "notice.import_not_librechat": (
        "不是 LibreChat 配置：没有 modelSpecs.list 规格列表（每项需有 label 和 preset）"
    ),
    "notice.import_librechat_no_preset": "LibreChat modelSpecs 列表中有一项没有 preset",
    # 角色文件无法读取的原因（core/personas/persona.py FileProblem：notice.persona_<…>）
    "notice.persona_alias": "第 {line} 行：角色文件中不允许使用 YAML 别名（*{name}）；请把值直接写出来",
    "notice.persona_anchor": (
        "第 {line} 行：角色文件中不允许使用 YAML 锚点和别名（&{name}、*{name}）；请把值直接写出来"
    ),
    "notice.persona_too_many_nodes": (
        "第 {line} 行第 {column} 列：键和值超过 {limit} 个；一个角色用不了这么多"
    ),
    "notice.persona_too_deep": "第 {line} 行第 {column} 列：嵌套超过 {limit} 层",
    "notice.persona_merge_key": (
        "第 {line} 行：角色文件中不允许使用 YAML 合并键（<<）；请把键逐一写出（若本意是文字，请给“<<”加引号）"
    ),
    "notice.persona_tag": (
        "第 {line} 行：不允许使用 YAML 标签 {tag}；角色文件只能包含普通文本、数字、列表和映射"
    ),
    "notice.persona_long_number": "第 {line} 行：{length} 个字符的数字太长（若本意是文字，请加引号）",
    "notice.persona_duplicate_key": "第 {line} 行：键“{key}”出现了两次",
    "notice.persona_yaml_character": "第 {line} 行第 {column} 列：YAML 中不允许字符 {character}",
    "notice.persona_yaml_syntax": "第 {line} 行第 {column} 列：YAML 语法错误：{problem}{context}",
    "notice.persona_yaml_error": "第 {line} 行第 {column} 列：{problem}{context}",
    "notice.persona_yaml_context": "（{context}，始于第 {line} 行第 {column} 列）",
    "notice.persona_yaml_other": "YAML 错误：{problem}",
    "notice.persona_second_document": (
        "第 {line} 行：这里开始了第二个 YAML 文档；一个角色文件只能有一个（请删除“---”分隔符）"
    ),
    "notice.persona_value_unreadable": "有一个值无法按 YAML 读取：{problem}",
    "notice.persona_broken_symlink": "是失效的符号链接（目标不存在）",
    "notice.persona_symlink_outside": "是指向角色文件夹之外 {target} 的符号链接；已拒绝",
    "notice.persona_unreadable": "无法读取：{problem}",
    "notice.persona_is_folder": "是文件夹，不是普通文件",
    "notice.persona_is_special": "是特殊文件，不是普通文件",
    "notice.persona_not_regular": "不是普通文件",
    "notice.persona_too_large": "大小为 {size}；角色文件最多 {limit} KiB",
    "notice.persona_not_utf8": "不是 UTF-8 文本：第 {line} 行第 {column} 列的字节 {byte}；请把文件存为 UTF-8",
    "notice.persona_bad_file_name": (
        "文件名必须能作为有效的角色 ID（{id} 不行）：只能使用字母、数字、“_”和“-”，例如 travel-planner"
    ),
    "notice.persona_bad_id": (
        "ID 必须是有效的角色 ID（{id} 不行）：只能使用字母、数字、“_”和“-”，例如 travel-planner"
    ),
    "notice.persona_empty": "是空的；一个角色至少需要 name、avatar、description 和 system_prompt",
    "notice.persona_not_mapping": "顶层必须是角色字段的映射（name: ...、avatar: ...），而不是 {value}",
    "notice.persona_folder_missing": "角色文件夹不存在",
    "notice.persona_folder_not_folder": "不是文件夹；PERSONAS_DIR 必须指向一个文件夹",
    "notice.persona_folder_unreadable": "无法读取角色文件夹：{problem}",
    "notice.persona_id_taken": "ID“{id}”已被 {other} 占用；请重命名或删除这两个文件之一",
    # 校验错误（core/validation.py problem_notices：notice.validation_<…>）
    "notice.validation_line": "第 {line} 行：{problem}",
    "notice.validation_top_level": "顶层",
    "notice.validation_unknown": "未知字段“{name}”{where}{hint}{suggestion}{allowed}",
    "notice.validation_in": "（位于 {parent}）",
    "notice.validation_hint": "：{hint}",
    "notice.validation_did_you_mean": "（是不是想写“{name}”？）",
    "notice.validation_allowed": "；允许的字段：{fields}",
    "notice.validation_missing": "缺少必填字段“{path}”",
    "notice.validation_invalid_key": "键 {key}{where} 不是字段名（键必须是文本）",
    "notice.validation_own": "{path}：{problem}",
    "notice.validation_field": "{path}：{problem}（实际为 {value}）",
    "notice.validation_more_one": "另有 1 个问题",
    "notice.validation_more": "另有 {count} 个问题",
    "notice.validation_one_line": "只能是一行（不能换行）",
    "notice.validation_emoji": "必须是一个表情符号，例如 🍜（只能一个），而不是 {value}",
    "notice.validation_avatar_image": "头像图片无法使用（{problem}）",
    "notice.validation_extensions_too_large": "以 JSON 计占 {size} KiB；扩展字段最多 {limit} KiB",
    "notice.persona_id_hint": "ID 就是文件名（{id}），请删除这一行",
    "notice.pydantic_string_type": "应为文本",
    "notice.pydantic_int_type": "应为整数",
    "notice.pydantic_float_type": "应为数字",
    "notice.pydantic_list_type": "应为列表",
    "notice.pydantic_dict_type": "应为映射",
    "notice.pydantic_bool_type": "应为布尔值（true 或 false）",
    "notice.pydantic_model_type": "应为映射（{class_name}）",
    "notice.pydantic_int_from_float": "应为整数，而这是带小数的数",
    "notice.pydantic_finite_number": "应为有限的数字",
    "notice.pydantic_literal_error": "应为 {expected}",
    "notice.pydantic_string_pattern_mismatch": "应符合模式“{pattern}”",
    "notice.pydantic_string_too_short": "至少需要 {min_length} 个字符",
    "notice.pydantic_string_too_short_one": "至少需要 {min_length} 个字符",
    "notice.pydantic_string_too_long": "最多 {max_length} 个字符",
    "notice.pydantic_string_too_long_one": "最多 {max_length} 个字符",
    "notice.pydantic_too_short": "至少需要 {min_length} 项，实际 {actual_length} 项",
    "notice.pydantic_too_short_one": "至少需要 {min_length} 项，实际 {actual_length} 项",
    "notice.pydantic_too_long": "最多 {max_length} 项，实际 {actual_length} 项",
    "notice.pydantic_too_long_one": "最多 {max_length} 项，实际 {actual_length} 项",
    "notice.pydantic_greater_than_equal": "应不小于 {ge}",
    "notice.pydantic_less_than_equal": "应不大于 {le}",
    "notice.pydantic_greater_than": "应大于 {gt}",
    "notice.pydantic_less_than": "应小于 {lt}",
    "error.invalid_settings": "设置无效：{problems}",
    "notice.test_set_not_a_list": "应为提示词列表",
    # 未导入的对话文件（core/chat/conversation.py not_imported）
    "error.conversation_import": "无法导入对话：{problem}",
    "notice.conversation_file_too_large": "文件大于 {limit:,} 字节。",
    "notice.conversation_too_large": "文件有 {size:,} 字节；超过 {limit:,} 字节的对话不会导入。",
    "notice.conversation_not_export": "这不是对话导出文件：{problems}。",
    "notice.conversation_not_utf8": "文件不是 UTF-8 文本。",
    "notice.conversation_json_at": "文件不是有效的 JSON（第 {line} 行第 {column} 列：{problem}）。",
    "notice.conversation_too_deep": "文件的 JSON 嵌套太深。",
    "notice.conversation_huge_number": "文件中有一个几千位的数字；任何对话都不会有这样的数字。",
    "notice.conversation_not_json": "文件不是有效的 JSON。",
    "notice.conversation_surrogate": (
        "{where} 中有单独的代理字符（未配对的 \\ud800-\\udfff 转义），不是文本。"
    ),
    "notice.conversation_surrogate_key": "{where} 中有一个字段名含单独的代理字符，不是文本。",
    "notice.conversation_big_integer": "{where} 中的整数超过 64 位，任何计数或设置都不会这么大。",
    "notice.conversation_not_finite": "{where} 中的 {value} 不是有限的数字。",
    "notice.conversation_first_not_system": "第一条消息必须是系统提示词，并且在上下文中。",
    "notice.conversation_second_system": "只有第一条消息可以是系统提示词。",
    "notice.conversation_duplicate_id": "有两条消息使用同一个 ID；每条消息都需要自己的 ID。",
    "notice.conversation_not_alternating": (
        "第 {position} 条消息是上下文中的 {role} 消息，而此处应为 {expected} 消息；上下文中的消息必须在用"
        "户和助手之间交替。"
    ),
    "notice.conversation_trim_unknown": "第 {turn} 轮的裁剪记录指向不存在的消息。",
    "notice.conversation_trim_turn": "有一条裁剪记录指向第 {turn} 轮，但对话只有 {turns} 轮。",
    "notice.conversation_turn_number": "第 {position} 轮的编号是 {number}；各轮必须依次编号为 1、2、3……",
    "notice.conversation_turn_sent": "第 {position} 轮声称发送了 {count} 条消息，多于对话中的消息数。",
    "notice.conversation_turn_reply": "第 {position} 轮指向的回复 {id} 不是此对话中的回答。",
    "notice.conversation_turn_same_reply": "第 {position} 轮与之前的一轮指向同一条回复。",
    "notice.conversation_summary_unknown": "有一个摘要版本指向不存在的消息。",
    "notice.conversation_summary_event_unknown": "第 {turn} 轮的摘要记录指向不存在的消息。",
    "error.summary_too_long": "摘要无法缩减到 {limit} 个 token 以内。",
    "error.summary_empty": "摘要模型返回了空摘要。",
    "error.no_api_key": (
        "没有 API 密钥：请输入密钥或设置 OPENAI_API_KEY。不需要密钥的本地服务器（Ollama、LM Studio 等）"
        "接受任意占位值，例如 `local`。"
    ),
    "error.no_anthropic_key": "没有 API 密钥：请输入你的 Anthropic 密钥（`sk-ant-...`）。",
    # 图片不能作头像的原因（core/personas/avatars.py AvatarImageError：notice.avatar_<…>）
    "notice.avatar_too_many_pixels": "图片为 {width}×{height} 像素；最多读取 {limit} 百万像素",
    "notice.avatar_damaged": "图片数据已损坏（{problem}）",
    "notice.avatar_does_not_fit": "即使缩到 {side} 像素，图片仍超出头像大小上限",
    "notice.avatar_too_large": "大小为 {size} KiB；头像图片最多 {limit} KiB",
    "notice.avatar_not_png": "必须是 PNG 图片",
    "notice.avatar_too_wide": "为 {width}×{height} 像素；每边最多 {limit} 像素",
    "notice.avatar_png_damaged": "PNG 数据已损坏（{problem}）",
    "notice.avatar_not_base64": "不是有效的 base64",
    "notice.avatar_not_data_url": "不是以 data:image/ 开头的 URL；远程图片从不获取",
    "notice.avatar_data_url_not_base64": "是未使用 base64 的数据 URL",
    "notice.avatar_data_url_too_large": "是大于 {limit} MiB 的数据 URL",
    "notice.avatar_data_url_bad_base64": "是 base64 无效的数据 URL",
    "notice.avatar_not_image": "不是 PNG、JPEG、WebP 或 GIF 图片",
    "notice.avatar_bomb": "声明的像素过多（{problem}）",
    "error.empty_message": "空消息无法发送。",
    "error.columns_replying": "各列仍在回复：请先停止或等待它们完成。",
    "error.column_replying": "第 {letter} 列仍在回复。",
    "error.column_nothing_to_retry": "第 {letter} 列没有可重新提问的失败回答。",
    "error.nothing_asked": "还没有提出任何问题。",
    "error.pick_after_all_finished": "请等所有列都完成后再选择回答。",
    "error.already_picked": "这条消息的回答已经选过了。",
    "error.column_no_answer": "第 {letter} 列没有这条消息的回答可选。",
    "error.wait_for_columns": "请等待每一列都完成回复。",
    "error.nothing_to_regenerate": "没有可重新生成的回答。",
    "error.no_summary_yet": "还没有可编辑的摘要。",
    "error.summary_empty_edit": "摘要不能为空。",
    "error.test_set_running": "已有一个测试集在运行：请取消或等待它完成。",
    "error.no_comparison": "当前没有打开的对比。",
    "error.nothing_to_resend": "没有可重新发送的未回答消息。",
    "error.nothing_to_continue": "上一条回复既没有被回复上限截断，也没有中断。",
    "error.run_no_prompt": "这次运行没有第 {number} 个提示词。",
    "error.run_no_answer": "第 {column} 列没有第 {number} 个提示词的回答。",
}
