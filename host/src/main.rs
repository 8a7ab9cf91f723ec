/// The binary allocates with mimalloc: a run's sandbox, its store transaction
/// and its history row make many short-lived allocations on two or more
/// threads, where the system allocator spends a measurable share of the run
/// consolidating and locking (see BENCHMARKS.md). The library leaves the
/// choice to the binary that links it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use quartzite::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it sends the traces still queued.
    let _telemetry = cli::init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quartzite: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    runtime.block_on(cli::run(cli))
}
