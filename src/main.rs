//! The `dbsweep` binary: parse arguments, run the command, map the outcome to an exit code.

use clap::Parser;
use dbsweep::{cli, exit};

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { exit::BAD_INPUT } else { exit::OK });
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = cli::run(args, &env, &mut stdout) {
        eprintln!("error: {err}");
        std::process::exit(exit::code(&err));
    }
}
