//! The frames between the host and an isolated component's child process,
//! over their Unix socket pair: `u32` big-endian length, then the body, the
//! [`Frame`] in `postcard`'s encoding (the variant's index as one byte, then
//! its fields; byte strings with a varint length). Messages and documents
//! travel as the JSON the C ABI carries (the topic's JSON, [`InitMessage`],
//! [`StartMessage`], [`StateMessage`]); the frame adds only the length and
//! the variant.
//!
//! Both ends are the same executable (the child is the host's own
//! `plugin-child`), so the encoding is private to one build.
//!
//! [`InitMessage`]: banalytics_sdk::plugin::InitMessage
//! [`StartMessage`]: banalytics_sdk::plugin::StartMessage
//! [`StateMessage`]: banalytics_sdk::plugin::StateMessage

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The largest frame either side accepts: the largest bus message plus a
/// little. A longer length means a broken stream, and the link is dropped.
pub const MAX_FRAME: usize = 16 << 20;

/// One frame. The first six go from the host to the child, the others back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// `create`.
    Create {
        /// The kind.
        kind: String,
        /// The [`InitMessage`](banalytics_sdk::plugin::InitMessage) JSON.
        #[serde(with = "serde_bytes")]
        init: Vec<u8>,
    },
    /// `start`.
    Start {
        /// The [`StartMessage`](banalytics_sdk::plugin::StartMessage) JSON.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// `stop`.
    Stop,
    /// `deliver`: a bus message for the instance.
    Deliver {
        /// Its topic.
        topic: String,
        /// Its JSON.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// `restart_failed`.
    RestartFailed,
    /// The heartbeat, answered by [`Frame::Pong`] with the same number.
    Ping(u64),
    /// The answer to `create`.
    Created(Answer),
    /// The answer to `start`.
    Started(Answer),
    /// The answer to `stop`.
    Stopped,
    /// The `publish` callback: a message on a topic the kind publishes.
    Publish {
        /// Its topic.
        topic: String,
        /// Its JSON.
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// The `state` callback: a [`StateMessage`](banalytics_sdk::plugin::StateMessage) JSON.
    State(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An event of the plugin's log.
    Log {
        /// Its level (`LEVEL_*`).
        level: u32,
        /// Its target.
        target: String,
        /// Its text.
        message: String,
    },
    /// The answer to [`Frame::Ping`], once the instance's lifecycle loop
    /// answered (see the module docs of `isolation`).
    Pong(u64),
}

/// A plugin's answer to `create` or `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Done.
    Done,
    /// Refused, with the plugin's message.
    Refused(String),
}

/// How many variants [`Frame`] has: a body whose first byte (postcard's
/// variant index, one byte below 128) is not below this is refused by its
/// tag. A test checks it against the last variant.
const TAGS: u8 = 13;

impl Frame {
    /// The frame as bytes, length prefix included.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing into a `Vec` cannot fail: every field has a length
        // and the output grows as needed.
        let mut out = postcard::to_extend(self, vec![0; 4]).expect("a frame serializes");
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Reads one frame; `Ok(None)` at a clean end of the stream.
    pub fn read(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(invalid(format!(
                "frame of {len} bytes (at most {MAX_FRAME})"
            )));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Frame::decode(&body).map(Some)
    }

    fn decode(body: &[u8]) -> io::Result<Frame> {
        let tag = body[0];
        if tag >= TAGS {
            return Err(invalid(format!("unknown frame tag {tag}")));
        }
        match postcard::take_from_bytes(body) {
            Ok((frame, [])) => Ok(frame),
            Ok((_, rest)) => Err(invalid(format!(
                "{} bytes after a frame of tag {tag}",
                rest.len()
            ))),
            Err(e) => Err(invalid(format!("frame of tag {tag}: {e}"))),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_reads_back_as_written_and_the_stream_ends_cleanly() {
        let frames = [
            Frame::Create {
                kind: "sample-echo".into(),
                init: b"{\"name\":\"echo\"}".to_vec(),
            },
            Frame::Start {
                args: b"{\"policy\":\"10s\"}".to_vec(),
            },
            Frame::Stop,
            Frame::Deliver {
                topic: "sample.request".into(),
                message: b"{\"seq\":1}".to_vec(),
            },
            Frame::RestartFailed,
            Frame::Ping(7),
            Frame::Created(Answer::Done),
            Frame::Started(Answer::Refused("no".into())),
            Frame::Stopped,
            Frame::Publish {
                topic: "sample.reply".into(),
                message: Vec::new(),
            },
            Frame::State(b"{}".to_vec()),
            Frame::Log {
                level: 3,
                target: "sample".into(),
                message: "started".into(),
            },
            Frame::Pong(u64::MAX),
        ];
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend(f.to_bytes());
        }
        let mut r = &stream[..];
        for f in &frames {
            assert_eq!(Frame::read(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read(&mut r).unwrap(), None);
        // The last variant's tag is the last one `decode` accepts.
        assert_eq!(Frame::Pong(0).to_bytes()[4], TAGS - 1);
    }

    #[test]
    fn an_oversized_or_unknown_frame_is_refused() {
        let mut r = &((MAX_FRAME as u32 + 1).to_be_bytes())[..];
        assert!(Frame::read(&mut r).is_err());
        let mut r = &[0, 0, 0, 1, 200][..];
        let err = Frame::read(&mut r).unwrap_err();
        assert!(err.to_string().contains("unknown frame tag 200"), "{err}");
        let mut r = &[0, 0, 0, 1, TAGS][..];
        let err = Frame::read(&mut r).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("unknown frame tag {TAGS}")),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_body_or_bytes_after_a_frame_are_refused() {
        let deliver = Frame::Deliver {
            topic: "t".into(),
            message: b"{}".to_vec(),
        }
        .to_bytes();
        // A body whose byte string claims more than the body holds.
        let mut short = deliver[..deliver.len() - 1].to_vec();
        short[3] -= 1;
        let err = Frame::read(&mut &short[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // One byte too many after a complete frame.
        let mut long = deliver.clone();
        long.push(0);
        long[3] += 1;
        let err = Frame::read(&mut &long[..]).unwrap_err();
        assert!(err.to_string().contains("1 bytes after a frame"), "{err}");
    }
}
