//! What the host says after a restart (committed, rolled back, the
//! restart deferred for busy components), passed on to the portal and
//! `status`.

use actix::prelude::*;
use banalytics_messages::{
    portal::{GetEnvModulesRequest, ModuleStatus},
    upgrade::{RestartDeferred, UpgradeCommitted, UpgradeRolledBack},
};
use banalytics_sdk::FromBus;
use tracing::{info_span, Instrument};

use super::{
    report::{publish_report, status, Report},
    target::core_module,
    Peers, PortalLink,
};

impl Handler<FromBus<RestartDeferred>> for PortalLink {
    type Result = ResponseFuture<()>;

    /// The host waits for busy components before the restart that applies
    /// the set staged here: `status` and the portal (the staged modules'
    /// `downloaded` status) hear what for and until when.
    fn handle(
        &mut self,
        FromBus(deferred): FromBus<RestartDeferred>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let Some(staged) = self.report.borrow().staged.clone() else {
            return Box::pin(async {});
        };
        let until = jiff::Timestamp::from_millisecond(deferred.until_ms as i64)
            .map_or_else(|_| format!("{} ms", deferred.until_ms), |t| t.to_string());
        let message = format!(
            "the restart waits for busy components ({}), at most until {until}",
            deferred.holders.join(", ")
        );
        {
            let mut r = self.report.borrow_mut();
            r.waits_for = Some(message.clone());
            r.busy = Some((message.clone(), deferred.until_ms));
        }
        publish_report(&self.peers, &self.report.borrow());
        let peers = self.peers.clone();
        let span = info_span!("portal_link.restart_deferred");
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    for module in &staged.modules {
                        let message = Some(message.clone());
                        status(
                            &peers,
                            &env,
                            Some(module),
                            ModuleStatus::Downloaded,
                            message,
                        )
                        .await;
                    }
                }
            }
            .instrument(span),
        )
    }
}

impl Handler<FromBus<UpgradeCommitted>> for PortalLink {
    type Result = ResponseFuture<()>;
    fn handle(
        &mut self,
        FromBus(committed): FromBus<UpgradeCommitted>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let peers = self.peers.clone();
        let span = info_span!("portal_link.upgrade_committed");
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    // The core may have changed with the set: the portal hears
                    // which core runs now. The host released `installed` to
                    // the outbox already, so the two may arrive in either
                    // order. The answer is not awaited (and ignored).
                    let (core_module, core_build) = core_module(&peers.layout);
                    peers
                        .bus
                        .publish(GetEnvModulesRequest {
                            environment_uuid: env.clone(),
                            core_module,
                            core_build,
                        })
                        .await;
                    let report = Report::new(&env, None, ModuleStatus::Installed, None);
                    verdict(&peers, report, committed.status_seq).await;
                }
            }
            .instrument(span),
        )
    }
}

impl Handler<FromBus<UpgradeRolledBack>> for PortalLink {
    type Result = ResponseFuture<()>;
    fn handle(
        &mut self,
        FromBus(rb): FromBus<UpgradeRolledBack>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let peers = self.peers.clone();
        let span = info_span!("portal_link.upgrade_rolled_back", reason = %rb.reason);
        Box::pin(
            async move {
                if let Ok(Some(env)) = peers.layout.environment_uuid() {
                    let report = Report::new(
                        &env,
                        None,
                        ModuleStatus::InstallationCancelled,
                        Some(rb.reason.clone()),
                    );
                    verdict(&peers, report, rb.status_seq).await;
                }
            }
            .instrument(span),
        )
    }
}

/// Reports a verdict of the host: the host kept it in the outbox already
/// under `seq` (it holds it across the commit or rollback, so a kill
/// cannot lose it), and it is only announced; without a `seq` it is
/// reported like any status.
async fn verdict(peers: &Peers, mut report: Report, seq: Option<u64>) {
    match seq {
        Some(seq) => {
            report.update.seq = Some(seq);
            report.announce(peers).await;
        }
        None => report.send(peers).await,
    }
}
