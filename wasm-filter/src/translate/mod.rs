//! OpenAI ↔ Anthropic translation (being written).
