//! [`LiveStream`]: the messages of a Server-Sent Events stream, decoded.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crmbus_api::StoredView;

use crate::error::ClientError;

/// A topic followed live: each [`LiveStream::next`] is the next stored event.
pub struct LiveStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    base: String,
}

impl LiveStream {
    pub(crate) fn new(resp: reqwest::Response, base: String) -> LiveStream {
        LiveStream {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
            base,
        }
    }

    /// The next event; `None` when the server closed the stream, an error when the
    /// connection broke or the server ended the stream with a reason.
    pub async fn next(&mut self) -> Option<Result<StoredView, ClientError>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                match parse_block(&block) {
                    Block::Empty => continue,
                    Block::Error(reason) => return Some(Err(ClientError::StreamEnded(reason))),
                    Block::Event(data) => {
                        return Some(serde_json::from_str(&data).map_err(|source| {
                            ClientError::Decode {
                                what: "a stream message".into(),
                                source,
                            }
                        }))
                    }
                }
            }
            match self.body.next().await? {
                Ok(chunk) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Err(source) => {
                    return Some(Err(ClientError::Request {
                        url: self.base.clone(),
                        source,
                    }))
                }
            }
        }
    }
}

enum Block {
    Empty,
    Error(String),
    Event(String),
}

/// One SSE block: its `event:` kind and its `data:` lines, joined by newlines.
fn parse_block(block: &str) -> Block {
    let mut kind = "message";
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if data.is_empty() {
        Block::Empty
    } else if kind == "error" {
        Block::Error(data)
    } else {
        Block::Event(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_events_errors_or_keep_alives() {
        assert!(matches!(parse_block(": keep-alive\n\n"), Block::Empty));
        assert!(matches!(
            parse_block("event: error\ndata: too slow\n\n"),
            Block::Error(r) if r == "too slow"
        ));
        assert!(matches!(
            parse_block("id: 0-1\ndata: {\"a\":1}\n\n"),
            Block::Event(d) if d == "{\"a\":1}"
        ));
    }
}
