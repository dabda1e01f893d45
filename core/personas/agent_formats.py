"""Assistant presets of chat apps, mapped to personas: LobeHub agents (import and export), NextChat
masks, Open WebUI model exports and LibreChat `modelSpecs` (import).

Each reader takes the parsed file and returns one `ImportedPersona` per preset in it (a NextChat or
Open WebUI export may hold a list; a LibreChat config holds several specs). Fields a persona has no
place for are kept under `extensions.<format>`; for LobeHub, the export puts them back, and the
persona's own settings a LobeHub agent cannot hold travel in its `persona_dashboard` object.
"""

from __future__ import annotations

import json
from typing import Any, Final

from core.notices import Notice
from core.personas.mapping import (
    ImportedPersona,
    ImportProblem,
    PersonaBuilder,
    dashboard_block,
    persona_id_from,
)
from core.personas.persona import Persona

__all__ = [
    "import_librechat",
    "import_lobehub",
    "import_nextchat",
    "import_open_webui",
    "is_lobehub",
    "is_nextchat",
    "is_open_webui",
    "lobehub_agent",
]

LOBEHUB: Final = "lobehub"
NEXTCHAT: Final = "nextchat"
OPEN_WEBUI: Final = "open_webui"
LIBRECHAT: Final = "librechat"
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _named(parent: dict[str, Any], key: str, text_key: str) -> Any:
    """A list of texts that may be objects holding the text under `text_key` (Open WebUI's tags
    and suggestions), as the texts; anything else as it is (the builder says why it is dropped)."""
    items = parent.get(key)
    if not isinstance(items, list):
        return items
    return [item.get(text_key) if isinstance(item, dict) else item for item in items]


def _built(
    builder: PersonaBuilder,
    format_key: str,
    source: dict[str, Any],
    file_name: str,
    *id_candidates: Any,
    reasons: dict[str, Notice] | None = None,
) -> ImportedPersona:
    """The persona, with what it did not read kept under `extensions[format_key]` and its id from
    the first usable candidate (else the file's name)."""
    builder.keep_unread(format_key, source, reasons=reasons)
    return builder.build(persona_id_from(*id_candidates, file_name.rsplit(".", 1)[0]))


def _sampling(builder: PersonaBuilder, params: Any, prefix: str, keys: tuple[str, ...] = _SAMPLING) -> None:
    if isinstance(params, dict):
        for key in keys:
            builder.sample(key, f"{prefix}.{key}", params.get(key))


# --- LobeHub ---------------------------------------------------------------------------------

#: What a LobeHub agent has no field for: it travels in the agent's `persona_dashboard` object.
_LOBEHUB_BLOCK_KEYS = ("context_budget", "context_policy", "summarizer_model", "sampling", "extensions")


def is_lobehub(value: Any) -> bool:
    """A LobeHub agent (the marketplace's file), or the app's export of its agents."""
    return bool(_lobehub_agents(value))


def _lobehub_agents(value: Any) -> list[dict[str, Any]]:
    """The agents of a file: itself, or the sessions of LobeChat's config export (exportType
    "agents" or "sessions": `state.sessions[]`, each with `meta` and `config`)."""

    def is_agent(item: Any) -> bool:
        return (
            isinstance(item, dict)
            and isinstance(item.get("meta"), dict)
            and isinstance(item.get("config"), dict)
        )

    if is_agent(value):
        return [value]
    state = value.get("state") if isinstance(value, dict) and "exportType" in value else None
    sessions = state.get("sessions") if isinstance(state, dict) else None
    return [item for item in sessions if is_agent(item)] if isinstance(sessions, list) else []


def import_lobehub(file_name: str, value: Any, *, user_name: str) -> list[ImportedPersona]:
    return [_import_lobehub_agent(file_name, agent, user_name=user_name) for agent in _lobehub_agents(value)]


def _import_lobehub_agent(file_name: str, agent: dict[str, Any], *, user_name: str) -> ImportedPersona:
    builder = PersonaBuilder(file_name, Notice(code="import_format_lobehub"), user_name=user_name)
    meta, config = agent["meta"], agent["config"]
    block = dict(agent["persona_dashboard"]) if isinstance(agent.get("persona_dashboard"), dict) else {}
    builder.text("name", "meta.title", meta.get("title"))
    avatar = meta.get("avatar")
    if not builder.emoji("meta.avatar", avatar):
        builder.image_url("meta.avatar", avatar)
    if "avatar" in block:
        builder.emoji("persona_dashboard.avatar", block.pop("avatar"))
    builder.text("description", "meta.description", meta.get("description"))
    builder.text_list("tags", "meta.tags", meta.get("tags"))
    builder.text("system_prompt", "config.systemRole", config.get("systemRole"))
    builder.model("config.model", config.get("model"))
    params = config.get("params")
    _sampling(builder, params, "config.params")
    if isinstance(params, dict):
        builder.integer("max_reply_tokens", "config.params.max_tokens", params.get("max_tokens"))
    builder.text("greeting", "config.openingMessage", config.get("openingMessage"))
    builder.text_list("starter_prompts", "config.openingQuestions", config.get("openingQuestions"), most=6)
    examples = agent.get("examples")
    if isinstance(examples, list):
        builder.examples("examples", _role_messages(builder, examples, "examples"))
    builder.settings_block("persona_dashboard", block)
    builder.read("schemaVersion", "identifier", "examples")
    chat_config = config.get("chatConfig")
    reasons = {}
    if isinstance(chat_config, dict) and "historyCount" in chat_config:
        reasons["config"] = Notice(
            code="import_drop_history_count", fields={"field": "chatConfig.historyCount"}
        )
    return _built(
        builder, LOBEHUB, agent, file_name, agent.get("identifier"), meta.get("title"), reasons=reasons
    )


