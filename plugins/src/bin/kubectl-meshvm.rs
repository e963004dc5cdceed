//! `kubectl meshvm`: the dispatcher krew links. Finds the verb and runs `kubectl-meshvm-<verb>`.

use std::io::Write;
use std::process::{Command, ExitCode};

use meshvm::dispatch::{self, Route};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match dispatch::route(&args) {
        Route::Help => {
            let _ = dispatch::write_help(&mut std::io::stdout().lock());
            ExitCode::SUCCESS
        }
        Route::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "kubectl-meshvm {}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Route::Unknown(word) => {
            let verbs: Vec<&str> = meshvm::args::VERBS.iter().map(|(v, _)| *v).collect();
            let _ = writeln!(
                std::io::stderr(),
                "error: unknown verb {word:?} for \"kubectl meshvm\"\nhint: the verbs are {}; run `kubectl meshvm --help`",
                verbs.join(", ")
            );
            ExitCode::from(2)
        }
        Route::Verb { verb, args } => run(verb, &args),
    }
}

fn run(verb: &str, args: &[std::ffi::OsString]) -> ExitCode {
    let own = std::env::current_exe().ok();
    let Some(binary) = dispatch::locate(verb, own.as_deref()) else {
        let _ = writeln!(
            std::io::stderr(),
            "error: kubectl-meshvm-{verb} was found neither beside kubectl-meshvm nor on PATH\nhint: reinstall meshvm (`kubectl krew install meshvm` or `cargo install --path plugins`)"
        );
        return ExitCode::from(1);
    };
    let mut command = Command::new(&binary);
    command
        .args(args)
        .env(dispatch::VERSION_ENV, env!("CARGO_PKG_VERSION"));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = command.exec();
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot run {}: {err}",
            binary.display()
        );
        ExitCode::from(1)
    }
    #[cfg(not(unix))]
    match command.status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot run {}: {err}",
                binary.display()
            );
            ExitCode::from(1)
        }
    }
}
