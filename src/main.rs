//! The `zenrelay` binary.

fn main() -> std::process::ExitCode {
    zenrelay::cli::main()
}
