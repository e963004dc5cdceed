//! `kubectl meshvm bundle`: parse the flags and hand over to `meshvm`.

use meshvm::args::BundleArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: BundleArgs = meshvm::dispatch::parse();
    meshvm::terminal::start(&args.common);
    meshvm::terminal::exit(meshvm::bundle::main(args).await)
}
