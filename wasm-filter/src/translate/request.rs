//! Request bodies: OpenAI Chat Completions ↔ Anthropic Messages.

use serde_json::{Map, Value, json};

use super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

// =============================================================================================
// OpenAI → Anthropic

/// Translates a `/v1/chat/completions` body into a `/v1/messages` body for `upstream_model`.
///
/// - `system` / `developer` messages (wherever they are) → top-level `system`, in order;
/// - user content parts: `text`; `image_url` (a `data:` URL → a base64 image, http(s) → a URL
///   image); `file` with PDF `file_data` → a base64 document;
/// - assistant `tool_calls` → `tool_use` blocks; `tool` messages → `tool_result` blocks in a
///   user turn (placed before any other content of that turn, as Anthropic requires);
/// - consecutive turns of the same role are merged (Anthropic requires alternation); empty
///   text is dropped (Anthropic rejects empty text blocks);
/// - `max_completion_tokens`, else `max_tokens`, else `default_max_tokens` → `max_tokens`;
/// - `temperature` (0–1 only), `top_p`, `top_k`, `stop` → `stop_sequences`, `stream`, `tools`,
///   `tool_choice`, `parallel_tool_calls: false` → `disable_parallel_tool_use`, `user` →
///   `metadata.user_id`.
///
/// Refused: `n` > 1, `logprobs`, `top_logprobs`, a non-empty `logit_bias`, a non-text
/// `response_format`, audio, the legacy `functions` API, `web_search_options`, non-function
/// tools, and content parts Anthropic has no equivalent for. Everything else (penalties,
/// `seed`, `store`, `service_tier`, `reasoning_effort`, …) is dropped.
pub fn openai_to_anthropic_request(
    body: &Value,
    upstream_model: &str,
    default_max_tokens: u32,
) -> Result<Value> {
    let o = body.as_object().ok_or(TranslateError::NotAnObject)?;
    reject_openai_only(o)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(upstream_model));
    let (system, messages) = openai_messages(o.get("messages"))?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), messages);

    let max_tokens = match positive_int(o, "max_completion_tokens")? {
        Some(n) => n,
        None => positive_int(o, "max_tokens")?.unwrap_or(u64::from(default_max_tokens)),
    };
    out.insert("max_tokens".into(), json!(max_tokens));

    if let Some(t) = number(o, "temperature")? {
        if t.as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(TranslateError::unsupported(
                "temperature",
                "this model accepts a temperature between 0 and 1.",
            ));
        }
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = number(o, "top_p")? {
        out.insert("top_p".into(), p.clone());
    }
    // Not OpenAI, but OpenAI-compatible servers (vLLM) accept it and Anthropic has it.
    if let Some(k) = positive_int(o, "top_k")? {
        out.insert("top_k".into(), json!(k));
    }
    if let Some(stop) = openai_stop(o.get("stop"))? {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(stream) = boolean(o, "stream")? {
        out.insert("stream".into(), json!(stream));
    }
    match o.get("user") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) => {
            out.insert("metadata".into(), json!({ "user_id": u }));
        }
        Some(_) => return Err(TranslateError::invalid("user", "expected a string.")),
    }
    openai_tools(o, &mut out)?;
    Ok(Value::Object(out))
}

/// Refuses the OpenAI features whose absence would change the answer.
fn reject_openai_only(o: &Map<String, Value>) -> Result<()> {
    let present = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
    match o.get("n") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_u64() {
            Some(1) => {}
            Some(n) if n > 1 => {
                return Err(TranslateError::unsupported(
                    "n",
                    "only one choice can be generated; leave 'n' out or set it to 1.",
                ));
            }
            _ => return Err(TranslateError::invalid("n", "expected a positive integer.")),
        },
    }
    if o.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "log probabilities are not available.",
        ));
    }
    if present("top_logprobs") {
        return Err(TranslateError::unsupported(
            "top_logprobs",
            "log probabilities are not available.",
        ));
    }
    if o.get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(TranslateError::unsupported(
            "logit_bias",
            "token biases are not available.",
        ));
    }
    if let Some(rf) = o.get("response_format").filter(|v| !v.is_null())
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(TranslateError::unsupported(
            "response_format",
            "structured output (json_object, json_schema) is not available; describe the format in the prompt or use a tool.",
        ));
    }
    if present("audio") {
        return Err(TranslateError::unsupported(
            "audio",
            "audio output is not available.",
        ));
    }
    if let Some(m) = o.get("modalities").and_then(Value::as_array)
        && m.iter().any(|x| x.as_str() != Some("text"))
    {
        return Err(TranslateError::unsupported(
            "modalities",
            "only text output is available.",
        ));
    }
    for legacy in ["functions", "function_call"] {
        if present(legacy) {
            return Err(TranslateError::unsupported(
                legacy,
                "the legacy functions API is not translated; use 'tools' and 'tool_choice'.",
            ));
        }
    }
    if present("web_search_options") {
        return Err(TranslateError::unsupported(
            "web_search_options",
            "web search is not available.",
        ));
    }
    Ok(())
}

