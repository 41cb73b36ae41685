//! The one check a request passes before the engine takes it: [`Validator::validate`] turns a
//! [`GenerationRequest`] into a [`ValidRequest`], which only it can make, and the engine then
//! trusts it as is (it never re-checks the prompt).

use epas_model::PagedSequence;
use epas_model::SharingPlan;
use llguidance::Matcher;

use super::request::GenerationRequest;
use super::structured::{CompileError, ConstraintCompiler};

/// A request that fits this engine: a non-empty prompt of known tokens, `n` and `max_tokens`
/// within limits, prompt plus output within both the model's context and the KV pool, and an
/// output constraint that compiled.
pub struct ValidRequest {
    request: GenerationRequest,
    /// The compiled output constraint, at the start of its language.
    matcher: Option<Matcher>,
}

impl std::fmt::Debug for ValidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidRequest")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl ValidRequest {
    pub fn request(&self) -> &GenerationRequest {
        &self.request
    }

    pub(crate) fn into_parts(self) -> (GenerationRequest, Option<Matcher>) {
        (self.request, self.matcher)
    }
}

/// Checks requests against the limits and compiles their output constraints.
pub(crate) struct Validator {
    pub limits: RequestLimits,
    pub compiler: ConstraintCompiler,
}

impl Validator {
    pub fn validate(&self, request: GenerationRequest) -> Result<ValidRequest, Refusal> {
        self.limits.check(&request)?;
        let matcher = match &request.constraint {
            None => None,
            Some(c) => Some(self.compiler.compile(&c.output).map_err(|e| match e {
                CompileError::Refused(e) => Refusal::Invalid(InvalidRequest::new(
                    c.field,
                    format!("the {} constraint is not usable: {e}", c.output.kind()),
                )),
                CompileError::Unavailable(message) => Refusal::Unsupported {
                    param: c.field,
                    message,
                },
            })?),
        };
        Ok(ValidRequest { request, matcher })
    }
}

/// Why the validation step refused a request: the request's fault, or something this server
/// cannot do for any request (output constraints when llguidance cannot read the tokenizer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("{message}")]
    Unsupported {
        param: &'static str,
        message: String,
    },
}

/// Why a request was refused, naming the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub param: &'static str,
    /// OpenAI's error code, where one fits (`context_length_exceeded`).
    pub code: Option<&'static str>,
    pub message: String,
}

impl InvalidRequest {
    fn new(param: &'static str, message: String) -> Self {
        Self {
            param,
            code: None,
            message,
        }
    }

    fn too_long(param: &'static str, message: String) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::new(param, message)
        }
    }
}

/// The sizes a request is checked against: the model's and the engine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub num_layers: usize,
    pub vocab_size: usize,
    pub max_context: usize,
    /// Blocks in the KV pool and positions per block.
    pub kv_blocks: usize,
    pub block_size: usize,
    /// Largest `n`: the choices of a request must fit one batch.
    pub max_n: usize,
}

impl RequestLimits {
    /// Positions (prompt plus output) one sequence under `plan` can reach: the model's context,
    /// or fewer when the KV pool cannot hold that many (a sharing plan keeps no K in its sharing
    /// layers, so it reaches further).
    pub fn max_sequence_tokens(&self, plan: &SharingPlan) -> usize {
        let per_position_block = PagedSequence::blocks_for(plan, 1, self.block_size);
        let pool_positions = self.kv_blocks / per_position_block.max(1) * self.block_size;
        self.max_context.min(pool_positions)
    }

    /// Output tokens a prompt of `prompt_len` tokens leaves room for under `plan`.
    pub fn room(&self, plan: &SharingPlan, prompt_len: usize) -> usize {
        self.max_sequence_tokens(plan).saturating_sub(prompt_len)
    }

