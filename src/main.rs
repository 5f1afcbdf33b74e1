//! The `imprint-gateway` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    imprint_gateway::cli::main()
}
