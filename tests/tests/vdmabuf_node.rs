//! `qemu-sink capture --source vdmabuf=NODE` on nodes that do not speak the
//! ABI, on the host (no lab): a node that is always readable yet gives 0
//! bytes (`/dev/null`), or garbage then end of file (a regular file), must
//! not spin a core, crash, or keep the sink from exiting on SIGTERM.
//!
//! Starts: the qemu-sink binary (software rendering).

use std::time::{Duration, Instant};

use tests::sink_run::Sink;
use tests::TempDir;

/// User plus system CPU time of `pid` so far (from /proc/PID/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn a_node_that_reads_nothing_or_garbage_does_not_spin_the_sink() {
    let dir = TempDir::new("vdmabuf-node");
    let garbage = dir.path("garbage");
    // One whole event (header only, size 0), then a header claiming 4096
    // bytes of private data: unframable; then end of file forever.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&7u64.to_ne_bytes());
    bytes.extend_from_slice(&[0; 16]);
    bytes.extend_from_slice(&8u64.to_ne_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&4096i32.to_ne_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&garbage, &bytes).unwrap();

    for node in ["/dev/null", garbage.to_str().unwrap()] {
        let out = dir.path("out.png");
        let source = format!("vdmabuf={node}");
        let sink = Sink::capture(&out, &["--source", &source, "--render-device", "software"]);
        assert!(
            sink.wait_for_log("reading vdmabuf export events", Duration::from_secs(60)),
            "{node}: the sink never opened the node"
        );
        let pid = sink.pid();
        let (cpu0, wall0) = (cpu_time(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        let (cpu, wall) = (cpu_time(pid) - cpu0, wall0.elapsed());
        // No frame came, so capture exits non-zero; it must exit, though.
        let (status, log) = sink.terminate(Duration::from_secs(10));
        assert!(
            log.contains("no frame received"),
            "{node}: {status}; its log:\n{log}"
        );
        assert!(
            cpu < wall / 10,
            "{node}: the sink used {cpu:?} of CPU in {wall:?} (a busy loop); its log:\n{log}"
        );
        assert_eq!(
            log.matches("polling it less often").count(),
            1,
            "{node}: one line says the node misbehaves; its log:\n{log}"
        );
    }
}