/// One Anthropic turn being built.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// `(system, messages)`.
fn openai_messages(messages: Option<&Value>) -> Result<(Option<Value>, Value)> {
    let messages = match messages {
        None | Some(Value::Null) => return Err(TranslateError::Missing("messages".into())),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(TranslateError::invalid(
                "messages",
                "expected an array of messages.",
            ));
        }
    };
    if messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "expected at least one message.",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| TranslateError::invalid(&path, "expected an object."))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None | Some(Value::Null) => {
                return Err(TranslateError::Missing(format!("{path}.role")));
            }
            Some(_) => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    "expected a string.",
                ));
            }
        };
        match role {
            "system" | "developer" => {
                system.extend(openai_text_only(m.get("content"), &path)?);
            }
            "user" => push_turn(
                &mut turns,
                "user",
                openai_user_blocks(m.get("content"), &path)?,
            ),
            "assistant" => push_turn(&mut turns, "assistant", openai_assistant_blocks(m, &path)?),
            "tool" => push_turn(&mut turns, "user", vec![openai_tool_result(m, &path)?]),
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("{path}.role"),
                    "the legacy functions API is not translated; use 'tools' and 'tool' messages.",
                ));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!(
                        "unknown role '{other}' (expected system, developer, user, assistant or tool)."
                    ),
                ));
            }
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "at least one user or assistant message with content is required.",
        ));
    }
    let system = match system.len() {
        0 => None,
        1 => system.pop().map(Value::String),
        _ => Some(Value::Array(
            system
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )),
    };
    let messages = turns
        .into_iter()
        .map(|mut t| {
            if t.role == "user" {
                // tool_result blocks must open the user turn that follows a tool_use turn.
                let (mut first, rest): (Vec<Value>, Vec<Value>) = t
                    .blocks
                    .into_iter()
                    .partition(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
                first.extend(rest);
                t.blocks = first;
            }
            let content = match t.blocks.as_slice() {
                [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
                    only.get("text").cloned().unwrap_or_default()
                }
                _ => Value::Array(t.blocks),
            };
            json!({"role": t.role, "content": content})
        })
        .collect();
    Ok((system, Value::Array(messages)))
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// The texts of a content that may only hold text (system, developer and tool messages).
fn openai_text_only(content: Option<&Value>, path: &str) -> Result<Vec<String>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(if is_blank(s) {
            Vec::new()
        } else {
            vec![s.clone()]
        }),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                match part_type(p, &ppath)? {
                    "text" => {
                        let t = part_text(p, &ppath)?;
                        if !is_blank(t) {
                            out.push(t.to_owned());
                        }
                    }
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{ppath}.type"),
                            format!("'{other}' parts are not allowed here, only 'text'."),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(
            format!("{path}.content"),
            "expected a string or an array of content parts.",
        )),
    }
}

fn part_type<'a>(p: &'a Value, path: &str) -> Result<&'a str> {
    if !p.is_object() {
        return Err(TranslateError::invalid(path, "expected an object."));
    }
    match p.get("type") {
        Some(Value::String(t)) => Ok(t),
        _ => Err(TranslateError::Missing(format!("{path}.type"))),
    }
}

fn part_text<'a>(p: &'a Value, path: &str) -> Result<&'a str> {
    match p.get("text") {
        Some(Value::String(t)) => Ok(t),
        None | Some(Value::Null) => Err(TranslateError::Missing(format!("{path}.text"))),
        Some(_) => Err(TranslateError::invalid(
            format!("{path}.text"),
            "expected a string.",
        )),
    }
}

