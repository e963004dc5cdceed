//! `kubectl meshvm doctor`: parse the flags and hand over to `meshvm`.

use meshvm::args::DoctorArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: DoctorArgs = meshvm::cli::parse();
    meshvm::cli::start(&args.common);
    meshvm::cli::exit(meshvm::doctor::main(args).await)
}
