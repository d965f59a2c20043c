//! The destination of a migration (`ckpt receive`): takes the images of one
//! migration, verifies each as it comes and every link of their chain, restores the
//! last one, and tells the source when the tree is past its point of no return.
//!
//! The images are unnamed files (O_TMPFILE) in a private directory (by default the
//! temporary directory): nothing of them is left, however ckpt ends, even by SIGKILL.

use std::fs::File;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Conn, ImageEnd, ImageHead, Kind, Message, point};
use crate::restore::{self, HostView};

/// What `ckpt receive` restores with.
pub struct ReceiveOptions {
    pub view: HostView,
    pub new_pidns: bool,
    /// Where the images are kept (unnamed files) while they come in.
    pub dir: PathBuf,
    pub say: Option<super::Say>,
}

/// What a receive did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReceiveStats {
    /// The restored root's PID here.
    pub pid: i32,
    /// Images received (the rounds, the final one included).
    pub rounds: usize,
    pub bytes_received: u64,
    /// From the last image's arrival to the commit: merging the chain, plan, stage.
    pub restore_ms: f64,
}

/// One image received.
struct Received {
    file: File,
    id: ImageEnd,
}

impl Received {
    /// A path that opens it (it has no name).
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Take one migration from `listener` and restore it; returns the tree, running.
pub fn receive(
    listener: &TcpListener,
    opts: ReceiveOptions,
) -> Result<(restore::Launched, ReceiveStats), String> {
    let say = |m: &str| {
        if let Some(s) = &opts.say {
            s(m)
        }
    };
    let (stream, from) = listener
        .accept()
        .map_err(|e| format!("cannot accept a connection: {e}"))?;
    say(&format!("connection from {from}"));
    let mut conn = Conn::new(stream).map_err(|e| e.to_string())?;
    conn.handshake(false)?;
    let mut images: Vec<Received> = Vec::new();
    let mut bytes = 0u64;
    loop {
        let r = take_image(&mut conn, &opts.dir, &images);
        let (img, head) = match r {
            Ok(x) => x,
            Err(e) => {
                conn.send_error(&e);
                return Err(e);
            }
        };
        conn.send(Kind::Received, b"")?;
        bytes += head.size;
        say(&format!(
            "round {} received ({:.1} MiB){}",
            head.round,
            head.size as f64 / (1 << 20) as f64,
            if head.last { ", the last" } else { "" }
        ));
        images.push(img);
        point("receive: image received", &conn);
        if head.last {
            break;
        }
    }
    let t = std::time::Instant::now();
    let conn = Arc::new(Mutex::new(Some(conn)));
    let r = restore_last(&images, &opts, conn.clone());
    let Ok(mut g) = conn.lock() else {
        return Err("internal error: the connection's lock is poisoned".into());
    };
    let Some(c) = g.as_mut() else {
        return Err("internal error: the connection is gone".into());
    };
    match r {
        Ok(launched) => {
            point("receive: committed", c);
            // The source kills its tree on this (or, if it never arrives, keeps it
            // stopped).
            let _ = c.send_json(
                Kind::Committed,
                &Message {
                    message: String::new(),
                    pid: launched.root,
                },
            );
            let st = ReceiveStats {
                pid: launched.root,
                rounds: images.len(),
                bytes_received: bytes,
                restore_ms: t.elapsed().as_secs_f64() * 1e3,
            };
            Ok((launched, st))
        }
        Err(e) => {
            c.send_error(&e);
            Err(e)
        }
    }
}

/// Receive the next image into an unnamed file in `dir` and check it: its bytes have
/// the identity the source gave, and it is the child of the one before.
fn take_image(
    conn: &mut Conn,
    dir: &Path,
    before: &[Received],
) -> Result<(Received, ImageHead), String> {
    let f = conn.recv()?;
    let head: ImageHead = match f.kind {
        Kind::Image => f.json()?,
        Kind::Error => return Err(f.json::<Message>()?.message),
        k => return Err(format!("the source sent {k:?} where an image was due")),
    };
    if head.round as usize != before.len() {
        return Err(format!(
            "the source sent round {} where round {} was due",
            head.round,
            before.len()
        ));
    }
    let file = crate::restore::chain::unnamed_file(&dir.join("image"))
        .map_err(|e| format!("cannot keep the image in {}: {e}", dir.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
    let mut got = 0u64;
    while got < head.size {
        let d = conn.expect(Kind::Data)?;
        got += d.payload.len() as u64;
        if got > head.size {
            return Err("the source sent more bytes than the image has".into());
        }
        w.write_all(&d.payload)
            .map_err(|e| format!("cannot keep the image in {}: {e}", dir.display()))?;
    }
    w.flush()
        .map_err(|e| format!("cannot keep the image in {}: {e}", dir.display()))?;
    drop(w);
    let end: ImageEnd = conn.expect(Kind::End)?.json()?;
    let img = Received { file, id: end };
    let id = crate::dump::track::image_identity(&img.path()).map_err(|e| e.to_string())?;
    if (id.records, id.hash) != (img.id.records, img.id.hash) {
        return Err(format!(
            "round {}: the image received has hash {:016x} ({} records), the source sent \
             one with {:016x} ({} records)",
            head.round, id.hash, id.records, img.id.hash, img.id.records
        ));
    }
    let meta = crate::restore::chain::meta_of(&img.path()).map_err(|e| e.to_string())?;
    match (&meta.parent, before.last()) {
        (None, None) => {}
        (Some(p), Some(prev)) if (p.records, p.hash) == (prev.id.records, prev.id.hash) => {}
        (Some(_), Some(_)) => {
            return Err(format!(
                "round {}: the image is not the child of round {}",
                head.round,
                head.round - 1
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "round {}: a full image where a delta was due",
                head.round
            ));
        }
        (Some(_), None) => {
            return Err("round 0: a delta where the full image was due".into());
        }
    }
    Ok((img, head))
}

/// Merge the chain (every link verified), plan, stage, and commit once the source
/// says so.
fn restore_last(
    images: &[Received],
    opts: &ReceiveOptions,
    conn: Arc<Mutex<Option<Conn>>>,
) -> Result<restore::Launched, String> {
    let Some(last) = images.last() else {
        return Err("no image was received".into());
    };
    let resolve = |_: usize, p: &crate::model::ParentImage| {
        images
            .iter()
            .find(|i| (i.id.records, i.id.hash) == (p.records, p.hash))
            .map(|i| i.path())
    };
    let full = match restore::chain::materialize_with(&last.path(), &resolve, &opts.dir) {
        Ok(Some(f)) => f,
        Ok(None) => last.file.try_clone().map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    let input = BufReader::with_capacity(64 << 10, full);
    let prepared = restore::prepare(input, &opts.view).map_err(|e| e.to_string())?;
    // ckpt cannot execute itself again here (the image is not a file of its own).
    prepared
        .take_randomization(false)
        .map_err(|e| e.to_string())?;
    if let Ok(g) = conn.lock() {
        if let Some(c) = g.as_ref() {
            point("receive: planned", c);
        }
    }
    // The connections are locked here too until the copy runs (a table of ours that
    // goes with this process, however it ends; within one network namespace the
    // source's lock is there as well): restore builds them in repair mode, takes the
    // lock over at its commit and releases it once the tree runs; ours goes after.
    let meta = restore::chain::meta_of(&last.path()).map_err(|e| e.to_string())?;
    let conns = crate::kinds::ns::locked_connections(&meta);
    let lock = crate::sys::netlock::Handover::hold(&conns)
        .map_err(|e| format!("cannot lock the TCP connections here: {e}"))?;
    let lock = Arc::new(Mutex::new(lock));
    let hook_lock = lock.clone();
    let hook_conn = conn.clone();
    let me = std::process::id();
    let hook: restore::RestoreHook = Arc::new(move |step| {
        let restore::RestoreStep::Staged { .. } = step;
        let Ok(mut g) = hook_conn.lock() else {
            return Err("internal error: the connection's lock is poisoned".into());
        };
        let Some(c) = g.as_mut() else {
            return Err("internal error: the connection is gone".into());
        };
        c.send(Kind::Staged, b"")?;
        point("receive: staged", c);
        let r = c
            .expect(Kind::Commit)
            .map(|_| ())
            .map_err(|e| format!("the source did not say to commit: {e}"));
        // With --new-pidns this runs in the namespace's init, a forked child that
        // stays as the tree's reaper: its copy of the connection goes, so that the
        // source sees the end of the connection when we end.
        if std::process::id() != me {
            g.take();
            // Its copy of the lock's socket too: the lock must go with us.
            if let Ok(mut l) = hook_lock.lock() {
                drop(l.take());
            }
        }
        r
    });
    let r = prepared
        .with_hook(hook)
        .launch(opts.new_pidns)
        .map_err(|e| e.to_string());
    if let Ok(mut l) = lock.lock() {
        if let Some(l) = l.take() {
            l.release();
        }
    }
    r
}
