//! Who runs beside whom in the one test binary. The test harness runs tests
//! in parallel threads (one per core by default), now across all areas.
//! Most whole-system tests share the machine well, as they did with the
//! other tests of their own file; the fleet test (50 box processes, and
//! upper bounds on how fast they reconnect) needs it to itself, as it had
//! when it was the only test of its binary. So every test takes a permit
//! first, [`shared`] or [`alone`], and a tidy test below keeps it so.
//!
//! A permit is a counter, not a held lock: async tests keep it across
//! `.await`s, and a panicking test releases it on unwinding.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

static MACHINE: Machine = Machine {
    state: Mutex::new(State {
        sharing: 0,
        alone: false,
        waiting_alone: 0,
    }),
    changed: Condvar::new(),
};

struct Machine {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Tests running with a shared permit.
    sharing: usize,
    /// Whether a test runs alone.
    alone: bool,
    /// Tests waiting to run alone. While one waits no new test starts, so
    /// the running ones drain and it is not starved.
    waiting_alone: usize,
}

/// Permission to run; given back when dropped.
#[must_use = "the permit is given back when it is dropped"]
pub struct Permit {
    alone: bool,
}

fn lock() -> MutexGuard<'static, State> {
    MACHINE.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until no test runs or waits to run alone; other tests may run
/// beside this one.
pub fn shared() -> Permit {
    let state = lock();
    let mut state = MACHINE
        .changed
        .wait_while(state, |s| s.alone || s.waiting_alone > 0)
        .unwrap_or_else(PoisonError::into_inner);
    state.sharing += 1;
    Permit { alone: false }
}

/// Waits until no other test runs; none starts until this one ends.
pub fn alone() -> Permit {
    let mut state = lock();
    state.waiting_alone += 1;
    let mut state = MACHINE
        .changed
        .wait_while(state, |s| s.alone || s.sharing > 0)
        .unwrap_or_else(PoisonError::into_inner);
    state.waiting_alone -= 1;
    state.alone = true;
    Permit { alone: true }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = lock();
        if self.alone {
            state.alone = false;
        } else {
            state.sharing -= 1;
        }
        drop(state);
        MACHINE.changed.notify_all();
    }
}

/// The tidy check: in every module of this binary, the first statement of
/// every test takes a permit.
#[test]
fn every_test_takes_a_permit_first() {
    let _machine = crate::machine::shared();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/system");
    let mut tests = 0;
    let mut without = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the test folder") {
        let path = entry.expect("a folder entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a test module");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line != "#[test]" && !line.starts_with("#[tokio::test") {
                continue;
            }
            tests += 1;
            // The body starts after the line that ends the signature;
            // comments may come first.
            let first = (i..lines.len())
                .find(|&j| lines[j].trim_end().ends_with('{'))
                .and_then(|j| {
                    lines[j + 1..]
                        .iter()
                        .map(|l| l.trim())
                        .find(|l| !l.starts_with("//"))
                });
            if !first.is_some_and(|l| l.starts_with("let _machine = crate::machine::")) {
                without.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(tests > 40, "found only {tests} tests in {}", dir.display());
    assert!(
        without.is_empty(),
        "tests whose first statement is not `let _machine = crate::machine::shared();` (or `alone()`): {without:?}"
    );
}
