//! `ckpt demo`: checkpoint and restore a sample workload, showing that it continues.

use std::io::Write;
use std::time::{Duration, Instant};

use ckpt::dump::{self, DumpOptions, Output};
use ckpt::{host, restore};

const STEPS: u64 = 12;

/// The workload: a loop that keeps state on the heap and the stack and prints one line
/// per step; its output depends on every previous step, so a restore that lost or
/// changed anything shows.
pub fn workload(steps: u64) -> i32 {
    host::close_inherited_fds();
    let mut history: Vec<u64> = Vec::with_capacity(1024);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let t = Instant::now();
    for i in 1..=steps {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            history.push(x);
        }
        let sum = history.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        println!(
            "  [workload pid {}] step {i:>2}/{steps}: {} values, checksum {sum:016x}",
            std::process::id(),
            history.len()
        );
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(150));
    }
    let _ = t;
    0
}

pub fn run() -> i32 {
    if !host::is_root() {
        say!("ckpt demo: must run as root (ptrace and PID restore need it)");
        return 1;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            say!("ckpt demo: cannot find own executable: {e}");
            return 1;
        }
    };
    println!("ckpt demo: starting a workload that runs {STEPS} steps...");
    // The workload writes into a pipe that we relay: its stdout then leads outside it
    // (like a terminal), and after restore it is connected to our own stdout.
    let mut child = match std::process::Command::new(&exe)
        .args(["demo-workload", &STEPS.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            say!("ckpt demo: cannot start the workload: {e}");
            return 1;
        }
    };
    let pid = child.id() as i32;
    let relay = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::stdout());
        })
    });
    std::thread::sleep(Duration::from_millis(150 * 5 + 60));
    let dir = std::env::temp_dir().join(format!("ckpt-demo-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let image = dir.join("workload.img");
    let st = match dump::dump(pid, Output::Path(image.clone()), &DumpOptions::default()) {
        Ok(st) => st,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            say!("ckpt demo: dump failed: {e}");
            return 1;
        }
    };
    let status = child.wait();
    if let Some(r) = relay {
        let _ = r.join();
    }
    println!(
        "ckpt demo: checkpointed PID {pid} into {} ({:.1} MiB) in {:.1} ms (frozen {:.1} ms); the process was then killed ({})",
        image.display(),
        st.image_bytes as f64 / (1 << 20) as f64,
        st.total.as_secs_f64() * 1e3,
        st.frozen.as_secs_f64() * 1e3,
        status.map(|s| s.to_string()).unwrap_or_default()
    );
    println!("ckpt demo: nothing runs now. Restoring it from the image...");
    std::thread::sleep(Duration::from_millis(500));
    let file = match std::fs::File::open(&image) {
        Ok(f) => f,
        Err(e) => {
            say!("ckpt demo: {e}");
            return 1;
        }
    };
    let view = match restore::HostView::detect(None, ckpt::arch::CpuPolicy::default()) {
        Ok(v) => v,
        Err(e) => {
            say!("ckpt demo: {e}");
            return 1;
        }
    };
    let rs = match restore::restore(std::io::BufReader::with_capacity(64 << 10, file), &view) {
        Ok(r) => r,
        Err(e) => {
            say!("ckpt demo: restore failed: {e}");
            return 1;
        }
    };
    println!(
        "ckpt demo: restored PID {} in {:.1} ms; it continues where it was:",
        rs.pid,
        rs.total.as_secs_f64() * 1e3
    );
    let code = match host::wait_child(rs.pid) {
        Ok(s) if libc::WIFEXITED(s) => libc::WEXITSTATUS(s),
        Ok(_) => 1,
        Err(e) => {
            say!("ckpt demo: {e}");
            1
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if code == 0 {
        println!("ckpt demo: the restored workload finished all {STEPS} steps (exit status 0).");
    } else {
        println!("ckpt demo: the restored workload exited with status {code}.");
    }
    code
}
