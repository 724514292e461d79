//! `treectl`: the command-line tool.

mod cli;
mod cli_sysroot;
mod cmd;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

// Keeps freed memory for the next allocation: a pull or an import
// allocates and frees a buffer per object, and glibc's malloc returns large
// ones to the kernel, to fault them in zeroed again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for "the command ran and found problems" (fsck).
pub const EXIT_FINDINGS: u8 = 3;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `treectl log | head` is not an error.
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
