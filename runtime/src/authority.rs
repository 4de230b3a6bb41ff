//! Bus authority: which topics a plugin component may publish on the host
//! bus.
//!
//! A plugin kind declares the topics its instances publish
//! (`PluginKind::publishes`, answered in its identity). The SDK's guest
//! forwards only those, but the host does not rely on the plugin's own
//! code: a library built otherwise (or an isolated child, which runs the
//! plugin's code) can call `publish` with any topic. So the host checks
//! every message a plugin hands it, in process (`plugins.rs`, the `publish`
//! callback) and isolated (`isolation/proxy.rs`, the reader thread):
//!
//! - a topic on [`HOST_ONLY`] is refused whatever the kind declares: those
//!   topics steer the host or the upgrade center, and only the box's own
//!   parts publish them;
//! - any other topic the kind did not declare is refused.
//!
//! A refused message is dropped (the plugin's `publish` answers an error),
//! counted on the status board per component and topic
//! (`refused_publications` in `status`), and logged at warn the first time
//! for each component and topic, so a plugin that keeps trying cannot fill
//! the log.
//!
//! Who stays trusted: built-in components publish on the bus directly, and
//! the operator's commands come over the control socket, which only the
//! home's owner can open (`control.rs`: `upgrade`, `approve`, `exchange`).
//! The box's console acts through them.

use banalytics_messages::{
    portal::{
        GetEnvModulesRequest, GetEnvModulesResponse, ModuleStatusUpdate, PortalLinkChanged,
        PortalLinkState, PortalOutboxState, SyncSoftware, UpgradeAnswered, UpgradeRequested,
    },
    upgrade::{
        ApprovalHandled, ApproveStagedSet, DiscardStagedSet, RestartDeferred, RestartRequested,
        StagedSetDiscarded, UpgradeCommitted, UpgradeRolledBack,
    },
};
use banalytics_sdk::{BusMessage, StatusBoard};
use tracing::warn;

/// A topic no plugin may publish, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOnly {
    /// The bus topic.
    pub topic: &'static str,
    /// What a message on it makes the box do, and who publishes it.
    pub why: &'static str,
}

