//! `wss://` to a portal whose certificate comes from a private CA: trusted
//! through `ca_file`, refused without it.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

mod common;

use std::time::Duration;

use banalytics_messages::portal::{PortalLinkChanged, SyncSoftware};
use banalytics_sdk::Bus;
use common::*;

#[actix_rt::test]
async fn a_private_ca_named_by_ca_file_is_trusted() {
    let (acceptor, ca_pem) = tls_portal_identity();
    let mut portal = Portal::start_with(Some(acceptor)).await;
    let home = home(Some("env-tls"));
    write(home.path(), "config/portal-ca.pem", &ca_pem);
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let mut syncs = bus.subscribe::<SyncSoftware>();
    let snippet = format!(
        "portal_url = \"{}\"\nca_file = \"config/portal-ca.pem\"\n",
        portal.url()
    );
    let running = start(home, &snippet, None, bus.clone());

    let mut conn = portal.next_conn().await;
    assert_eq!(conn.query["environmentUuid"], "env-tls");
    assert_eq!(
        next(&mut links).await,
        PortalLinkChanged { connected: true }
    );
    conn.send(r#"{"type":"EVT_SYNC_SOFT"}"#).await;
    assert_eq!(next(&mut syncs).await, SyncSoftware {});
    running.stop().await;
}

#[actix_rt::test]
async fn without_ca_file_a_private_ca_is_refused() {
    let (acceptor, _ca_pem) = tls_portal_identity();
    let mut portal = Portal::start_with(Some(acceptor)).await;
    let bus = Bus::new();
    let mut links = bus.subscribe::<PortalLinkChanged>();
    let running = start(
        home(Some("env-tls")),
        &format!("portal_url = \"{}\"\n", portal.url()),
        None,
        bus.clone(),
    );
    match portal.next(WITHIN).await {
        Some(Accepted::Refused(reason)) => assert!(reason.starts_with("tls:"), "{reason}"),
        Some(Accepted::Ws(_)) => panic!("the box accepted a certificate from an unknown CA"),
        None => panic!("the box never tried to connect"),
    }
    assert!(
        eventually(|| running.details()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("UnknownIssuer")))
        .await,
        "the refusal names the certificate fault: {}",
        running.details()
    );
    assert!(
        !arrives(&mut links, Duration::from_millis(500)).await,
        "the link never came up"
    );
    running.stop().await;
}
