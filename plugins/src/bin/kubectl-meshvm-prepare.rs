//! `kubectl meshvm prepare`: parse the flags and hand over to `meshvm`.

use meshvm::args::PrepareArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: PrepareArgs = meshvm::cli::parse();
    meshvm::cli::start(&args.common);
    meshvm::cli::exit(meshvm::prepare::main(args).await)
}