fn text_block(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

fn openai_user_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if is_blank(s) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "expected a string or an array of content parts.",
            ));
        }
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let ppath = format!("{path}.content[{j}]");
        match part_type(p, &ppath)? {
            "text" => {
                let t = part_text(p, &ppath)?;
                if !is_blank(t) {
                    out.push(text_block(t));
                }
            }
            "image_url" => out.push(openai_image(p, &ppath)?),
            "file" => out.push(openai_file(p, &ppath)?),
            "input_audio" => {
                return Err(TranslateError::unsupported(
                    format!("{ppath}.type"),
                    "audio input is not available.",
                ));
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{ppath}.type"),
                    format!("'{other}' content parts are not available."),
                ));
            }
        }
    }
    Ok(out)
}

/// A `data:` URL's `(media type, base64 payload)`.
fn parse_data_url<'a>(url: &'a str, path: &str) -> Result<(&'a str, &'a str)> {
    let rest = url.strip_prefix("data:").unwrap_or(url);
    let (meta, data) = rest.split_once(',').ok_or_else(|| {
        TranslateError::invalid(path, "a data: URL needs a ',' before its payload.")
    })?;
    let mut params = meta.split(';');
    let media_type = params.next().unwrap_or_default();
    if !params.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err(TranslateError::unsupported(
            path,
            "only base64 data: URLs are accepted.",
        ));
    }
    if media_type.is_empty() {
        return Err(TranslateError::invalid(
            path,
            "the data: URL has no media type.",
        ));
    }
    Ok((media_type, data))
}

fn openai_image(p: &Value, path: &str) -> Result<Value> {
    // The API takes {"image_url": {"url": …}}; some clients send the URL string directly.
    let (url, upath) = match p.get("image_url") {
        Some(Value::String(u)) => (u.as_str(), format!("{path}.image_url")),
        Some(Value::Object(o)) => match o.get("url") {
            Some(Value::String(u)) => (u.as_str(), format!("{path}.image_url.url")),
            _ => return Err(TranslateError::Missing(format!("{path}.image_url.url"))),
        },
        _ => return Err(TranslateError::Missing(format!("{path}.image_url"))),
    };
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url, &upath)?;
        Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        )
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(TranslateError::invalid(
            upath,
            "expected an http(s) URL or a base64 data: URL.",
        ))
    }
}

fn openai_file(p: &Value, path: &str) -> Result<Value> {
    let file = p
        .get("file")
        .and_then(Value::as_object)
        .ok_or_else(|| TranslateError::Missing(format!("{path}.file")))?;
    match file.get("file_data") {
        Some(Value::String(d)) => {
            let fpath = format!("{path}.file.file_data");
            // file_data is a data: URL, or (as some clients send it) bare base64 of a PDF.
            let (media_type, data) = if d.starts_with("data:") {
                parse_data_url(d, &fpath)?
            } else {
                ("application/pdf", d.as_str())
            };
            if media_type != "application/pdf" {
                return Err(TranslateError::unsupported(
                    fpath,
                    format!("'{media_type}' files are not available, only application/pdf."),
                ));
            }
            Ok(
                json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}),
            )
        }
        _ if file.contains_key("file_id") => Err(TranslateError::unsupported(
            format!("{path}.file.file_id"),
            "uploaded file ids belong to the provider that stored them; send 'file_data' instead.",
        )),
        _ => Err(TranslateError::Missing(format!("{path}.file.file_data"))),
    }
}

fn openai_assistant_blocks(m: &Map<String, Value>, path: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !is_blank(s) {
                out.push(text_block(s));
            }
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{path}.content[{j}]");
                let t = match part_type(p, &ppath)? {
                    "text" => part_text(p, &ppath)?,
                    "refusal" => p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{ppath}.type"),
                            format!("'{other}' parts are not allowed in assistant messages."),
                        ));
                    }
                };
                if !is_blank(t) {
                    out.push(text_block(t));
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "expected a string, an array of content parts or null.",
            ));
        }
    }
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, c) in calls.iter().enumerate() {
                out.push(openai_tool_call(c, &format!("{path}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_calls"),
                "expected an array.",
            ));
        }
    }
    if m.get("function_call").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            format!("{path}.function_call"),
            "the legacy functions API is not translated; use 'tool_calls'.",
        ));
    }
    Ok(out)
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; OpenAI's (`call_…`) do, other servers' may
/// not. The same mapping is applied to `tool_call_id`, so pairs stay paired.
fn anthropic_tool_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

