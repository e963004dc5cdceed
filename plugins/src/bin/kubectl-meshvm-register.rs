//! `kubectl meshvm register`: parse the flags and hand over to `meshvm`.

use meshvm::args::RegisterArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: RegisterArgs = meshvm::cli::parse();
    meshvm::cli::start(&args.common);
    meshvm::cli::exit(meshvm::register::main(args).await)
}
