//! What the end-to-end benches record per timed iteration: wall time, and the CPU used
//! by this process and by the nats-server processes it started (from /proc).

use std::time::Duration;

/// One timed iteration: how long it took, and the CPU the client (this process) and
/// the servers used meanwhile.
pub struct Run {
    pub elapsed: Duration,
    pub client_cpu: Option<Duration>,
    pub server_cpu: Option<Duration>,
}

/// Measures one iteration: CPU of this process and of `servers` before and after `work`.
pub async fn timed(servers: &[u32], work: impl Future<Output = ()>) -> Run {
    let client = std::process::id();
    let servers_cpu = || -> Option<Duration> { servers.iter().map(|&p| cpu_time(p)).sum() };
    let (client_before, servers_before) = (cpu_time(client), servers_cpu());
    let start = std::time::Instant::now();
    work.await;
    let elapsed = start.elapsed();
    let used = |before: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(before?));
    Run {
        elapsed,
        client_cpu: used(client_before, cpu_time(client)),
        server_cpu: used(servers_before, servers_cpu()),
    }
}

/// CPU time (user + system) process `pid` has used so far, all its threads together;
/// `None` where /proc is not available.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    // utime and stime (fields 14 and 15 of the file) in clock ticks of 1/100 s (USER_HZ).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The pids of the nats-servers this process started, found by their parent pid; empty
/// where /proc is not available.
pub fn child_servers() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == me && stat.contains("(nats-server)")).then_some(pid)
        })
        .collect()
}

/// Mean microseconds of CPU per message over `runs` of `messages` each, as text.
pub fn per_message(runs: &[&Run], messages: u64, cpu: fn(&Run) -> Option<Duration>) -> String {
    let total: Option<Duration> = runs.iter().map(|r| cpu(r)).sum();
    match total {
        Some(t) if !runs.is_empty() => {
            format!(
                "{:.2}",
                t.as_secs_f64() * 1e6 / (messages * runs.len() as u64) as f64
            )
        }
        _ => "-".into(),
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