def lobehub_agent(persona: Persona) -> dict[str, Any]:
    """The persona as a LobeHub agent file; the fields LobeHub has no place for in `persona_dashboard`."""
    kept: dict[str, Any] = json.loads(json.dumps(persona.extensions.get(LOBEHUB) or {}))
    params: dict[str, Any] = {
        key: value for key, value in persona.sampling.model_dump(exclude_none=True).items() if key != "seed"
    }
    params["max_tokens"] = persona.max_reply_tokens
    block = dashboard_block(persona, keys=_LOBEHUB_BLOCK_KEYS, skip=LOBEHUB)
    if "sampling" in block:
        block["sampling"] = {k: v for k, v in block["sampling"].items() if k == "seed"} or None
        if block["sampling"] is None:
            del block["sampling"]
    if persona.avatar_image:
        block["avatar"] = persona.avatar
    agent: dict[str, Any] = {
        "schemaVersion": 1,
        "identifier": persona.id,
        "meta": {
            "title": persona.name,
            "avatar": f"data:image/png;base64,{persona.avatar_image}"
            if persona.avatar_image
            else persona.avatar,
            "description": persona.description,
            "tags": list(persona.tags),
        },
        "config": {
            "systemRole": persona.system_prompt,
            "model": persona.model,
            "params": params,
            "openingMessage": persona.greeting,
            "openingQuestions": list(persona.starter_prompts),
        },
        "examples": [example.model_dump() for example in persona.examples],
        "persona_dashboard": block,
    }
    return _merged(agent, kept)


def _merged(generated: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """`generated` with the kept fields put back where it has nothing of its own."""
    for key, value in kept.items():
        if isinstance(value, dict) and isinstance(generated.get(key), dict):
            _merged(generated[key], value)
        elif generated.get(key) in (None, "", [], {}):
            generated[key] = value
    return generated


def _role_messages(builder: PersonaBuilder, messages: list[Any], where: str) -> list[tuple[str, str]]:
    """{role, content} messages as examples; system messages and odd items are dropped with why."""
    pairs: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role in ("user", "assistant") and isinstance(content, str):
            pairs.append((role, content))
        elif role != "system":
            builder.drop(f"{where}[{index}]", Notice(code="import_drop_not_message"))
    return pairs


# --- NextChat --------------------------------------------------------------------------------


def is_nextchat(value: Any) -> bool:
    return all(
        isinstance(item, dict) and isinstance(item.get("context"), list) and "name" in item
        for item in _items(value)
    ) and bool(_items(value))


def import_nextchat(file_name: str, masks: Any, *, user_name: str) -> list[ImportedPersona]:
    results = []
    for mask in _items(masks):
        builder = PersonaBuilder(file_name, Notice(code="import_format_nextchat"), user_name=user_name)
        builder.text("name", "name", mask.get("name"))
        avatar = mask.get("avatar")
        if isinstance(avatar, str) and avatar and not builder.emoji("avatar", _emoji_from_code(avatar)):
            builder.drop("avatar", Notice(code="import_drop_not_emoji_code", fields={"value": repr(avatar)}))
        context = mask["context"]
        system = [
            m["content"]
            for m in context
            if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str)
        ]
        if system:
            builder.text("system_prompt", "context[] (system messages)", "\n\n".join(system))
        builder.examples(
            "context[] (user and assistant messages)", _role_messages(builder, context, "context")
        )
        config = mask.get("modelConfig")
        if isinstance(config, dict):
            builder.model("modelConfig.model", config.get("model"))
            _sampling(builder, config, "modelConfig")
            builder.integer("max_reply_tokens", "modelConfig.max_tokens", config.get("max_tokens"))
        builder.read("avatar", "context")
        reasons = {}
        if isinstance(config, dict) and "historyMessageCount" in config:
            reasons["modelConfig"] = Notice(
                code="import_drop_history_count", fields={"field": "historyMessageCount"}
            )
        results.append(_built(builder, NEXTCHAT, mask, file_name, mask.get("name"), reasons=reasons))
    return results


