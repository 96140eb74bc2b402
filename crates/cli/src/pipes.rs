//! `nurture validate --format json | head` must end quietly when `head` stops reading.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe returns an error and `println!`
//! panics on it (exit status 101). Commands that print and end get SIGPIPE's default
//! back, so they end as any Unix tool does (status 141 in the shell). The serving
//! commands (`run`, `serve`, `worker`, `bench`) keep it ignored: a client that closes
//! its connection must not stop the process.

/// Restores SIGPIPE's default action (end the process quietly) for this process.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn die_quietly_on_closed_pipe() {
    // SAFETY: called first thing in `main`, before any thread starts; SIG_DFL is a valid
    // disposition for SIGPIPE and no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Elsewhere a closed pipe is an error as any other.
#[cfg(not(unix))]
pub(crate) fn die_quietly_on_closed_pipe() {}