fn required_str<'a>(o: &'a Value, key: &str, path: &str) -> Result<&'a str> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(TranslateError::Missing(format!("{path}.{key}"))),
        Some(_) => Err(TranslateError::invalid(
            format!("{path}.{key}"),
            "expected a string.",
        )),
    }
}

fn openai_tool_call(c: &Value, path: &str) -> Result<Value> {
    if !c.is_object() {
        return Err(TranslateError::invalid(path, "expected an object."));
    }
    match c.get("type").and_then(Value::as_str) {
        None | Some("function") => {}
        Some(other) => {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                format!("'{other}' tool calls are not available, only 'function'."),
            ));
        }
    }
    let id = required_str(c, "id", path)?;
    let fpath = format!("{path}.function");
    let f = c
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| TranslateError::Missing(fpath.clone()))?;
    let name = required_str(f, "name", &fpath)?;
    let input = match f.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(TranslateError::invalid(
                    format!("{fpath}.arguments"),
                    "expected a JSON object encoded as a string.",
                ));
            }
        },
        // Some clients send the object itself.
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{fpath}.arguments"),
                "expected a JSON object encoded as a string.",
            ));
        }
    };
    Ok(json!({"type": "tool_use", "id": anthropic_tool_id(id), "name": name, "input": input}))
}

fn openai_tool_result(m: &Map<String, Value>, path: &str) -> Result<Value> {
    let id = match m.get("tool_call_id") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(TranslateError::Missing(format!("{path}.tool_call_id")));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.tool_call_id"),
                "expected a string.",
            ));
        }
    };
    let mut texts = openai_text_only(m.get("content"), path)?;
    let mut block = json!({"type": "tool_result", "tool_use_id": anthropic_tool_id(id)});
    let content = match texts.len() {
        0 => None,
        1 => texts.pop().map(Value::String),
        _ => Some(Value::Array(texts.iter().map(|t| text_block(t)).collect())),
    };
    if let (Some(content), Some(o)) = (content, block.as_object_mut()) {
        o.insert("content".into(), content);
    }
    Ok(block)
}

fn openai_stop(stop: Option<&Value>) -> Result<Option<Value>> {
    let seqs: Vec<Value> = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) => {
            if let Some(j) = a.iter().position(|s| !s.is_string()) {
                return Err(TranslateError::invalid(
                    format!("stop[{j}]"),
                    "expected a string.",
                ));
            }
            a.clone()
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "expected a string or an array of strings.",
            ));
        }
    };
    let seqs: Vec<Value> = seqs
        .into_iter()
        .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        .collect();
    Ok((!seqs.is_empty()).then_some(Value::Array(seqs)))
}

fn openai_tools(o: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<()> {
    let tools = match o.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| openai_tool(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(TranslateError::invalid("tools", "expected an array.")),
    };
    let mut choice = match o.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!(
                        "unknown value '{other}' (expected none, auto, required or a named function)."
                    ),
                ));
            }
        },
        Some(v @ Value::Object(_)) => match v.get("type").and_then(Value::as_str) {
            Some("function") => {
                let f = v
                    .get("function")
                    .ok_or_else(|| TranslateError::Missing("tool_choice.function".into()))?;
                let name = required_str(f, "name", "tool_choice.function")?;
                Some(json!({"type": "tool", "name": name}))
            }
            Some(other) => {
                return Err(TranslateError::unsupported(
                    "tool_choice.type",
                    format!("'{other}' is not available, only 'function'."),
                ));
            }
            None => return Err(TranslateError::Missing("tool_choice.type".into())),
        },
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice",
                "expected a string or an object.",
            ));
        }
    };
    if tools.is_empty() {
        // Without tools only "none"/"auto" make sense, and they mean nothing to Anthropic.
        return match choice.as_ref().and_then(|c| c.get("type")?.as_str()) {
            Some("any" | "tool") => Err(TranslateError::invalid(
                "tool_choice",
                "'tool_choice' is only allowed when 'tools' are specified.",
            )),
            _ => Ok(()),
        };
    }
    if o.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none")
            && let Some(c) = c.as_object_mut()
        {
            c.insert("disable_parallel_tool_use".into(), json!(true));
        }
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}

