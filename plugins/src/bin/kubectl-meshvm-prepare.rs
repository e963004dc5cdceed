//! `kubectl meshvm prepare`: parse the flags and hand over to `meshvm`.

use meshvm::args::PrepareArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: PrepareArgs = meshvm::dispatch::parse();
    meshvm::terminal::start(&args.common);
    meshvm::terminal::exit(meshvm::prepare::main(args).await)
}
