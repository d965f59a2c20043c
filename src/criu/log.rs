//! The `criu` front end's log: CRIU's `-o FILE` / `log_file` (in the work directory)
//! with `-v N` / `log_level` (0 nothing but errors... 4 everything), or standard error.
//! Every failure is one line with "Error" in it: runc and CRaC search the log for them.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Cheap to clone: the copies write to the same file (hooks the engine calls log too).
#[derive(Clone)]
pub struct Log(Arc<Inner>);

struct Inner {
    file: Option<Mutex<std::fs::File>>,
    level: i32,
    /// Errors also go to standard error (the command line; not `swrk`, whose standard
    /// error is the caller's).
    errors_to_stderr: bool,
    t0: Instant,
}

impl Log {
    /// Everything to standard error (before a log file is known).
    pub fn stderr() -> Self {
        Log(Arc::new(Inner {
            file: None,
            level: 2,
            errors_to_stderr: true,
            t0: Instant::now(),
        }))
    }

    /// `name` in `dir` (created, truncated) at `level`; standard error if `name` is
    /// None or "-".
    pub fn open(
        dir: &Path,
        name: Option<&str>,
        level: i32,
        errors_to_stderr: bool,
    ) -> Result<Self, String> {
        let file = match name {
            None | Some("-") => None,
            Some(n) => {
                let p = dir.join(n);
                let f = std::fs::File::create(&p)
                    .map_err(|e| format!("cannot create the log file {}: {e}", p.display()))?;
                Some(Mutex::new(f))
            }
        };
        Ok(Log(Arc::new(Inner {
            errors_to_stderr: errors_to_stderr || file.is_none(),
            file,
            level,
            t0: Instant::now(),
        })))
    }

    fn line(&self, level: i32, tag: &str, msg: &str) {
        let this = &self.0;
        if level > this.level && level > 1 {
            return;
        }
        let t = this.t0.elapsed();
        let text = format!("({:02}.{:06}) {tag}{msg}\n", t.as_secs(), t.subsec_micros());
        if let Some(f) = &this.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(text.as_bytes());
            }
        }
        if this.file.is_none() || (level <= 1 && this.errors_to_stderr) {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }

    /// A failure: "Error (ckpt): MSG".
    pub fn error(&self, msg: &str) {
        self.line(1, "Error (ckpt): ", msg);
    }

    pub fn warn(&self, msg: &str) {
        self.line(2, "Warn  (ckpt): ", msg);
    }

    pub fn info(&self, msg: &str) {
        self.line(3, "", msg);
    }

    pub fn debug(&self, msg: &str) {
        self.line(4, "", msg);
    }
}
