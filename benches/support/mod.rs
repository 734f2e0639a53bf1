//! What both benchmarks use: free ports, child processes and CPU accounting.

use std::process::Child;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
