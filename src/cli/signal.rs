//! Shutting down on SIGINT or SIGTERM, for the long-running subcommands.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `cancel` on SIGINT or SIGTERM.
pub(crate) fn cancel_on_signal(cancel: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminated = term.recv();
        #[cfg(not(unix))]
        let terminated = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "Shutting down."),
            _ = terminated => info!(signal = "SIGTERM", "Shutting down."),
            _ = cancel.cancelled() => return,
        }
        cancel.cancel();
    });
    Ok(())
}
