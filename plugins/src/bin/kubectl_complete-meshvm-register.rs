//! `kubectl_complete-meshvm-register`: completion for `kubectl meshvm register …` when kubectl found
//! `kubectl-meshvm-register` on PATH itself (the `cargo install` layout) and asks for this name.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut words: Vec<std::ffi::OsString> = vec!["register".into()];
    words.extend(std::env::args_os().skip(1));
    meshvm::complete::main(&words).await
}