fn openai_tool(t: &Value, path: &str) -> Result<Value> {
    if !t.is_object() {
        return Err(TranslateError::invalid(path, "expected an object."));
    }
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                format!("'{other}' tools are not available, only 'function'."),
            ));
        }
        None => return Err(TranslateError::Missing(format!("{path}.type"))),
    }
    let fpath = format!("{path}.function");
    let f = t
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| TranslateError::Missing(fpath.clone()))?;
    let name = required_str(f, "name", &fpath)?;
    let schema = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{fpath}.parameters"),
                "expected a JSON schema object.",
            ));
        }
    };
    let mut tool = json!({"name": name, "input_schema": schema});
    if let (Some(Value::String(d)), Some(o)) = (f.get("description"), tool.as_object_mut()) {
        o.insert("description".into(), json!(d));
    }
    Ok(tool)
}

// =============================================================================================
// Anthropic → OpenAI

/// Translates a `/v1/messages` body into a `/v1/chat/completions` body for `upstream_model`.
///
/// - `system` (string or text blocks) → a leading `system` message;
/// - user blocks: `text`; `image` (base64 → a `data:` URL, url → the URL); `document` (base64
///   PDF → a `file` part, plain text → a text part); `tool_result` → `tool` messages, emitted
///   before the rest of that user turn (images inside a tool result follow as user content);
/// - assistant blocks: `text` → `content`, `tool_use` → `tool_calls`; `thinking` is dropped;
/// - `max_tokens` → `max_completion_tokens`; `temperature`, `top_p`, `stop_sequences` →
///   `stop`, `metadata.user_id` → `user`, `tools`, `tool_choice`
///   (`disable_parallel_tool_use` → `parallel_tool_calls: false`);
/// - `stream: true` → `stream` plus `stream_options.include_usage`, so the stream reports usage.
///
/// Refused: server tools (web search, code execution, computer use, …), `mcp_servers`,
/// `container`, and content blocks with no OpenAI equivalent. Dropped: `top_k`, `thinking`,
/// `cache_control`, `service_tier`, `tool_result.is_error`.
pub fn anthropic_to_openai_request(body: &Value, upstream_model: &str) -> Result<Value> {
    let o = body.as_object().ok_or(TranslateError::NotAnObject)?;
    if o.get("mcp_servers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(TranslateError::unsupported(
            "mcp_servers",
            "MCP connectors are not available.",
        ));
    }
    if o.get("container").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "container",
            "code execution containers are not available.",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(upstream_model));
    let mut messages = Vec::new();
    if let Some(system) = anthropic_system(o.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    anthropic_messages(o.get("messages"), &mut messages)?;
    out.insert("messages".into(), Value::Array(messages));

    // Anthropic requires max_tokens; OpenAI does not, so a missing one is not our error.
    if let Some(n) = positive_int(o, "max_tokens")? {
        out.insert("max_completion_tokens".into(), json!(n));
    }
    if let Some(t) = number(o, "temperature")? {
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = number(o, "top_p")? {
        out.insert("top_p".into(), p.clone());
    }
    match o.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if let Some(j) = a.iter().position(|s| !s.is_string()) {
                return Err(TranslateError::invalid(
                    format!("stop_sequences[{j}]"),
                    "expected a string.",
                ));
            }
            if !a.is_empty() {
                out.insert("stop".into(), Value::Array(a.clone()));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop_sequences",
                "expected an array of strings.",
            ));
        }
    }
    if let Some(stream) = boolean(o, "stream")? {
        out.insert("stream".into(), json!(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = o
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), json!(user));
    }
    anthropic_tools(o, &mut out)?;
    Ok(Value::Object(out))
}

fn anthropic_system(system: Option<&Value>) -> Result<Option<String>> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then(|| s.clone())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let path = format!("system[{j}]");
                match part_type(b, &path)? {
                    "text" => texts.push(part_text(b, &path)?),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{path}.type"),
                            format!("'{other}' blocks are not allowed in 'system', only 'text'."),
                        ));
                    }
                }
            }
            let joined = texts.join("\n\n");
            Ok((!joined.is_empty()).then_some(joined))
        }
        Some(_) => Err(TranslateError::invalid(
            "system",
            "expected a string or an array of text blocks.",
        )),
    }
}

