//! `kubectl_complete-meshvm`: shell completion for `kubectl meshvm …` (kubectl ≥ 1.26 calls it).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let words: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    meshvm::complete::main(&words).await
}
