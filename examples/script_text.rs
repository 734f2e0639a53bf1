//! Prints the full text of one of the queue's Lua scripts as Redis loads it: a library
//! (`FUNCTION LOAD`) of the process's settings (those of the default config), the helpers
//! the script calls, then its own text as the library's one function, named on the first
//! line. For `scripts/lua-cost.sh -s NAME`, which counts what one call of it costs Redis.
//!
//!     cargo run --release --example script_text -- claim

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let queue = zenrelay::app::memory_queue(&zenrelay::config::Config::default());
    let scripts = queue.scripts();
    match scripts.iter().find(|(n, _)| *n == name) {
        Some((_, script)) => {
            print!("{}", script.source());
            ExitCode::SUCCESS
        }
        None => {
            let names: Vec<&str> = scripts.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "usage: script_text NAME (one of: {}); got {name:?}",
                names.join(", ")
            );
            ExitCode::from(2)
        }
    }
}
