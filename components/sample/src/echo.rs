//! `Echo`, the sample's one actor.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use actix::prelude::*;
use banalytics_sdk::Bus;

use crate::{Drill, SampleReply, SampleRequest};

/// Answers requests, or panics when asked to.
pub struct Echo {
    from: String,
    home: PathBuf,
    bus: Bus,
    generation: u64,
}

impl Echo {
    /// A fresh instance of the component in the box home `home`;
    /// `generation` counts instances built so far.
    pub fn new(from: String, home: PathBuf, bus: Bus, generation: u64) -> Self {
        Echo {
            from,
            home,
            bus,
            generation,
        }
    }

    pub(crate) fn answer(&self, req: &SampleRequest) -> ResponseFuture<()> {
        if req.panic {
            panic!("sample drill: request {} asked echo to panic", req.seq);
        }
        let mut files = None;
        match req.drill {
            None => {}
            Some(Drill::Files) => {
                tracing::warn!(seq = req.seq, "sample drill: files");
                files = Some(crate::files::drill(&self.home));
            }
            Some(Drill::Segfault) => {
                tracing::warn!(seq = req.seq, "sample drill: segfault");
                // SAFETY: none; this is the drill. Page 0 is never mapped,
                // so the write faults (an aligned, non-null address, so
                // that no debug check turns it into a panic first).
                unsafe { std::ptr::write_volatile(std::ptr::without_provenance_mut::<u64>(8), 1) };
            }
            Some(Drill::Abort) => {
                tracing::warn!(seq = req.seq, "sample drill: abort");
                std::process::abort();
            }
            Some(drill @ (Drill::Hang | Drill::Deaf)) => {
                if drill == Drill::Deaf {
                    // SAFETY: installs SIG_IGN, no handler code; this is
                    // the drill. (Windows has no SIGTERM: the drill hangs.)
                    #[cfg(unix)]
                    unsafe {
                        libc::signal(libc::SIGTERM, libc::SIG_IGN)
                    };
                    tracing::warn!(seq = req.seq, "sample drill: deaf (SIGTERM ignored), hang");
                } else {
                    tracing::warn!(seq = req.seq, "sample drill: hang");
                }
                static WEDGED: Mutex<()> = Mutex::new(());
                let _held = WEDGED.lock();
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
        let bus = self.bus.clone();
        let forged = req.forge.clone();
        let reply = SampleReply {
            seq: req.seq,
            from: self.from.clone(),
            generation: self.generation,
            files,
        };
        Box::pin(async move {
            for forge in forged {
                tracing::warn!(topic = %forge.topic, "sample drill: forge a message");
                bus.publish(forge).await;
            }
            bus.publish(reply).await;
        })
    }
}

impl Actor for Echo {
    type Context = Context<Self>;
}
