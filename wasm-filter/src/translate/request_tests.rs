//! Table-driven request translation tests, both directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn o2a(body: Value) -> Result<Value> {
    openai_to_anthropic_request(&body, "claude-up", 1024)
}

fn a2o(body: Value) -> Result<Value> {
    anthropic_to_openai_request(&body, "gpt-up")
}

#[test]
fn openai_to_anthropic_cases() {
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "minimal: default max_tokens, string content stays a string",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": "claude-up", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1024}),
        ),
        (
            "system and developer messages go to system; sampling, stop, stream, user",
            json!({"model": "gpt", "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Say hello to the world"},
                    {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]}],
                   "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "stop": "\n\n", "stream": true,
                   "stream_options": {"include_usage": true}, "user": "user-42"}),
            json!({"model": "claude-up",
                   "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}],
                   "messages": [{"role": "user", "content": "Say hello to the world"}],
                   "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["\n\n"], "stream": true,
                   "metadata": {"user_id": "user-42"}}),
        ),
        (
            "one system message is a string; max_completion_tokens wins over max_tokens; stop array",
            json!({"model": "gpt", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                   "max_tokens": 10, "max_completion_tokens": 20, "stop": ["END", "", "STOP"]}),
            json!({"model": "claude-up", "system": "S", "messages": [{"role": "user", "content": "U"}],
                   "max_tokens": 20, "stop_sequences": ["END", "STOP"]}),
        ),
        (
            "harmless parameters are dropped, neutral values of rejected ones accepted",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "U"}], "presence_penalty": 0.5,
                   "frequency_penalty": 0.1, "seed": 7, "n": 1, "logprobs": false, "response_format": {"type": "text"},
                   "logit_bias": {}, "modalities": ["text"], "store": true, "service_tier": "auto",
                   "reasoning_effort": "low", "metadata": {"a": "b"}, "prediction": null, "stop": null, "top_k": 40}),
            json!({"model": "claude-up", "messages": [{"role": "user", "content": "U"}], "max_tokens": 1024, "top_k": 40}),
        ),
        (
            "images: data URL → base64 block, https URL → url block; empty text parts dropped",
            json!({"model": "gpt", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "text", "text": " "},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}"), "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "image_url", "image_url": "http://example.com/dog.webp"}]}]}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "url", "url": "http://example.com/dog.webp"}}]}]}),
        ),
        (
            "pdf file part → document block",
            json!({"model": "gpt", "messages": [{"role": "user", "content": [
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
                {"type": "text", "text": "Summarise."}]}]}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
                {"type": "text", "text": "Summarise."}]}]}),
        ),
        (
            "consecutive same-role messages are merged; empty assistant turns vanish",
            json!({"model": "gpt", "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": null},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "A1"},
                {"role": "assistant", "content": [{"type": "text", "text": "A2"}, {"type": "refusal", "refusal": "no"}]},
                {"role": "user", "content": "three"}]}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A1"}, {"type": "text", "text": "A2"}, {"type": "text", "text": "no"}]},
                {"role": "user", "content": "three"}]}),
        ),
        (
            "tools: definitions, required choice, parallel off, calls and results in a user turn",
            json!({"model": "gpt",
                   "messages": [
                       {"role": "system", "content": "Use tools."},
                       {"role": "user", "content": "Weather in Paris and Zürich?"},
                       {"role": "assistant", "content": "", "tool_calls": [
                           {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                           {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}}]},
                       {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
                       {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12°C"}, {"type": "text", "text": "rain"}]},
                       {"role": "user", "content": "Thanks. Which is warmer?"}],
                   "tools": [
                       {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
                       {"type": "function", "function": {"name": "now"}}],
                   "tool_choice": "required", "parallel_tool_calls": false}),
            json!({"model": "claude-up", "max_tokens": 1024, "system": "Use tools.",
                   "messages": [
                       {"role": "user", "content": "Weather in Paris and Zürich?"},
                       {"role": "assistant", "content": [
                           {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                           {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Zürich"}}]},
                       {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                           {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "12°C"}, {"type": "text", "text": "rain"}]},
                           {"type": "text", "text": "Thanks. Which is warmer?"}]}],
                   "tools": [
                       {"name": "get_weather", "description": "Current weather",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                       {"name": "now", "input_schema": {"type": "object", "properties": {}}}],
                   "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
        ),
        (
            "tool results are moved before user text in the same turn; empty result has no content; ids sanitised",
            json!({"model": "gpt", "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "tool_calls": [{"id": "chatcmpl-tool.7:a", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                {"role": "user", "content": "(meanwhile)"},
                {"role": "tool", "tool_call_id": "chatcmpl-tool.7:a", "content": ""}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "chatcmpl-tool_7_a", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "chatcmpl-tool_7_a"},
                    {"type": "text", "text": "(meanwhile)"}]}],
                   "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                   "tool_choice": {"type": "tool", "name": "f"}}),
        ),
        (
            "tool_choice none and auto; parallel_tool_calls false adds to auto only",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none", "parallel_tool_calls": false}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}], "tool_choice": {"type": "none"}}),
        ),
        (
            "parallel_tool_calls false without tool_choice",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": false}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
                   "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
        ),
        (
            "tool_choice auto without tools is dropped; so is an empty tools array",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": "auto"}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "arguments sent as an object are accepted",
            json!({"model": "gpt", "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]},
                {"role": "tool", "tool_call_id": "c", "content": "ok"}]}),
            json!({"model": "claude-up", "max_tokens": 1024, "messages": [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c", "content": "ok"}]}]}),
        ),
    ];
    for (name, input, want) in cases {
        match o2a(input) {
            Ok(got) => assert_eq!(got, want, "{name}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn openai_to_anthropic_errors() {
    let user = json!([{"role": "user", "content": "x"}]);
    let with = |extra: Value| {
        let mut b = json!({"model": "gpt", "messages": user});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "The request body must be a JSON object."),
        (
            json!({"model": "gpt"}),
            "Missing required parameter: 'messages'.",
        ),
        (
            json!({"model": "gpt", "messages": []}),
            "Invalid 'messages': expected at least one message.",
        ),
        (
            json!({"model": "gpt", "messages": "hi"}),
            "Invalid 'messages': expected an array of messages.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "system", "content": "only a system prompt"}]}),
            "Invalid 'messages': at least one user or assistant message with content is required.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "wizard", "content": "x"}]}),
            "Invalid 'messages[0].role': unknown role 'wizard' (expected system, developer, user, assistant or tool).",
        ),
        (
            json!({"model": "gpt", "messages": [{"content": "x"}]}),
            "Missing required parameter: 'messages[0].role'.",
        ),
        (
            with(json!({"n": 2})),
            "'n' is not supported for this model: only one choice can be generated; leave 'n' out or set it to 1.",
        ),
        (
            with(json!({"n": 0})),
            "Invalid 'n': expected a positive integer.",
        ),
        (
            with(json!({"logprobs": true})),
            "'logprobs' is not supported for this model: log probabilities are not available.",
        ),
        (
            with(json!({"top_logprobs": 3})),
            "'top_logprobs' is not supported for this model: log probabilities are not available.",
        ),
        (
            with(json!({"logit_bias": {"1234": -100}})),
            "'logit_bias' is not supported for this model: token biases are not available.",
        ),
        (
            with(json!({"response_format": {"type": "json_object"}})),
            "'response_format' is not supported for this model: structured output (json_object, json_schema) is not available; describe the format in the prompt or use a tool.",
        ),
        (
            with(json!({"modalities": ["text", "audio"]})),
            "'modalities' is not supported for this model: only text output is available.",
        ),
        (
            with(json!({"functions": [{"name": "f"}]})),
            "'functions' is not supported for this model: the legacy functions API is not translated; use 'tools' and 'tool_choice'.",
        ),
        (
            with(json!({"temperature": 1.5})),
            "'temperature' is not supported for this model: this model accepts a temperature between 0 and 1.",
        ),
        (
            with(json!({"temperature": "hot"})),
            "Invalid 'temperature': expected a number.",
        ),
        (
            with(json!({"max_tokens": 0})),
            "Invalid 'max_tokens': expected an integer >= 1, got 0.",
        ),
        (
            with(json!({"max_completion_tokens": 2.5})),
            "Invalid 'max_completion_tokens': expected an integer >= 1, got 2.5.",
        ),
        (
            with(json!({"stop": 3})),
            "Invalid 'stop': expected a string or an array of strings.",
        ),
        (
            with(json!({"stream": "yes"})),
            "Invalid 'stream': expected a boolean.",
        ),
        (
            with(json!({"tool_choice": "required"})),
            "Invalid 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
        ),
        (
            with(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})),
            "'tools[0].type' is not supported for this model: 'custom' tools are not available, only 'function'.",
        ),
        (
            with(json!({"tools": [{"type": "function", "function": {"description": "no name"}}]})),
            "Missing required parameter: 'tools[0].function.name'.",
        ),
        (
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}),
            ),
            "Invalid 'tool_choice': unknown value 'sometimes' (expected none, auto, required or a named function).",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "..", "format": "wav"}}]}]}),
            "'messages[0].content[0].type' is not supported for this model: audio input is not available.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "Invalid 'messages[0].content[0].image_url.url': expected an http(s) URL or a base64 data: URL.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]}),
            "'messages[0].content[0].image_url.url' is not supported for this model: only base64 data: URLs are accepted.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}),
            "'messages[0].content[0].file.file_id' is not supported for this model: uploaded file ids belong to the provider that stored them; send 'file_data' instead.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}}]}]}),
            "'messages[0].content[0].file.file_data' is not supported for this model: 'text/csv' files are not available, only application/pdf.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}, {"role": "user", "content": "x"}]}),
            "'messages[0].content[0].type' is not supported for this model: 'image_url' parts are not allowed here, only 'text'.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "Invalid 'messages[1].tool_calls[0].function.arguments': expected a JSON object encoded as a string.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "Missing required parameter: 'messages[1].tool_calls[0].id'.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "tool", "content": "x"}]}),
            "Missing required parameter: 'messages[0].tool_call_id'.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "'messages[0].role' is not supported for this model: the legacy functions API is not translated; use 'tools' and 'tool' messages.",
        ),
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": 42}]}),
            "Invalid 'messages[0].content': expected a string or an array of content parts.",
        ),
    ];
    for (input, want) in cases {
        match o2a(input.clone()) {
            Ok(v) => panic!("{input}: expected an error, got {v}"),
            Err(e) => assert_eq!(e.to_string(), want, "{input}"),
        }
    }
}

