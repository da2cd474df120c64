//! SIGINT/SIGTERM handling for `streamsql run`.
//!
//! Signals are watched on a thread of their own with its own small runtime, so a
//! busy engine runtime (one thread by default) cannot delay them. The first signal
//! fires the shutdown latch (the engine stops the running statement within `grace`);
//! the second exits at once with code 130.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::shutdown::Shutdown;

/// Starts watching for signals. Handlers are registered before this returns, so a
/// signal arriving at any later point is seen.
pub(super) fn install(shutdown: Shutdown, grace: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal runtime: {e}"))?;
    let (mut interrupt, mut terminate) = {
        let _guard = runtime.enter();
        let register = |kind| signal(kind).map_err(|e| format!("cannot watch signals: {e}"));
        (
            register(SignalKind::interrupt())?,
            register(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let mut seen = 0;
                loop {
                    let name = tokio::select! {
                        _ = interrupt.recv() => "SIGINT",
                        _ = terminate.recv() => "SIGTERM",
                    };
                    seen += 1;
                    if seen == 1 {
                        eprintln!(
                            "received {name}: stopping the inputs; rows read get up to {}s to \
                             be confirmed (send it again to abort)",
                            grace.as_secs_f64()
                        );
                        tracing::info!(signal = name, "shutdown requested");
                        shutdown.trigger();
                    } else {
                        eprintln!("received {name} (second signal): aborting");
                        std::process::exit(130);
                    }
                }
            })
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
