//! Stop strings over streamed text: text that might begin a stop string is held back until it
//! is known not to, so a stop string split across tokens is never emitted.

#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    /// The stop string found; nothing is emitted after it.
    matched: Option<String>,
}

/// Result of feeding text to the matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to emit now.
    pub emit: String,
    /// A stop string was found; nothing after it is emitted.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            matched: None,
        }
    }

    /// The stop string that ended the text, once one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.matched.is_some() {
            return StopCheck {
                emit: String::new(),
                stopped: true,
            };
        }
        if self.stops.is_empty() {
            return StopCheck {
                emit: text.to_string(),
                stopped: false,
            };
        }
        self.pending.push_str(text);
        if let Some((at, stop)) = self
            .stops
            .iter()
            .filter_map(|s| Some((self.pending.find(s.as_str())?, s)))
            .min_by_key(|&(at, _)| at)
        {
            let emit = self.pending[..at].to_string();
            self.matched = Some(stop.clone());
            self.pending.clear();
            return StopCheck {
                emit,
                stopped: true,
            };
        }
        let keep = self.held_suffix_len();
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopCheck {
            emit,
            stopped: false,
        }
    }

    /// Text held back at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for stop in &self.stops {
            for (start, _) in p.char_indices() {
                let suffix = &p[start..];
                if suffix.len() < stop.len() && stop.starts_with(suffix) {
                    best = best.max(suffix.len());
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let (out, matched) = feed_matched(stops, pieces);
        (out, matched.is_some())
    }

    /// The text emitted and the stop string that ended it.
    fn feed_matched(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let c = m.push(p);
            out.push_str(&c.emit);
            if c.stopped {
                return (out, m.matched().map(str::to_owned));
            }
        }
        out.push_str(&m.flush());
        assert_eq!(m.matched(), None);
        (out, None)
    }

    #[test]
    fn stop_split_across_pieces_is_not_emitted() {
        assert_eq!(
            feed(&["\n\nUser:"], &["Hi", " there", "\n", "\nUs", "er:", " x"]),
            ("Hi there".into(), true)
        );
        assert_eq!(
            feed(&["END"], &["abcE", "N", "D tail"]),
            ("abc".into(), true)
        );
    }

    #[test]
    fn near_misses_are_released() {
        assert_eq!(
            feed(&["END"], &["abcE", "Nx", "yz"]),
            ("abcENxyz".into(), false)
        );
        assert_eq!(feed(&["END"], &["E"]), ("E".into(), false));
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(feed(&["xyz", "b"], &["aé", "bxyz"]), ("aé".into(), true));
        assert_eq!(
            feed(&["日本"], &["今日", "は日", "本"]),
            ("今日は".into(), true)
        );
    }

    #[test]
    fn the_stop_string_found_is_reported_and_nothing_follows_it() {
        assert_eq!(
            feed_matched(&["xyz", "b"], &["aé", "bxyz"]),
            ("aé".into(), Some("b".into()))
        );
        assert_eq!(
            feed_matched(&["N", "END"], &["abcE", "ND"]),
            ("abc".into(), Some("END".into()))
        );
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert!(m.push("aEND").stopped);
        assert_eq!(m.push("more").emit, "");
        assert_eq!(m.flush(), "");
        assert_eq!(m.matched(), Some("END"));
    }
}
