//! An incremental parser of server-sent events: bytes in, complete `data` payloads out.
//! Lines end with `\n` or `\r\n`; an event's `data:` lines are joined with `\n` and it ends
//! at a blank line; comments and other fields (`event:`, `id:`, `retry:`) are skipped.

#[derive(Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
}

impl SseParser {
    /// Feeds a chunk of the body; returns the payloads of the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// The end of the body: an event without its closing blank line still counts.
    pub fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, &mut events);
        }
        self.line_done(b"", &mut events);
        events
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(std::mem::take(&mut self.data).join("\n"));
            }
            return;
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            self.data.push(String::from_utf8_lossy(value).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(p.push(b":1}\n\ndata: [DO"), vec!["{\"a\":1}"]);
        assert_eq!(p.push(b"NE]\r\n\r\n"), vec!["[DONE]"]);
        assert!(p.finish().is_empty());
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let mut p = SseParser::default();
        let events = p.push(b": keep-alive\nevent: x\ndata:one\ndata: two\nid: 3\n\n\n");
        assert_eq!(events, vec!["one\ntwo"]);
        assert_eq!(p.push(b"data: tail"), Vec::<String>::new());
        assert_eq!(p.finish(), vec!["tail"]);
    }
}
