//! What both benchmarks use: free ports, child processes and CPU accounting.

use std::process::Child;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on 127.0.0.1:`port`, for at most `timeout`;
/// panics naming `what` after that.
pub fn wait_for_port(port: u16, timeout: std::time::Duration, what: &str) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) a process has used so far, in seconds; `None` is this process.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let user: f64 = rest.get(11)?.parse().ok()?;
            let system: f64 = rest.get(12)?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU used by a set of processes over a stretch of the run.
pub struct CpuMeter {
    pids: Vec<Option<u32>>,
    start: Vec<f64>,
}

impl CpuMeter {
    /// Starts measuring the processes `pids` (`None` is this process).
    pub fn start(pids: &[Option<u32>]) -> Self {
        CpuMeter {
            pids: pids.to_vec(),
            start: pids.iter().map(|&p| cpu_seconds(p)).collect(),
        }
    }

    /// Microseconds of CPU per unit of work since the start, one figure per process.
    pub fn per(&self, units: f64) -> Vec<f64> {
        self.pids
            .iter()
            .zip(&self.start)
            .map(|(&p, s)| (cpu_seconds(p) - s) * 1e6 / units.max(1.0))
            .collect()
    }
}

/// What one `wrk` run printed.
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub done: f64,
    /// Median latency in milliseconds (with `--latency`; NaN otherwise).
    pub p50_ms: f64,
}

/// Reads `wrk`'s output; panics on non-2xx answers, which would void the figures.
pub fn parse_wrk(url: &str, text: &str) -> WrkRun {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        panic!("wrk saw errors against {url}: {line}\n{text}");
    }
    let lines = || text.lines().map(str::trim);
    // The `at`-th word of the first line starting with `prefix`.
    let word = |prefix: &str, at: usize| {
        lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(at))
    };
    let done = lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next());
    WrkRun {
        rps: word("Requests/sec:", 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        done: done.and_then(|v| v.parse().ok()).unwrap_or(0.0),
        p50_ms: word("50%", 1).and_then(parse_ms).unwrap_or(f64::NAN),
    }
}

/// A `wrk` duration (`812.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn parse_ms(v: &str) -> Option<f64> {
    if let Some(us) = v.strip_suffix("us") {
        us.parse::<f64>().ok().map(|x| x / 1000.0)
    } else if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().ok()
    } else {
        v.strip_suffix('s')?.parse::<f64>().ok().map(|x| x * 1000.0)
    }
}