fn anthropic_messages(messages: Option<&Value>, out: &mut Vec<Value>) -> Result<()> {
    let messages = match messages {
        None | Some(Value::Null) => return Err(TranslateError::Missing("messages".into())),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(TranslateError::invalid(
                "messages",
                "expected at least one message.",
            ));
        }
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(TranslateError::invalid(
                "messages",
                "expected an array of messages.",
            ));
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        if !m.is_object() {
            return Err(TranslateError::invalid(&path, "expected an object."));
        }
        let role = required_str(m, "role", &path)?;
        let content = m.get("content");
        match role {
            "user" => anthropic_user(content, &path, out)?,
            "assistant" => out.push(anthropic_assistant(content, &path)?),
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("unknown role '{other}' (expected user or assistant)."),
                ));
            }
        }
    }
    Ok(())
}

/// The blocks of a message content (a string is one text block).
fn anthropic_blocks<'a>(content: Option<&'a Value>, path: &str) -> Result<Vec<&'a Value>> {
    match content {
        None | Some(Value::Null) => Err(TranslateError::Missing(format!("{path}.content"))),
        Some(s @ Value::String(_)) => Ok(vec![s]),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(_) => Err(TranslateError::invalid(
            format!("{path}.content"),
            "expected a string or an array of content blocks.",
        )),
    }
}

/// A user turn: its `tool_result`s as `tool` messages, then the rest as one user message.
fn anthropic_user(content: Option<&Value>, path: &str, out: &mut Vec<Value>) -> Result<()> {
    let mut parts: Vec<Value> = Vec::new();
    for (j, b) in anthropic_blocks(content, path)?.into_iter().enumerate() {
        let bpath = format!("{path}.content[{j}]");
        if let Value::String(s) = b {
            parts.push(json!({"type": "text", "text": s}));
            continue;
        }
        match part_type(b, &bpath)? {
            "text" => parts.push(json!({"type": "text", "text": part_text(b, &bpath)?})),
            "image" => parts.push(anthropic_image(b, &bpath)?),
            "document" => parts.push(anthropic_document(b, &bpath)?),
            "tool_result" => {
                let (message, images) = anthropic_tool_result(b, &bpath)?;
                out.push(message);
                parts.extend(images);
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{bpath}.type"),
                    format!("'{other}' blocks are not available in user messages."),
                ));
            }
        }
    }
    let content = match parts.as_slice() {
        [] => return Ok(()),
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            only.get("text").cloned().unwrap_or_default()
        }
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
    Ok(())
}

fn anthropic_image(b: &Value, path: &str) -> Result<Value> {
    let spath = format!("{path}.source");
    let source = b
        .get("source")
        .filter(|s| s.is_object())
        .ok_or_else(|| TranslateError::Missing(spath.clone()))?;
    let url = match required_str(source, "type", &spath)? {
        "base64" => format!(
            "data:{};base64,{}",
            required_str(source, "media_type", &spath)?,
            required_str(source, "data", &spath)?
        ),
        "url" => required_str(source, "url", &spath)?.to_owned(),
        other => {
            return Err(TranslateError::unsupported(
                format!("{spath}.type"),
                format!("'{other}' image sources are not available, only base64 and url."),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn anthropic_document(b: &Value, path: &str) -> Result<Value> {
    let spath = format!("{path}.source");
    let source = b
        .get("source")
        .filter(|s| s.is_object())
        .ok_or_else(|| TranslateError::Missing(spath.clone()))?;
    match required_str(source, "type", &spath)? {
        "base64" if source.get("media_type").and_then(Value::as_str) == Some("application/pdf") => {
            let filename = b
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": filename,
                "file_data": format!("data:application/pdf;base64,{}", required_str(source, "data", &spath)?),
            }}))
        }
        "text" => Ok(json!({"type": "text", "text": required_str(source, "data", &spath)?})),
        other => Err(TranslateError::unsupported(
            format!("{spath}.type"),
            format!("'{other}' documents are not available, only base64 PDF and plain text."),
        )),
    }
}

/// A `tool` message, and the images of the result (a tool message holds only text, so they
/// follow as user content).
fn anthropic_tool_result(b: &Value, path: &str) -> Result<(Value, Vec<Value>)> {
    let id = required_str(b, "tool_use_id", path)?;
    let mut text = String::new();
    let mut images = Vec::new();
    match b.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(blocks)) => {
            for (k, c) in blocks.iter().enumerate() {
                let cpath = format!("{path}.content[{k}]");
                match part_type(c, &cpath)? {
                    "text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part_text(c, &cpath)?);
                    }
                    "image" => images.push(anthropic_image(c, &cpath)?),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{cpath}.type"),
                            format!("'{other}' blocks are not available in tool results."),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "expected a string or an array of content blocks.",
            ));
        }
    }
    Ok((
        json!({"role": "tool", "tool_call_id": id, "content": text}),
        images,
    ))
}