/// The topics that steer the host or the upgrade center: never accepted
/// from a plugin, whatever its kind declares. The one list; each entry
/// says why it is on it.
///
/// Deliberately not on it: the busy leases (`BusyLeaseTaken`,
/// `BusyLeaseReleased`), which any component may take (a recording
/// defers a restart), so a plugin that declares them may publish them;
/// a lease defers a restart at most `max_defer`. And `PortalOutboxQuery`,
/// which only asks Portal Integration to tell what waits.
pub const HOST_ONLY: &[HostOnly] = &[
    HostOnly {
        topic: RestartRequested::TOPIC,
        why: "stops the host and restarts it (the configured restart program included); asked for by the upgrade center once a set is staged",
    },
    HostOnly {
        topic: ApproveStagedSet::TOPIC,
        why: "applies a staged set that waits for its maintenance window or for approval; the operator's `approve` on the control socket",
    },
    HostOnly {
        topic: ApprovalHandled::TOPIC,
        why: "the upgrade center's answer to an approval, which `approve` reports to the operator",
    },
    HostOnly {
        topic: DiscardStagedSet::TOPIC,
        why: "drops the staged set and tells the portal nothing was installed; the operator's `discard` on the control socket or the console",
    },
    HostOnly {
        topic: StagedSetDiscarded::TOPIC,
        why: "the upgrade center's answer to a discard, which `discard` reports to the operator",
    },
    HostOnly {
        topic: UpgradeRequested::TOPIC,
        why: "starts a synchronisation, and with `retry` installs the quarantined set; the operator's `upgrade` on the control socket",
    },
    HostOnly {
        topic: UpgradeCommitted::TOPIC,
        why: "the host's verdict that a set on probation is installed; the upgrade center reports `installed` to the portal",
    },
    HostOnly {
        topic: UpgradeRolledBack::TOPIC,
        why: "the host's verdict that a set on probation was rolled back; the upgrade center reports it to the portal",
    },
    HostOnly {
        topic: RestartDeferred::TOPIC,
        why: "the host's word that busy leases defer a restart; the upgrade center reports it to the portal",
    },
    HostOnly {
        topic: SyncSoftware::TOPIC,
        why: "the portal's order to synchronise (`EVT_SYNC_SOFT`), as Portal Integration received it",
    },
    HostOnly {
        topic: GetEnvModulesResponse::TOPIC,
        why: "the portal's answer (`GET_ENV_MOD_RES`): the target set the upgrade center installs",
    },
    HostOnly {
        topic: GetEnvModulesRequest::TOPIC,
        why: "the box's question to the portal (`GET_ENV_MOD_REQ`), which Portal Integration sends as the box's own",
    },
    HostOnly {
        topic: ModuleStatusUpdate::TOPIC,
        why: "a status the portal's rollout acts on (`installed` advances it, a failure halts it); reported by the upgrade center only",
    },
    HostOnly {
        topic: PortalLinkChanged::TOPIC,
        why: "Portal Integration's word that the portal link is up or down; the upgrade center synchronises when it comes up",
    },
    HostOnly {
        topic: PortalOutboxState::TOPIC,
        why: "Portal Integration's count of frames the portal does not have yet, which the upgrade center waits on before a restart",
    },
    HostOnly {
        topic: PortalLinkState::TOPIC,
        why: "Portal Integration's answer whether the link is up; while it says down, the operator's `upgrade` is refused",
    },
    HostOnly {
        topic: UpgradeAnswered::TOPIC,
        why: "the upgrade center's answer to the operator's `upgrade` (started, joined, staged, refused), which the CLI prints",
    },
    HostOnly {
        topic: banalytics_portal_integration::PortalBlockDrill::TOPIC,
        why: "blocks Portal Integration's thread (a test build's drill for the watchdog); only the tests, over the control socket",
    },
];

/// Why a plugin's message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The topic steers the host or the upgrade center ([`HOST_ONLY`]).
    HostOnly(&'static HostOnly),
    /// The plugin kind did not declare the topic in `publishes`.
    Undeclared,
}

/// Whether a plugin whose kind declared `declared` may publish on `topic`.
pub(crate) fn check(declared: &[String], topic: &str) -> Result<(), Refusal> {
    if let Some(reserved) = HOST_ONLY.iter().find(|r| r.topic == topic) {
        return Err(Refusal::HostOnly(reserved));
    }
    if declared.iter().any(|d| d == topic) {
        Ok(())
    } else {
        Err(Refusal::Undeclared)
    }
}

/// The declared topics that no plugin may publish, for a warning when a
/// kind is loaded.
pub(crate) fn host_only_among(declared: &[String]) -> Vec<&str> {
    declared
        .iter()
        .map(String::as_str)
        .filter(|t| HOST_ONLY.iter().any(|r| r.topic == *t))
        .collect()
}

/// One plugin component's authority on the host bus: its kind's declared
/// topics, checked for each message, refusals counted on `board`.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    component: String,
    plugin: String,
    declared: Vec<String>,
}

impl Publisher {
    /// The authority of component `component` of `plugin`'s kind that
    /// declared `declared`.
    pub(crate) fn new(component: &str, plugin: &str, declared: &[String]) -> Publisher {
        Publisher {
            component: component.to_owned(),
            plugin: plugin.to_owned(),
            declared: declared.to_vec(),
        }
    }

