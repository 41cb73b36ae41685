//! Text <-> token ids, special tokens and the chat template of a model.

use serde::Serialize;
use tokenizers::Tokenizer;

use crate::chat_template;
use crate::error::{ModelError, Result};

/// One chat message as OpenAI clients send it.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A model's tokenizer with what generation needs around it.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos_token: Option<u32>,
    pub eos_tokens: Vec<u32>,
    /// Whether prompts get the BOS token prepended.
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos_token", &self.bos_token)
            .field("eos_tokens", &self.eos_tokens)
            .finish()
    }
}

impl TextTokenizer {
    pub fn new(
        inner: Tokenizer,
        bos_token: Option<u32>,
        eos_tokens: Vec<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Self {
        Self {
            inner,
            bos_token,
            eos_tokens,
            add_bos,
            chat_template,
        }
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; special-token text such as `<|im_start|>` maps to its id. BOS is
    /// prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_token);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`; special tokens are left out when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_tokens.contains(&id)
    }

    /// Renders `messages` with the model's chat template (Jinja), ending with the assistant's
    /// turn opened when `add_generation_prompt` is set.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let messages =
            serde_json::to_value(messages).map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        self.render_chat_template(&messages, None, add_generation_prompt)
    }

    /// Renders `messages` (a JSON list of message objects, with whatever fields the template
    /// reads: `tool_calls`, `tool_call_id`...) with the model's chat template. `tools`, when
    /// given, is passed as the template's `tools` variable; otherwise the variable is undefined,
    /// as templates written for Hugging Face's `apply_chat_template` expect.
    pub fn render_chat_template(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::ChatTemplate("the model has no chat template".into()))?;
        let special = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        let mut context = serde_json::Map::new();
        context.insert("messages".into(), messages.clone());
        context.insert("add_generation_prompt".into(), add_generation_prompt.into());
        context.insert("bos_token".into(), special(self.bos_token).into());
        context.insert(
            "eos_token".into(),
            special(self.eos_tokens.first().copied()).into(),
        );
        if let Some(tools) = tools {
            context.insert("tools".into(), tools.clone());
        }
        chat_template::render(template, &context)
    }
}

/// Turns a growing list of token ids into text deltas without splitting UTF-8 characters that
/// span several byte-level tokens. Decodes only a short window of recent tokens per step.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token and returns the text that became final, possibly empty.
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let now = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        if now.len() <= before.len()
            || now.ends_with('\u{FFFD}')
            || !now.is_char_boundary(before.len())
        {
            return Ok(String::new());
        }
        let delta = now[before.len()..].to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(delta)
    }

    /// Text still held back (an incomplete character at the end of generation).
    pub fn flush(&mut self, tokenizer: &TextTokenizer) -> Result<String> {
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let now = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }
}