def _emoji_from_code(code: str) -> str:
    """NextChat stores an emoji as its code points in hex ("1f638", "1f468-200d-1f373")."""
    try:
        return "".join(chr(int(part, 16)) for part in code.split("-"))
    except (ValueError, OverflowError):
        return code


# --- Open WebUI ------------------------------------------------------------------------------


def is_open_webui(value: Any) -> bool:
    return bool(_items(value)) and all(
        isinstance(item, dict)
        and "name" in item
        and ("base_model_id" in item or isinstance(item.get("params"), dict))
        for item in _items(value)
    )


def import_open_webui(file_name: str, models: Any, *, user_name: str) -> list[ImportedPersona]:
    results = []
    for model in _items(models):
        builder = PersonaBuilder(file_name, Notice(code="import_format_open_webui"), user_name=user_name)
        builder.text("name", "name", model.get("name"))
        meta = model.get("meta") if isinstance(model.get("meta"), dict) else {}
        params = model.get("params") if isinstance(model.get("params"), dict) else {}
        builder.text("description", "meta.description", meta.get("description"))
        builder.image_url("meta.profile_image_url", meta.get("profile_image_url"))
        builder.text("system_prompt", "params.system", params.get("system"))
        base = model.get("base_model_id")
        builder.model("base_model_id" if base else "id", base or model.get("id"))
        _sampling(builder, params, "params", (*_SAMPLING, "seed"))
        builder.integer("max_reply_tokens", "params.max_tokens", params.get("max_tokens"))
        builder.integer("context_budget", "params.num_ctx", params.get("num_ctx"))
        builder.text_list(
            "starter_prompts",
            "meta.suggestion_prompts",
            _named(meta, "suggestion_prompts", "content"),
            most=6,
        )
        builder.text_list("tags", "meta.tags", _named(meta, "tags", "name"))
        builder.read("id", "base_model_id")
        results.append(_built(builder, OPEN_WEBUI, model, file_name, model.get("id"), model.get("name")))
    return results


# --- LibreChat -------------------------------------------------------------------------------


def librechat_specs(config: Any) -> list[dict[str, Any]]:
    """The specs of a librechat.yaml (or of its `modelSpecs` block, or a bare list of specs)."""
    if isinstance(config, dict) and isinstance(config.get("modelSpecs"), dict):
        config = config["modelSpecs"]
    if isinstance(config, dict) and isinstance(config.get("list"), list):
        config = config["list"]
    if isinstance(config, dict) and isinstance(config.get("preset"), dict):
        config = [config]
    if not isinstance(config, list) or not config:
        raise ImportProblem(Notice(code="import_not_librechat"))
    specs = [spec for spec in config if isinstance(spec, dict) and isinstance(spec.get("preset"), dict)]
    if len(specs) != len(config):
        raise ImportProblem(Notice(code="import_librechat_no_preset"))
    return specs


def import_librechat(file_name: str, config: Any, *, user_name: str) -> list[ImportedPersona]:
    results = []
    for spec in librechat_specs(config):
        builder = PersonaBuilder(file_name, Notice(code="import_format_librechat"), user_name=user_name)
        preset = spec["preset"]
        builder.text("name", "label", spec.get("label") or spec.get("name"))
        builder.text("description", "description", spec.get("description"))
        builder.image_url("iconURL", spec.get("iconURL"))
        builder.text("system_prompt", "preset.promptPrefix", preset.get("promptPrefix"))
        builder.model("preset.model", preset.get("model"))
        _sampling(builder, preset, "preset")
        builder.integer("context_budget", "preset.maxContextTokens", preset.get("maxContextTokens"))
        for key in ("max_tokens", "maxOutputTokens"):
            builder.integer("max_reply_tokens", f"preset.{key}", preset.get(key))
        greeting_key = "greeting" if spec.get("greeting") else "preset.greeting"
        builder.read("greeting", "preset.greeting", "preset.examples")
        builder.text("greeting", greeting_key, spec.get("greeting") or preset.get("greeting"))
        group = spec.get("group")
        if isinstance(group, str) and group:
            builder.text_list("tags", "group", [group])
        examples = preset.get("examples")
        if isinstance(examples, list):
            pairs: list[tuple[str, str]] = []
            for example in examples:
                for role, side in (("user", "input"), ("assistant", "output")):
                    part = example.get(side) if isinstance(example, dict) else None
                    if isinstance(part, dict) and isinstance(part.get("content"), str):
                        pairs.append((role, part["content"]))
            builder.examples("preset.examples", pairs)
        results.append(_built(builder, LIBRECHAT, spec, file_name, spec.get("name"), spec.get("label")))
    return results
