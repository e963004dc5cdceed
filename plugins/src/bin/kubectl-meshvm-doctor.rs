//! `kubectl meshvm doctor`: parse the flags and hand over to `meshvm`.

use meshvm::args::DoctorArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: DoctorArgs = meshvm::dispatch::parse();
    meshvm::terminal::start(&args.common);
    meshvm::terminal::exit(meshvm::doctor::main(args).await)
}
