//! Speculative decoding without a draft model: a sequence's next tokens are guessed by prompt
//! lookup ([`ngram`]), checked in the same forward as its real next token, and kept as far as
//! the model agrees: each position samples as without drafts and keeps the drafted token when it
//! sampled that token, so output (even seeded sampled output) is what decoding without drafts
//! gives. A sequence whose guesses keep failing pauses guessing.

pub(crate) mod ngram;

/// How the engine drafts tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeculativeConfig {
    /// Draft tokens checked per step, at most.
    pub num_tokens: usize,
    /// Shortest and longest suffix looked up in the sequence.
    pub ngram_min: usize,
    pub ngram_max: usize,
    /// No drafts while more sequences than this run: a large batch already uses the compute a
    /// draft would save.
    pub max_batch: usize,
}

impl Default for SpeculativeConfig {
    fn default() -> Self {
        Self {
            num_tokens: 4,
            ngram_min: 2,
            ngram_max: 4,
            max_batch: 8,
        }
    }
}

impl SpeculativeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.num_tokens == 0 {
            return Err("--num-speculative-tokens must be at least 1".into());
        }
        if self.ngram_min == 0 || self.ngram_min > self.ngram_max {
            return Err(format!(
                "--ngram-min ({}) must be at least 1 and at most --ngram-max ({})",
                self.ngram_min, self.ngram_max
            ));
        }
        Ok(())
    }
}

/// Drafts checked before a sequence's acceptance rate is judged.
const WINDOW: u32 = 16;
/// Below this acceptance rate a sequence pauses drafting.
const MIN_ACCEPTANCE: f32 = 0.3;
const FIRST_PAUSE: u32 = 8;
const LONGEST_PAUSE: u32 = 256;

/// One sequence's drafting record: drafts that keep failing pause drafting for a number of
/// steps that doubles each time (so ordinary text pays almost nothing), and a good window ends
/// the pauses.
#[derive(Debug, Clone, Default)]
pub(crate) struct DraftRecord {
    drafted: u32,
    accepted: u32,
    paused_steps: u32,
    next_pause: u32,
}

impl DraftRecord {
    /// Whether to draft this step (counts down a pause).
    pub fn may_draft(&mut self) -> bool {
        if self.paused_steps > 0 {
            self.paused_steps -= 1;
            return false;
        }
        true
    }

    pub fn record(&mut self, drafted: usize, accepted: usize) {
        self.drafted += drafted as u32;
        self.accepted += accepted as u32;
        if self.drafted < WINDOW {
            return;
        }
        let rate = self.accepted as f32 / self.drafted as f32;
        if rate < MIN_ACCEPTANCE {
            self.paused_steps = self.next_pause.max(FIRST_PAUSE);
            self.next_pause = (self.paused_steps * 2).min(LONGEST_PAUSE);
        } else {
            self.next_pause = FIRST_PAUSE;
        }
        self.drafted = 0;
        self.accepted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_drafts_pause_longer_each_time_and_good_ones_reset_the_pause() {
        let mut r = DraftRecord::default();
        assert!(r.may_draft());
        r.record(16, 2);
        let paused = (0..100).take_while(|_| !r.may_draft()).count();
        assert_eq!(paused, 8);
        r.record(16, 0);
        let paused = (0..100).take_while(|_| !r.may_draft()).count();
        assert_eq!(paused, 16);
        r.record(16, 12);
        assert!(r.may_draft(), "a good window does not pause");
        r.record(16, 1);
        let paused = (0..100).take_while(|_| !r.may_draft()).count();
        assert_eq!(paused, 8, "the pause starts over after a good window");
    }
}