fn anthropic_assistant(content: Option<&Value>, path: &str) -> Result<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in anthropic_blocks(content, path)?.into_iter().enumerate() {
        let bpath = format!("{path}.content[{j}]");
        if let Value::String(s) = b {
            text.push_str(s);
            continue;
        }
        match part_type(b, &bpath)? {
            "text" => text.push_str(part_text(b, &bpath)?),
            "tool_use" => {
                let id = required_str(b, "id", &bpath)?;
                let name = required_str(b, "name", &bpath)?;
                let arguments = match b.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(v) => v.to_string(),
                };
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
            // The model's own reasoning from an earlier turn; OpenAI has no way to take it back.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(TranslateError::unsupported(
                    format!("{bpath}.type"),
                    format!("'{other}' blocks are not available in assistant messages."),
                ));
            }
        }
    }
    let mut m = json!({"role": "assistant"});
    if let Some(o) = m.as_object_mut() {
        let content = if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        };
        o.insert("content".into(), content);
        if !calls.is_empty() {
            o.insert("tool_calls".into(), Value::Array(calls));
        }
    }
    Ok(m)
}

fn anthropic_tools(o: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<()> {
    let tools = match o.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| anthropic_tool(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(TranslateError::invalid("tools", "expected an array.")),
    };
    let (choice, parallel) = match o.get("tool_choice") {
        None | Some(Value::Null) => (None, true),
        Some(c @ Value::Object(_)) => {
            let parallel =
                c.get("disable_parallel_tool_use").and_then(Value::as_bool) != Some(true);
            let choice = match c.get("type").and_then(Value::as_str) {
                Some("auto") => json!("auto"),
                Some("any") => json!("required"),
                Some("none") => json!("none"),
                Some("tool") => {
                    let name = required_str(c, "name", "tool_choice")?;
                    json!({"type": "function", "function": {"name": name}})
                }
                Some(other) => {
                    return Err(TranslateError::invalid(
                        "tool_choice.type",
                        format!("unknown value '{other}' (expected auto, any, tool or none)."),
                    ));
                }
                None => return Err(TranslateError::Missing("tool_choice.type".into())),
            };
            (Some(choice), parallel)
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice",
                "expected an object.",
            ));
        }
    };
    if tools.is_empty() {
        // OpenAI refuses tool_choice and parallel_tool_calls without tools.
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if !parallel {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

fn anthropic_tool(t: &Value, path: &str) -> Result<Value> {
    if !t.is_object() {
        return Err(TranslateError::invalid(path, "expected an object."));
    }
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                format!(
                    "the server tool '{other}' is not available; only client tools (name, description, input_schema) are."
                ),
            ));
        }
    }
    let name = required_str(t, "name", path)?;
    let schema = match t.get("input_schema") {
        Some(s @ Value::Object(_)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(TranslateError::Missing(format!("{path}.input_schema")));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.input_schema"),
                "expected a JSON schema object.",
            ));
        }
    };
    let mut f = json!({"name": name, "parameters": schema});
    if let (Some(Value::String(d)), Some(o)) = (t.get("description"), f.as_object_mut()) {
        o.insert("description".into(), json!(d));
    }
    Ok(json!({"type": "function", "function": f}))
}

// =============================================================================================
// field helpers

/// An optional integer ≥ 1.
fn positive_int(o: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(TranslateError::invalid(
                key,
                format!("expected an integer >= 1, got {v}."),
            )),
        },
    }
}

/// An optional number, returned as the client wrote it.
fn number<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Value>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v)),
        Some(_) => Err(TranslateError::invalid(key, "expected a number.")),
    }
}

fn boolean(o: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::invalid(key, "expected a boolean.")),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