#[test]
fn openai_errors_name_their_param() {
    let e = o2a(json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}], "n": 3}))
        .unwrap_err();
    assert_eq!(e.param(), Some("n"));
    assert_eq!(e.openai_body()["error"]["param"], "n");
    assert_eq!(e.openai_body()["error"]["code"], "unsupported_parameter");
}

#[test]
fn anthropic_to_openai_cases() {
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "minimal",
            json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": "gpt-up", "max_completion_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "system string; sampling; stop sequences; stream asks for usage; user id; dropped extras",
            json!({"model": "claude", "max_tokens": 5, "system": "You are terse.",
                   "messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}],
                   "temperature": 0.5, "top_p": 0.8, "top_k": 10, "stop_sequences": ["END"], "stream": true,
                   "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 2048}, "service_tier": "auto"}),
            json!({"model": "gpt-up", "max_completion_tokens": 5,
                   "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"},
                                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}],
                   "temperature": 0.5, "top_p": 0.8, "stop": ["END"], "stream": true, "stream_options": {"include_usage": true},
                   "user": "u-1"}),
        ),
        (
            "system blocks are joined; stream false has no stream_options; consecutive users stay separate",
            json!({"model": "claude", "max_tokens": 5,
                   "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
                   "messages": [{"role": "user", "content": "1"}, {"role": "user", "content": [{"type": "text", "text": "2"}]}],
                   "stream": false, "stop_sequences": []}),
            json!({"model": "gpt-up", "max_completion_tokens": 5,
                   "messages": [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "1"}, {"role": "user", "content": "2"}],
                   "stream": false}),
        ),
        (
            "images and documents",
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}, "title": "report.pdf"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
                {"type": "text", "text": "Describe.", "cache_control": {"type": "ephemeral"}}]}]}),
            json!({"model": "gpt-up", "max_completion_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
                {"type": "text", "text": "plain words"},
                {"type": "text", "text": "Describe."}]}]}),
        ),
        (
            "tools: definitions, any + no parallel, tool_use → tool_calls, tool_result → tool messages first",
            json!({"model": "claude", "max_tokens": 200,
                   "tools": [{"name": "get_weather", "description": "Current weather",
                              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}},
                             {"type": "custom", "name": "now", "input_schema": {"type": "object"}}],
                   "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                   "messages": [
                       {"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "content": [
                           {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                           {"type": "text", "text": "Let me check."},
                           {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                           {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}]},
                       {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                           {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                            "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "broken"},
                                        {"type": "image", "source": {"type": "url", "url": "https://example.com/clock.png"}}]},
                           {"type": "text", "text": "And?"}]},
                       {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}}]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]}]}),
            json!({"model": "gpt-up", "max_completion_tokens": 200,
                   "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                             {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
                   "tool_choice": "required", "parallel_tool_calls": false,
                   "messages": [
                       {"role": "user", "content": "Weather in Paris?"},
                       {"role": "assistant", "content": "Let me check.", "tool_calls": [
                           {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                           {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                       {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"},
                       {"role": "tool", "tool_call_id": "toolu_2", "content": "clock\nbroken"},
                       {"role": "user", "content": [
                           {"type": "image_url", "image_url": {"url": "https://example.com/clock.png"}},
                           {"type": "text", "text": "And?"}]},
                       {"role": "assistant", "content": null, "tool_calls": [
                           {"id": "toolu_3", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                       {"role": "tool", "tool_call_id": "toolu_3", "content": ""}]}),
        ),
        (
            "named tool choice",
            json!({"model": "claude", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "f"}}),
            json!({"model": "gpt-up", "max_completion_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "tool_choice": {"type": "function", "function": {"name": "f"}}}),
        ),
        (
            "tool choice none and auto",
            json!({"model": "claude", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "none"}}),
            json!({"model": "gpt-up", "max_completion_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                   "tool_choice": "none"}),
        ),
        (
            "tool_choice without tools is dropped (OpenAI refuses it); missing max_tokens is left out",
            json!({"model": "claude", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "auto"}}),
            json!({"model": "gpt-up", "messages": [{"role": "user", "content": "x"}]}),
        ),
    ];
    for (name, input, want) in cases {
        match a2o(input) {
            Ok(got) => assert_eq!(got, want, "{name}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn anthropic_to_openai_errors() {
    let user = json!([{"role": "user", "content": "x"}]);
    let with = |extra: Value| {
        let mut b = json!({"model": "claude", "max_tokens": 5, "messages": user});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!("text"), "The request body must be a JSON object."),
        (
            json!({"model": "claude", "max_tokens": 5}),
            "Missing required parameter: 'messages'.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": []}),
            "Invalid 'messages': expected at least one message.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "Invalid 'messages[0].role': unknown role 'system' (expected user or assistant).",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user"}]}),
            "Missing required parameter: 'messages[0].content'.",
        ),
        (
            with(json!({"max_tokens": 0})),
            "Invalid 'max_tokens': expected an integer >= 1, got 0.",
        ),
        (
            with(
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
            ),
            "'tools[0].type' is not supported for this model: the server tool 'web_search_20250305' is not available; only client tools (name, description, input_schema) are.",
        ),
        (
            with(json!({"tools": [{"name": "f"}]})),
            "Missing required parameter: 'tools[0].input_schema'.",
        ),
        (
            with(
                json!({"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "sometimes"}}),
            ),
            "Invalid 'tool_choice.type': unknown value 'sometimes' (expected auto, any, tool or none).",
        ),
        (
            with(
                json!({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}),
            ),
            "'mcp_servers' is not supported for this model: MCP connectors are not available.",
        ),
        (
            with(json!({"container": "container_123"})),
            "'container' is not supported for this model: code execution containers are not available.",
        ),
        (
            with(json!({"system": [{"type": "image", "source": {}}]})),
            "'system[0].type' is not supported for this model: 'image' blocks are not allowed in 'system', only 'text'.",
        ),
        (
            with(json!({"stop_sequences": "END"})),
            "Invalid 'stop_sequences': expected an array of strings.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "x", "title": "t", "content": []}]}]}),
            "'messages[0].content[0].type' is not supported for this model: 'search_result' blocks are not available in user messages.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]}),
            "'messages[0].content[0].source.type' is not supported for this model: 'url' documents are not available, only base64 PDF and plain text.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}),
            "'messages[0].content[0].source.type' is not supported for this model: 'file' image sources are not available, only base64 and url.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]}]}),
            "'messages[1].content[0].type' is not supported for this model: 'server_tool_use' blocks are not available in assistant messages.",
        ),
        (
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "content": "x"}]}]}),
            "Missing required parameter: 'messages[0].content[0].tool_use_id'.",
        ),
    ];
    for (input, want) in cases {
        match a2o(input.clone()) {
            Ok(v) => panic!("{input}: expected an error, got {v}"),
            Err(e) => assert_eq!(e.to_string(), want, "{input}"),
        }
    }
}

#[test]
fn requests_survive_a_round_trip() {
    // OpenAI → Anthropic → OpenAI keeps what both APIs can say.
    let openai = json!({"model": "gpt-up", "max_completion_tokens": 50, "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "-3°C"}],
        "tools": [{"type": "function", "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "stop": ["\n"]});
    let anthropic = openai_to_anthropic_request(&openai, "claude", 1).unwrap();
    let back = anthropic_to_openai_request(&anthropic, "gpt-up").unwrap();
    assert_eq!(back, openai);
}