    /// Whether the message on `topic` may be published; a refusal is
    /// counted on `board`, and logged when it is the first for this
    /// component and topic.
    pub(crate) fn admit(&self, topic: &str, board: &StatusBoard) -> bool {
        let Err(refusal) = check(&self.declared, topic) else {
            return true;
        };
        if board.refuse_publication(&self.component, topic) == 1 {
            let (component, plugin) = (&self.component, &self.plugin);
            match refusal {
                Refusal::HostOnly(r) => {
                    warn!(%component, %plugin, %topic, why = r.why, "message from plugin refused: no plugin may publish on this topic (further ones are only counted in status)")
                }
                Refusal::Undeclared => {
                    warn!(%component, %plugin, %topic, declared = %self.declared.join(","), "message from plugin refused: its kind does not declare this topic (further ones are only counted in status)")
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use banalytics_messages::{
        portal::PortalOutboxQuery,
        upgrade::{BusyLeaseReleased, BusyLeaseTaken},
    };

    use super::*;

    fn declared(topics: &[&str]) -> Vec<String> {
        topics.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn a_declared_topic_is_admitted_and_an_undeclared_one_refused() {
        let d = declared(&["sample.reply"]);
        assert_eq!(check(&d, "sample.reply"), Ok(()));
        assert_eq!(check(&d, "probe.ping"), Err(Refusal::Undeclared));
        assert_eq!(check(&[], "sample.reply"), Err(Refusal::Undeclared));
    }

    #[test]
    fn topics_that_steer_the_host_are_refused_even_when_declared() {
        for t in [
            RestartRequested::TOPIC,
            ApproveStagedSet::TOPIC,
            UpgradeRequested::TOPIC,
            GetEnvModulesResponse::TOPIC,
            SyncSoftware::TOPIC,
            UpgradeCommitted::TOPIC,
            UpgradeRolledBack::TOPIC,
            ModuleStatusUpdate::TOPIC,
        ] {
            let d = declared(&["sample.reply", t]);
            assert!(
                matches!(check(&d, t), Err(Refusal::HostOnly(r)) if r.topic == t),
                "{t} was not refused as host-only"
            );
        }
        assert_eq!(
            host_only_among(&declared(&["sample.reply", RestartRequested::TOPIC])),
            [RestartRequested::TOPIC]
        );
    }

    #[test]
    fn busy_leases_and_the_outbox_query_stay_allowed_when_declared() {
        let d = declared(&[
            BusyLeaseTaken::TOPIC,
            BusyLeaseReleased::TOPIC,
            PortalOutboxQuery::TOPIC,
        ]);
        for t in &d {
            assert_eq!(check(&d, t), Ok(()), "{t}");
        }
    }

    #[test]
    fn the_host_only_list_names_each_topic_once_with_a_reason() {
        let topics: BTreeSet<_> = HOST_ONLY.iter().map(|r| r.topic).collect();
        assert_eq!(topics.len(), HOST_ONLY.len());
        assert!(HOST_ONLY.iter().all(|r| !r.why.is_empty()));
    }

    /// The log's text, shared with the subscriber that writes it.
    #[derive(Clone, Default)]
    struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_refusal_is_counted_per_topic_and_logged_once_per_topic() {
        let board = StatusBoard::new();
        board.register("echo", "sample-echo", "id");
        let p = Publisher::new("echo", "libsample.so", &declared(&["sample.reply"]));
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(p.admit("sample.reply", &board));
            for _ in 0..3 {
                assert!(!p.admit(RestartRequested::TOPIC, &board));
            }
            assert!(!p.admit("probe.ping", &board));
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("no plugin may publish on this topic")
                && lines[0].contains(RestartRequested::TOPIC),
            "{text}"
        );
        assert!(
            lines[1].contains("does not declare this topic") && lines[1].contains("probe.ping"),
            "{text}"
        );
        let refused = board.component("echo").unwrap().refused_publications;
        assert_eq!(refused.get(RestartRequested::TOPIC), Some(&3));
        assert_eq!(refused.get("probe.ping"), Some(&1));
        assert_eq!(refused.get("sample.reply"), None);
    }
}
