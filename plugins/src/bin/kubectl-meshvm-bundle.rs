//! `kubectl meshvm bundle`: parse the flags and hand over to `meshvm`.

use meshvm::args::BundleArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: BundleArgs = meshvm::cli::parse();
    meshvm::cli::start(&args.common);
    meshvm::cli::exit(meshvm::bundle::main(args).await)
}
