//! The `rusd` binary. With no subcommand it serves, taking etcd's flags and `ETCD_*`
//! environment variables, so it can stand in for `etcd` in scripts and test suites.

mod bench;
mod cli;
mod config_file;
mod serve;
mod snapshot;

use clap::Parser;

/// mimalloc: the server's request path allocates small buffers per request on every thread;
/// glibc's malloc spent ~13% of the server's CPU under a 64-client put load. Built without
/// transparent huge pages (`no_thp`, see Cargo.toml): a fault on a purged huge page zeroed
/// 2 MiB in the middle of a request and stalled every client for milliseconds.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::normalize_args(std::env::args_os());
    let cli = cli::Cli::parse_from(args);
    let result = match cli.command {
        Some(cli::Command::Snapshot(cmd)) => snapshot::run(cmd),
        Some(cli::Command::Serve(flags)) => serve::run(*flags),
        Some(cli::Command::Bench(args)) => bench::run(*args),
        None => {
            if cli.version {
                print_version();
                return std::process::ExitCode::SUCCESS;
            }
            serve::run(*cli.serve)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rusd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_version() {
    println!("etcd Version: {}", rusd_server::VERSION_SERVER);
    println!("Git SHA: rusd");
    println!("Go Version: (rusd is written in Rust)");
    println!(
        "Go OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("rusd Version: {}", rusd_server::VERSION_RUSD);
}
