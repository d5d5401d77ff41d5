//! `tambo`: parse the command line, run, and pick the exit status (the only place that does).

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (cmd, rest) = match strs.split_first() {
        Some((cmd, rest)) => (*cmd, rest),
        None => ("tambo", &[][..]),
    };
    // argh's from_env exits 1 on a usage error; SPEC §4 wants 2 (1 means "wrong password").
    let args = match <tambo::cli::Args as argh::FromArgs>::from_args(&[cmd], rest) {
        Ok(args) => args,
        Err(early) => {
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", early.output);
                ExitCode::from(2)
            };
        }
    };
    // rustls-platform-verifier logs every certificate it cannot verify as an error; with
    // opportunistic STARTTLS that is normal, and the courier logs the TLS level it got. The
    // module filter comes first, so RUST_LOG=info keeps it and RUST_LOG naming the module
    // overrides it.
    //
    // The lines look like env_logger's default ones, without colour: a mail log goes to a file
    // or a journal. env_logger is built without its colour features, so a line is written as
    // is, with no escape-code stripping and no isatty() per line.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .filter_module("rustls_platform_verifier", log::LevelFilter::Off)
        .parse_env(env_logger::Env::default())
        .format(|buf, record| {
            use std::io::Write as _;
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
    match tambo::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tambo: {}", e.message);
            ExitCode::from(e.status)
        }
    }
}
