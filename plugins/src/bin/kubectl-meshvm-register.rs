//! `kubectl meshvm register`: parse the flags and hand over to `meshvm`.

use meshvm::args::RegisterArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: RegisterArgs = meshvm::dispatch::parse();
    meshvm::terminal::start(&args.common);
    meshvm::terminal::exit(meshvm::register::main(args).await)
}
