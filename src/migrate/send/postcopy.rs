//! `ckpt migrate --lazy`: post-copy, the final image's pages pushed to the running
//! copy (those it asks for first). See docs/ARCHITECTURE.md, "Migration".

use super::*;

/// The held ranges of the final image (the payloads of its plain page records), sent
/// after it: those the receiver asks for first, then the rest in order.
pub(super) struct Push {
    pub(super) file: std::fs::File,
    pub(super) ranges: Vec<(u64, u64)>,
    pub(super) sent: Vec<bool>,
    pub(super) left: usize,
    pub(super) next: usize,
    pub(super) asked: std::collections::VecDeque<usize>,
    /// The range being sent, how far, and whether the receiver asked for it.
    pub(super) at: Option<(usize, u64, bool)>,
    /// A range of the background push set aside for one asked for, and how far.
    pub(super) paused: Option<(usize, u64)>,
    pub(super) bytes: u64,
}

impl Push {
    pub(super) fn want(&mut self, payload: &[u8]) -> Result<(), String> {
        let off = payload
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| "a bad WANT message from the receiver".to_string())?;
        let i = self
            .ranges
            .binary_search_by_key(&off, |r| r.0)
            .map_err(|_| format!("the receiver asked for pages at byte {off}, never held"))?;
        if !self.sent[i] {
            self.asked.push_back(i);
        }
        Ok(())
    }

    /// Send one frame of pages.
    pub(super) fn step(&mut self, conn: &mut Conn) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        if let Some((i, done, false)) = self.at {
            if self.asked.iter().any(|&a| !self.sent[a] && a != i) {
                // What the receiver waits for goes first.
                self.paused = Some((i, done));
                self.at = None;
            }
        }
        let (i, done, asked) = match self.at {
            Some(x) => x,
            None => loop {
                match self.asked.pop_front() {
                    Some(i) if !self.sent[i] && self.paused.is_none_or(|p| p.0 != i) => {
                        break (i, 0, true);
                    }
                    Some(_) => continue,
                    None if self.paused.is_some() => {
                        let (i, done) = self.paused.take().unwrap_or_default();
                        break (i, done, false);
                    }
                    None => {
                        while self.sent.get(self.next).is_some_and(|s| *s) {
                            self.next += 1;
                        }
                        break (self.next, 0, false);
                    }
                }
            },
        };
        let Some(&(off, len)) = self.ranges.get(i) else {
            return Ok(());
        };
        // (The test brake slows the background push only, not what is asked for.)
        let most = if asked {
            crate::migrate::MAX_PAYLOAD - 8
        } else {
            crate::migrate::push_brake()
        };
        let n = (len - done).min(most as u64) as usize;
        let mut buf = vec![0u8; 8 + n];
        buf[..8].copy_from_slice(&(off + done).to_le_bytes());
        self.file
            .read_exact_at(&mut buf[8..], off + done)
            .map_err(|e| format!("cannot read the final image: {e}"))?;
        conn.send(Kind::Pages, &buf)?;
        self.bytes += n as u64;
        let done = done + n as u64;
        if done == len {
            self.sent[i] = true;
            self.left -= 1;
            self.at = None;
        } else {
            self.at = Some((i, done, asked));
        }
        Ok(())
    }
}

