//! The `keyscore` command line: parse, set up logging, dispatch.
use clap::Parser;

/// jemalloc for Rust and, unprefixed, for librdkafka's C allocations: messages allocated on the
/// pipeline thread and freed on the producer's polling thread do not contend on glibc's arena
/// locks.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = keyscore::cli::Cli::parse();
    keyscore::telemetry::init(cli.log_format, cli.default_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `keyscore list | head`: the reader has what it wanted.
        Err(err) if keyscore::cli::is_closed_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", keyscore::telemetry::chain_text(err.chain()));
            if let Some(failed) = err.downcast_ref::<keyscore::cli::Failed>() {
                return std::process::ExitCode::from(failed.status);
            }
            std::process::ExitCode::FAILURE
        }
    }
}
