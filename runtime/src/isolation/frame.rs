//! The frames between the host and an isolated component's child process,
//! over their Unix socket pair: `u32` big-endian length, then the body, a
//! one-byte tag and the tag's fields. Messages and documents travel as the
//! JSON the C ABI carries (the topic's JSON, [`InitMessage`],
//! [`StartMessage`], [`StateMessage`]); the frame adds only the length and
//! the tag.
//!
//! [`InitMessage`]: banalytics_sdk::plugin::InitMessage
//! [`StartMessage`]: banalytics_sdk::plugin::StartMessage
//! [`StateMessage`]: banalytics_sdk::plugin::StateMessage

use std::io::{self, Read};

/// The largest frame either side accepts: the largest bus message plus a
/// little. A longer length means a broken stream, and the link is dropped.
pub const MAX_FRAME: usize = 16 << 20;

/// One frame. The first six go from the host to the child, the others back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `create`.
    Create {
        /// The kind.
        kind: String,
        /// The [`InitMessage`](banalytics_sdk::plugin::InitMessage) JSON.
        init: Vec<u8>,
    },
    /// `start`.
    Start {
        /// The [`StartMessage`](banalytics_sdk::plugin::StartMessage) JSON.
        args: Vec<u8>,
    },
    /// `stop`.
    Stop,
    /// `deliver`: a bus message for the instance.
    Deliver {
        /// Its topic.
        topic: String,
        /// Its JSON.
        message: Vec<u8>,
    },
    /// `restart_failed`.
    RestartFailed,
    /// The heartbeat, answered by [`Frame::Pong`] with the same number.
    Ping(u64),
    /// The answer to `create`: `Err` with the plugin's message.
    Created(Result<(), String>),
    /// The answer to `start`.
    Started(Result<(), String>),
    /// The answer to `stop`.
    Stopped,
    /// The `publish` callback: a message on a topic the kind publishes.
    Publish {
        /// Its topic.
        topic: String,
        /// Its JSON.
        message: Vec<u8>,
    },
    /// The `state` callback: a [`StateMessage`](banalytics_sdk::plugin::StateMessage) JSON.
    State(Vec<u8>),
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

const CREATE: u8 = 1;
const START: u8 = 2;
const STOP: u8 = 3;
const DELIVER: u8 = 4;
const RESTART_FAILED: u8 = 5;
const PING: u8 = 6;
const CREATED: u8 = 64;
const STARTED: u8 = 65;
const STOPPED: u8 = 66;
const PUBLISH: u8 = 67;
const STATE: u8 = 68;
const LOG: u8 = 69;
const PONG: u8 = 70;

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn result(out: &mut Vec<u8>, r: &Result<(), String>) {
    match r {
        Ok(()) => out.push(0),
        Err(e) => {
            out.push(1);
            field(out, e.as_bytes());
        }
    }
}

impl Frame {
    /// Appends the frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Create { kind, init } => {
                out.push(CREATE);
                field(out, kind.as_bytes());
                field(out, init);
            }
            Frame::Start { args } => {
                out.push(START);
                field(out, args);
            }
            Frame::Stop => out.push(STOP),
            Frame::Deliver { topic, message } => {
                out.push(DELIVER);
                field(out, topic.as_bytes());
                field(out, message);
            }
            Frame::RestartFailed => out.push(RESTART_FAILED),
            Frame::Ping(n) => {
                out.push(PING);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Created(r) => {
                out.push(CREATED);
                result(out, r);
            }
            Frame::Started(r) => {
                out.push(STARTED);
                result(out, r);
            }
            Frame::Stopped => out.push(STOPPED),
            Frame::Publish { topic, message } => {
                out.push(PUBLISH);
                field(out, topic.as_bytes());
                field(out, message);
            }
            Frame::State(json) => {
                out.push(STATE);
                field(out, json);
            }
            Frame::Log {
                level,
                target,
                message,
            } => {
                out.push(LOG);
                out.extend_from_slice(&level.to_be_bytes());
                field(out, target.as_bytes());
                field(out, message.as_bytes());
            }
            Frame::Pong(n) => {
                out.push(PONG);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame as bytes, length prefix included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
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
        let mut c = Cursor { rest: &body[1..] };
        let frame = match body[0] {
            CREATE => Frame::Create {
                kind: c.string()?,
                init: c.bytes()?.to_vec(),
            },
            START => Frame::Start {
                args: c.bytes()?.to_vec(),
            },
            STOP => Frame::Stop,
            DELIVER => Frame::Deliver {
                topic: c.string()?,
                message: c.bytes()?.to_vec(),
            },
            RESTART_FAILED => Frame::RestartFailed,
            PING => Frame::Ping(c.u64()?),
            CREATED => Frame::Created(c.result()?),
            STARTED => Frame::Started(c.result()?),
            STOPPED => Frame::Stopped,
            PUBLISH => Frame::Publish {
                topic: c.string()?,
                message: c.bytes()?.to_vec(),
            },
            STATE => Frame::State(c.bytes()?.to_vec()),
            LOG => Frame::Log {
                level: c.u32()?,
                target: c.string()?,
                message: c.string()?,
            },
            PONG => Frame::Pong(c.u64()?),
            tag => return Err(invalid(format!("unknown frame tag {tag}"))),
        };
        if !c.rest.is_empty() {
            return Err(invalid(format!(
                "{} bytes after a frame of tag {}",
                c.rest.len(),
                body[0]
            )));
        }
        Ok(frame)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(invalid("truncated frame".to_owned()));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| invalid(e.to_string()))
    }

    fn result(&mut self) -> io::Result<Result<(), String>> {
        match self.take(1)?[0] {
            0 => Ok(Ok(())),
            _ => Ok(Err(self.string()?)),
        }
    }
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
            Frame::Created(Ok(())),
            Frame::Started(Err("no".into())),
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
            f.encode(&mut stream);
        }
        let mut r = &stream[..];
        for f in &frames {
            assert_eq!(Frame::read(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read(&mut r).unwrap(), None);
    }

    #[test]
    fn an_oversized_or_unknown_frame_is_refused() {
        let mut r = &((MAX_FRAME as u32 + 1).to_be_bytes())[..];
        assert!(Frame::read(&mut r).is_err());
        let mut r = &[0, 0, 0, 1, 200][..];
        let err = Frame::read(&mut r).unwrap_err();
        assert!(err.to_string().contains("unknown frame tag 200"), "{err}");
    }
}