/// Nothing to read on the connection now.
pub(super) fn quiet(conn: &Conn) -> Result<bool, String> {
    use std::os::fd::AsRawFd;
    let mut fds = [libc::pollfd {
        fd: conn.stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let n = sys::uffd::poll(&mut fds, 0).map_err(|e| e.to_string())?;
    Ok(n == 0)
}

/// Send pages (those asked for first) until a frame other than WANT comes.
pub(super) fn pump(conn: &mut Conn, push: &mut Push) -> Result<crate::migrate::Frame, String> {
    loop {
        if push.left > 0 && quiet(conn)? {
            push.step(conn)?;
            continue;
        }
        let f = conn.recv()?;
        if f.kind == Kind::Want {
            push.want(&f.payload)?;
            continue;
        }
        return Ok(f);
    }
}

/// Send the final image without its page payloads, then those as the receiver plans,
/// stages, commits and runs the copy; `Ok` once every page is there.
pub(super) fn final_phase_lazy(
    pid: i32,
    path: &Path,
    k: u32,
    st: &mut State,
) -> Result<(), String> {
    let t = Instant::now();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let entries = crate::image::index::scan(&file).map_err(|e| e.to_string())?;
    let ranges: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e.tag == crate::image::tag::PAGES && e.len > 0)
        .map(|e| (e.data_off, e.len))
        .collect();
    send_image_held(&mut st.conn, path, k, &ranges)?;
    st.final_send = t.elapsed();
    point("migrate: final sent", &st.conn);
    crate::error::time_mark("migrate: final image sent (pages held)");
    let n = ranges.len();
    let mut push = Push {
        file,
        ranges,
        sent: vec![false; n],
        left: n,
        next: 0,
        asked: Default::default(),
        at: None,
        paused: None,
        bytes: 0,
    };
    // Until COMMIT: any failure leaves no copy there.
    let f = pump(&mut st.conn, &mut push)?;
    match f.kind {
        Kind::Staged => {}
        Kind::Error => {
            return Err(format!(
                "the receiver cannot restore it: {}",
                f.json::<Message>().map(|m| m.message).unwrap_or_default()
            ));
        }
        k => return Err(format!("the receiver sent {k:?} where STAGED was due")),
    }
    point("migrate: staged", &st.conn);
    crate::error::time_mark("migrate: staged");
    arm(pid, st);
    // From here on the copy may run, on the tree's connections too.
    st.copy_may_run = true;
    if let Err(e) = st.conn.send(Kind::Commit, b"") {
        disarm(st);
        st.copy_may_run = false;
        return Err(e);
    }
    point("migrate: commit sent", &st.conn);
    let mut committed_at = None;
    let r = (|| -> Result<(), String> {
        loop {
            let f = pump(&mut st.conn, &mut push)?;
            match f.kind {
                Kind::Committed if committed_at.is_none() => {
                    committed_at = Some(Instant::now());
                    st.committed_at = committed_at;
                    st.restored_pid = f.json::<Message>().map(|m| m.pid).unwrap_or(0);
                    handed_over(&mut st.tcp);
                    point("migrate: committed", &st.conn);
                    crate::error::time_mark("migrate: committed");
                }
                Kind::AllIn if committed_at.is_some() => return Ok(()),
                Kind::Error => {
                    return Err(format!(
                        "\u{0}{}",
                        f.json::<Message>().map(|m| m.message).unwrap_or_default()
                    ));
                }
                k => return Err(format!("the receiver sent {k:?} while pages were due")),
            }
        }
    })();
    st.post_copy = committed_at.map(|c| c.elapsed()).unwrap_or_default();
    st.post_copy_bytes = push.bytes;
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.starts_with('\u{0}') => {
            // The receiver failed, its copy gone (or, before COMMITTED, never run: a
            // restore that failed before its point of no return).
            disarm(st);
            st.copy_may_run = committed_at.is_some();
            Err(format!("the receiver failed to restore it: {}", &e[1..]))
        }
        Err(e) if push.left > 0 => {
            // Pages never reached the receiver: its copy (if it ran) cannot go on and
            // is killed there once it notices (within LAZY_TIMEOUT): wait that long,
            // then this one runs on.
            std::thread::sleep(crate::migrate::LAZY_GRACE);
            disarm(st);
            Err(format!(
                "{e}; {} page ranges had not been sent: the copy on the receiver cannot \
                 run without them and is killed there",
                push.left
            ))
        }
        Err(e) => {
            st.unresolved = Some(e.clone());
            Err(e)
        }
    }
}

/// Send the image at `path` as round `round` (the last), without the byte `ranges`.
pub(super) fn send_image_held(
    conn: &mut Conn,
    path: &Path,
    round: u32,
    ranges: &[(u64, u64)],
) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let id = track::image_identity(path).map_err(|e| e.to_string())?;
    conn.send_json(
        Kind::Image,
        &ImageHead {
            round,
            size,
            last: true,
            held: ranges.len() as u64,
        },
    )?;
    for c in ranges.chunks(crate::migrate::MAX_PAYLOAD / 16) {
        let mut b = Vec::with_capacity(c.len() * 16);
        for (o, l) in c {
            b.extend_from_slice(&o.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        conn.send(Kind::Held, &b)?;
    }
    // The bytes between the held ranges, in frames of at most MAX_PAYLOAD.
    let mut buf = Vec::with_capacity(crate::migrate::MAX_PAYLOAD);
    let mut at = 0u64;
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    for &(o, l) in ranges {
        if o > at {
            gaps.push((at, o));
        }
        at = o + l;
    }
    if at < size {
        gaps.push((at, size));
    }
    for (mut s, e) in gaps {
        while s < e {
            let room = crate::migrate::MAX_PAYLOAD - buf.len();
            let n = ((e - s) as usize).min(room);
            let old = buf.len();
            buf.resize(old + n, 0);
            f.read_exact_at(&mut buf[old..], s)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            s += n as u64;
            if buf.len() == crate::migrate::MAX_PAYLOAD {
                conn.send(Kind::Data, &buf)?;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        conn.send(Kind::Data, &buf)?;
    }
    conn.send_json(
        Kind::End,
        &ImageEnd {
            records: id.records,
            hash: id.hash,
        },
    )?;
    conn.expect(Kind::Received)?;
    Ok(size)
}
