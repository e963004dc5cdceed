//! `kubectl_complete-meshvm-bundle`: completion for `kubectl meshvm bundle …` when kubectl found
//! `kubectl-meshvm-bundle` on PATH itself (the `cargo install` layout) and asks for this name.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut words: Vec<std::ffi::OsString> = vec!["bundle".into()];
    words.extend(std::env::args_os().skip(1));
    meshvm::complete::main(&words).await
}
