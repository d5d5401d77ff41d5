//! `tambo-bench`: the SMTP load generator and the sink MTA of the benchmark (benches/README.md).
//!
//! They were asyncio Python before. On the 2-core machines the benchmark runs on, the two
//! Python processes took about a third of the machine during tambo's forwarding phase, so the
//! measured server competed with its own load for the CPU. Both are single-threaded smol
//! programs here, doing what the Python ones did, byte for byte on the wire.
//!
//! - `tambo-bench load`: sends N messages over C sessions and prints one JSON object.
//! - `tambo-bench sink`: accepts everything and keeps nothing; answers `count` and `reset` on
//!   stdin with the number of messages it has received; exits when stdin closes.

mod load;
mod reply;
mod sink;

use argh::FromArgs;

/// The benchmark's load generator and sink MTA.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Load(load::LoadArgs),
    Sink(sink::SinkArgs),
}

fn main() {
    let args: Args = argh::from_env();
    let outcome = match args.command {
        Command::Load(a) => load::run(a),
        Command::Sink(a) => sink::run(a),
    };
    if let Err(e) = outcome {
        eprintln!("tambo-bench: {e}");
        std::process::exit(1);
    }
}

/// Seconds on CLOCK_MONOTONIC, the clock of Python's `time.monotonic()` and
/// `time.perf_counter()` on Linux, so the caller can compare our instants with its own.
pub fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
