//! Host benchmark: prints numbers, asserts nothing.
//!
//! `cargo run --release -p banalytics-sdk --example host_bench`
//!
//! 1. Restart latency under `immediate`: from sending the message whose
//!    handler panics to the reply of the next message from the fresh
//!    instance (the default panic hook is silenced; the host's hook logs).
//! 2. Error of the 10 s policy delay in real time (3 actors at once).
//! 3. Bus throughput between two components on two arbiters (threads).

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::time::{Duration, Instant};

use actix::prelude::*;
use banalytics_sdk::{
    status::State,
    supervisor::{supervise, SupervisorSpec},
    Bus, BusMessage, RestartPolicy, StatusBoard,
};
use serde::{Deserialize, Serialize};

struct Worker;
impl Actor for Worker {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Work;
impl Handler<Work> for Worker {
    type Result = ();
    fn handle(&mut self, _: Work, _: &mut Context<Self>) {}
}

#[derive(Message)]
#[rtype(result = "()")]
struct Explode;
impl Handler<Explode> for Worker {
    type Result = ();
    fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
        panic!("bench");
    }
}

#[derive(Serialize, Deserialize)]
struct Tick(u64);
impl BusMessage for Tick {
    const TOPIC: &'static str = "bench.tick";
}

fn spec(board: &StatusBoard, name: &str, policy: RestartPolicy) -> SupervisorSpec {
    board.register(name, "bench", name);
    board.set_component(name, State::Run, None);
    SupervisorSpec {
        component: name.into(),
        actor: "worker".into(),
        policy,
        board: board.clone(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn restart_latency() {
    let board = StatusBoard::new();
    let (addr, _c) = supervise(spec(&board, "r", RestartPolicy::Immediate), |_, _| Worker);
    addr.send(Work).await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..5000 {
        let t = Instant::now();
        assert!(addr.send(Explode).await.is_err());
        addr.send(Work).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "restart latency (immediate, panic -> next reply), n={}: median {:.1} us, p99 {:.1} us, max {:.1} us",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6
    );
}

async fn delay_error() {
    let board = StatusBoard::new();
    let mut runs = Vec::new();
    for i in 0..3 {
        let (addr, c) = supervise(
            spec(&board, &format!("d{i}"), RestartPolicy::After10s),
            |_, _| Worker,
        );
        runs.push(actix_rt::spawn(async move {
            let _c = c;
            let t = Instant::now();
            assert!(addr.send(Explode).await.is_err());
            addr.send(Work).await.unwrap();
            t.elapsed()
        }));
    }
    for r in runs {
        let took = r.await.unwrap();
        let error_ms = (took.as_secs_f64() - 10.0) * 1e3;
        println!(
            "10 s policy delay, real time: {:.3} s (error {error_ms:+.2} ms)",
            took.as_secs_f64()
        );
    }
}

fn bus_throughput() {
    const N: u64 = 2_000_000;
    let bus = Bus::new();
    let mut sub = bus.subscribe::<Tick>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let consumer = Arbiter::new();
    consumer.spawn(async move {
        let mut sum = 0u64;
        for _ in 0..N {
            sum += sub.recv().await.unwrap().0;
        }
        done_tx.send((Instant::now(), sum)).unwrap();
    });
    let producer = Arbiter::new();
    let (start_tx, start_rx) = std::sync::mpsc::channel();
    producer.spawn(async move {
        start_tx.send(Instant::now()).unwrap();
        for i in 0..N {
            bus.publish(Tick(i)).await;
        }
    });
    let start = start_rx.recv().unwrap();
    let (end, sum) = done_rx.recv().unwrap();
    assert_eq!(sum, N * (N - 1) / 2);
    let secs = (end - start).as_secs_f64();
    println!(
        "bus throughput between two components (two threads): {N} messages in {secs:.3} s = {:.0} messages/s",
        N as f64 / secs
    );
    producer.stop();
    consumer.stop();
}

fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    let system = System::new();
    system.block_on(async {
        restart_latency().await;
        delay_error().await;
    });
    bus_throughput();
}
