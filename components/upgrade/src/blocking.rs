//! File work off the actor's thread.
//!
//! An actor's arbiter is one thread for the whole component: a handler that
//! reads or writes files there stalls every other actor of the component.
//! Handlers that touch the disk run that work on tokio's blocking pool
//! through [`off_thread`] and await it.

/// Runs `work` on the blocking pool and returns its result. A panic in
/// `work` is resumed here, so it stays the calling actor's failure.
pub(crate) async fn off_thread<T, F>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_another_thread_and_its_panic_reaches_the_caller() {
        let caller = std::thread::current().id();
        assert_ne!(off_thread(|| std::thread::current().id()).await, caller);
        let failed = tokio::spawn(off_thread(|| -> () { panic!("disk on fire") }))
            .await
            .unwrap_err();
        let message = failed.into_panic();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"disk on fire"));
    }
}
