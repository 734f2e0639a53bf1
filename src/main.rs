//! The `zenrelay` binary.

/// The gateway allocates and frees many small buffers per request on every worker thread
/// (headers, JSON, script arguments, Lua strings); mimalloc's per-thread heaps serve them
/// without the arena lock contention and fragmentation of the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    zenrelay::cli::main()
}
