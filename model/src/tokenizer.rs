//! Text <-> token ids, special tokens and the chat template of a model.

use serde::Serialize;
use tokenizers::Tokenizer;

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
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::ChatTemplate("the model has no chat template".into()))?;
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template)
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        let special = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => special(self.bos_token),
            eos_token => special(self.eos_tokens.first().copied()),
        };
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))
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
