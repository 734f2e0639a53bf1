//! Prints the full text of one of the queue's Lua scripts as Redis loads it: a library
//! (`FUNCTION LOAD`) of the process's settings (those of the default config), the helpers
//! the script calls, then its own text as the library's one function, named on the first
//! line. For `scripts/lua-cost.sh -s NAME`, which counts what one call of it costs Redis.
//! With `--plain`, the same code as a plain script (as a store without functions runs
//! it), for `scripts/claim-design-cost.sh`, which runs it inside a script of its own.
//!
//!     cargo run --release --example script_text -- claim [--plain]

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let plain = std::env::args().nth(2).as_deref() == Some("--plain");
    let queue = zenrelay::app::memory_queue(&zenrelay::config::Config::default());
    let scripts = queue.scripts();
    match scripts.iter().find(|(n, _)| *n == name) {
        Some((_, script)) => {
            if plain {
                print!("{}", script.plain());
            } else {
                print!("{}", script.source());
            }
            ExitCode::SUCCESS
        }
        None => {
            let names: Vec<&str> = scripts.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "usage: script_text NAME [--plain] (NAME one of: {}); got {name:?}",
                names.join(", ")
            );
            ExitCode::from(2)
        }
    }
}