    /// Checks the prompt, `n` and the lengths of `request`.
    pub fn check(&self, request: &GenerationRequest) -> Result<(), InvalidRequest> {
        let plan = request.plan;
        if plan.num_layers() != self.num_layers {
            return Err(InvalidRequest::new(
                "sharing_ratio",
                format!(
                    "the sharing plan is for {} layers; the model has {}",
                    plan.num_layers(),
                    self.num_layers
                ),
            ));
        }
        let prompt_len = request.prompt.len();
        if prompt_len == 0 {
            return Err(InvalidRequest::new("prompt", "the prompt is empty".into()));
        }
        if let Some(id) = request
            .prompt
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(InvalidRequest::new(
                "prompt",
                format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.vocab_size
                ),
            ));
        }
        let limit = self.max_sequence_tokens(&plan);
        let why = self.limit_reason(&plan);
        if prompt_len >= limit {
            return Err(InvalidRequest::too_long(
                "prompt",
                format!(
                    "the prompt has {prompt_len} tokens; {why} {limit} (one must remain for output)"
                ),
            ));
        }
        let params = &request.params;
        if params.n == 0 || params.n > self.max_n {
            return Err(InvalidRequest::new(
                "n",
                format!("n must be between 1 and {}, got {}", self.max_n, params.n),
            ));
        }
        if params.max_tokens == 0 {
            return Err(InvalidRequest::new(
                "max_tokens",
                "max_tokens must be at least 1".into(),
            ));
        }
        if prompt_len + params.max_tokens > limit {
            return Err(InvalidRequest::too_long(
                "max_tokens",
                format!(
                    "max_tokens {} plus the prompt's {prompt_len} tokens exceed {why} {limit}",
                    params.max_tokens
                ),
            ));
        }
        Ok(())
    }

    fn limit_reason(&self, plan: &SharingPlan) -> String {
        if self.max_sequence_tokens(plan) < self.max_context {
            format!(
                "the KV cache (--kv-cache-tokens / --kv-cache-bytes) holds, for a sequence \
                 sharing {} of {} layers, at most",
                plan.sharing_layers(),
                plan.num_layers()
            )
        } else {
            "the model's context is".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GenerationParams;

    fn limits(kv_blocks: usize) -> RequestLimits {
        RequestLimits {
            num_layers: 4,
            vocab_size: 100,
            max_context: 256,
            kv_blocks,
            block_size: 16,
            max_n: 4,
        }
    }

    fn request(prompt: usize, max_tokens: usize, ratio: f64) -> GenerationRequest {
        GenerationRequest {
            prompt: vec![1; prompt],
            plan: SharingPlan::new(4, ratio).unwrap(),
            params: GenerationParams {
                max_tokens,
                ..Default::default()
            },
            constraint: None,
        }
    }

    #[test]
    fn the_pool_bounds_a_sequence_below_the_context() {
        // 8 blocks per 16 positions without sharing, 6 with half the layers sharing.
        let l = limits(48);
        assert_eq!(l.max_sequence_tokens(&SharingPlan::none(4)), 96);
        assert_eq!(
            l.max_sequence_tokens(&SharingPlan::new(4, 0.5).unwrap()),
            128
        );
        assert_eq!(
            limits(10_000).max_sequence_tokens(&SharingPlan::none(4)),
            256
        );
        assert!(l.check(&request(90, 6, 0.0)).is_ok());
        let err = l.check(&request(90, 7, 0.0)).unwrap_err();
        assert_eq!(
            (err.param, err.code),
            ("max_tokens", Some("context_length_exceeded"))
        );
        assert!(err.message.contains("KV cache"), "{}", err.message);
        assert!(l.check(&request(90, 38, 0.5)).is_ok());
        let err = l.check(&request(96, 1, 0.0)).unwrap_err();
        assert_eq!(err.param, "prompt");
        let err = limits(10_000).check(&request(200, 57, 0.0)).unwrap_err();
        assert!(
            err.message.contains("model's context is 256"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_prompts_n_and_max_tokens_name_their_field() {
        let l = limits(1000);
        let mut r = request(4, 4, 0.0);
        r.prompt[2] = 100;
        assert_eq!(l.check(&r).unwrap_err().param, "prompt");
        assert_eq!(l.check(&request(0, 4, 0.0)).unwrap_err().param, "prompt");
        assert_eq!(
            l.check(&request(4, 0, 0.0)).unwrap_err().param,
            "max_tokens"
        );
        let mut r = request(4, 4, 0.0);
        r.params.n = 5;
        assert_eq!(l.check(&r).unwrap_err().param, "n");
        let mut r = request(4, 4, 0.0);
        r.plan = SharingPlan::none(3);
        assert_eq!(l.check(&r).unwrap_err().param, "sharing_ratio");
        assert_eq!(l.room(&SharingPlan::none(4), 250), 6);
    }
}
