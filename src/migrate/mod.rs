//! Moving a running process to another host: `ckpt migrate PID HOST:PORT` (the
//! source, `send.rs`) to `ckpt receive --listen ADDR:PORT` (the destination,
//! `receive.rs`), pre-copy over one TCP connection.
//!
//! The protocol is ours, framed (this file): every message is
//! `magic u32 | kind u8 | length u32 | payload | xxh3(kind, length, payload) u64`
//! (little-endian), the payload at most [`MAX_PAYLOAD`] bytes; a bad magic, length or
//! checksum ends the migration. The source speaks first (`HELLO` with the protocol
//! version; the receiver answers `HELLO` or `ERROR`). Then, per round, one image:
//! `IMAGE` (its round and size), `DATA`... (its bytes), `END` (its identity: record
//! count and chained hash); the receiver checks that the bytes it got have that
//! identity and that the image's parent is the previous round's (as restore verifies
//! a chain) and answers `RECEIVED` or `ERROR`. After the last (final) image the
//! receiver plans and builds the tree up to its point of no return and says `STAGED`
//! (or `ERROR` with plan's refusals); the source answers `COMMIT`; the receiver
//! commits and says `COMMITTED` with the PID. See ARCHITECTURE.md, "Migration", for
//! who does what when the connection or either side dies.
//!
//! `--lazy` (post-copy; both sides say `lazy` in `HELLO`): the final `IMAGE` says
//! `lazy` and how many `HELD` ranges follow (byte ranges of the image, the payloads of
//! its page records), and `DATA` carries the image without them. After `RECEIVED` the
//! source pushes them as `PAGES` frames (file offset, bytes), first those the receiver
//! asks for (`WANT`, the range's offset), while the receiver plans, stages and commits
//! as above; the receiver says `ALL_IN` once every range is in and its copy runs, and
//! only then is the source killed.

pub mod receive;
pub mod send;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Called at each step with a line for the user.
pub type Say = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The version of the protocol (the `HELLO` payload's "proto").
pub const PROTO: u32 = 1;
/// The first bytes of every frame: "CKMG".
const MAGIC: u32 = 0x474d_4b43;
/// The largest payload of a frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// How long either side waits for the other's next frame before giving up.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);
/// `--lazy`: how long the receiver waits for the next page frame while pages are
/// missing before it gives up, killing its copy.
pub const LAZY_TIMEOUT: Duration = Duration::from_secs(5);
/// `--lazy`: how long the source waits, after the connection was lost with pages still
/// to send, before it lets its tree run again: by then the receiver has noticed too,
/// and killed its copy.
pub const LAZY_GRACE: Duration = Duration::from_secs(8);

/// The kinds of frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Image = 2,
    Data = 3,
    End = 4,
    Received = 5,
    Staged = 6,
    Commit = 7,
    Committed = 8,
    Error = 9,
    // (`--lazy`'s kinds are numbered from 20: room for others before.)
    /// `--lazy`: byte ranges of the final image held back (u64 offset, u64 length...).
    Held = 20,
    /// `--lazy`: bytes of a held range (u64 file offset, then the bytes).
    Pages = 21,
    /// `--lazy`: the receiver asks for the held range at this offset (u64) first.
    Want = 22,
    /// `--lazy`: every held range is in and the copy runs: the source may go.
    AllIn = 23,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Image,
            3 => Kind::Data,
            4 => Kind::End,
            5 => Kind::Received,
            6 => Kind::Staged,
            7 => Kind::Commit,
            8 => Kind::Committed,
            9 => Kind::Error,
            20 => Kind::Held,
            21 => Kind::Pages,
            22 => Kind::Want,
            23 => Kind::AllIn,
            _ => return None,
        })
    }
}

/// `HELLO`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub proto: u32,
    pub version: String,
    /// This side takes `--lazy` (post-copy).
    #[serde(default)]
    pub lazy: bool,
}

/// `IMAGE`: the image of round `round` follows, `size` bytes; `last` for the final
/// one (the tree frozen meanwhile).
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageHead {
    pub round: u32,
    pub size: u64,
    pub last: bool,
    /// `--lazy`: this many byte ranges of the image (`HELD` frames, before the `DATA`)
    /// are held back and come after it as `PAGES`.
    #[serde(default)]
    pub held: u64,
}

/// `END`: the identity of the image just sent (its end record).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageEnd {
    pub records: u64,
    pub hash: u64,
}

/// `ERROR` and `COMMITTED`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub pid: i32,
}

/// A frame read.
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload as JSON of type `T`.
    pub fn json<T: for<'a> Deserialize<'a>>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("a bad {:?} message from the peer: {e}", self.kind))
    }
}

fn checksum(kind: u8, len: u32, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[kind]);
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.digest()
}

/// One frame's bytes.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut b = Vec::with_capacity(17 + payload.len());
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.push(kind as u8);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&checksum(kind as u8, len, payload).to_le_bytes());
    b
}

/// Send one frame on `stream` in one write (so that frames of threads or processes
/// sharing the socket never interleave).
pub fn send_on(stream: &TcpStream, kind: Kind, payload: &[u8]) -> Result<(), String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("a frame of {} bytes is too large", payload.len()));
    }
    (&*stream)
        .write_all(&frame(kind, payload))
        .map_err(|e| format!("the connection to the peer failed: {e}"))
}

/// One end of the connection, counting the bytes it sent.
pub struct Conn {
    pub stream: TcpStream,
    pub sent: u64,
    /// The last [`Conn::recv`] failed because nothing came in time.
    pub timed_out: bool,
}

impl Conn {
    pub fn new(stream: TcpStream) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PEER_TIMEOUT))?;
        stream.set_write_timeout(Some(PEER_TIMEOUT))?;
        Ok(Conn {
            stream,
            sent: 0,
            timed_out: false,
        })
    }

    pub fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), String> {
        send_on(&self.stream, kind, payload)?;
        self.sent += 17 + payload.len() as u64;
        Ok(())
    }

    pub fn send_json<T: Serialize>(&mut self, kind: Kind, v: &T) -> Result<(), String> {
        let b = serde_json::to_vec(v).map_err(|e| e.to_string())?;
        self.send(kind, &b)
    }

    pub fn send_error(&mut self, message: &str) {
        let _ = self.send_json(
            Kind::Error,
            &Message {
                message: message.to_string(),
                pid: 0,
            },
        );
    }

    /// The next frame; the end of the connection, a timeout or a bad frame is an error.
    pub fn recv(&mut self) -> Result<Frame, String> {
        let lost = |e: std::io::Error| format!("the connection to the peer was lost: {e}");
        let mut head = [0u8; 9];
        self.timed_out = false;
        if let Err(e) = self.stream.read_exact(&mut head) {
            self.timed_out = matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            );
            return Err(lost(e));
        }
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        if magic != MAGIC {
            return Err("the peer does not speak ckpt's migration protocol".into());
        }
        let kind = Kind::from_u8(head[4])
            .ok_or_else(|| format!("the peer sent a frame of unknown kind {}", head[4]))?;
        if len as usize > MAX_PAYLOAD {
            return Err(format!("the peer sent a frame of {len} bytes, too large"));
        }
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).map_err(lost)?;
        let mut sum = [0u8; 8];
        self.stream.read_exact(&mut sum).map_err(lost)?;
        if u64::from_le_bytes(sum) != checksum(head[4], len, &payload) {
            return Err(format!("a {kind:?} frame from the peer has a bad checksum"));
        }
        Ok(Frame { kind, payload })
    }

    /// The next frame, which must be of kind `want`; an `ERROR` from the peer is an
    /// error with its message.
    pub fn expect(&mut self, want: Kind) -> Result<Frame, String> {
        let f = self.recv()?;
        match f.kind {
            k if k == want => Ok(f),
            Kind::Error => Err(f.json::<Message>()?.message),
            k => Err(format!("the peer sent {k:?} where {want:?} was due")),
        }
    }

    /// Say hello and check the peer's; returns the peer's.
    pub fn handshake(&mut self, first: bool) -> Result<Hello, String> {
        let mine = Hello {
            proto: PROTO,
            version: env!("CARGO_PKG_VERSION").to_string(),
            lazy: true,
        };
        if first {
            self.send_json(Kind::Hello, &mine)?;
        }
        let theirs: Hello = self.expect(Kind::Hello)?.json()?;
        if theirs.proto != PROTO {
            let m = format!(
                "the peer speaks migration protocol {} (ckpt {}), this ckpt {PROTO} (ckpt {})",
                theirs.proto, theirs.version, mine.version
            );
            self.send_error(&m);
            return Err(m);
        }
        if !first {
            self.send_json(Kind::Hello, &mine)?;
        }
        Ok(theirs)
    }
}

/// A test point (feature `fault-injection`) named `what`: CKPT_DIE_AT=name:WHAT kills
/// ckpt there (SIGKILL); CKPT_MIGRATE_CUT=WHAT shuts the connection down there, as a
/// network that fails would; CKPT_LINGER=WHAT:MS waits there.
pub(crate) fn point(what: &str, conn: &Conn) {
    point_on(what, &conn.stream);
}

/// [`point`] on a stream.
pub(crate) fn point_on(what: &str, stream: &TcpStream) {
    crate::sys::deferred::die_point(what);
    crate::sys::deferred::linger_point(what);
    #[cfg(feature = "fault-injection")]
    if std::env::var("CKPT_MIGRATE_CUT").is_ok_and(|c| c == what) {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = stream;
}

/// A test brake (feature `fault-injection`): CKPT_MIGRATE_PUSH_MS, milliseconds the
/// `--lazy` source waits before each `PAGES` frame of its background push (not of
/// what the receiver asked for), which then carries one page at most (so that a test
/// can act while pages are still missing on the receiver).
/// Returns the most bytes of pages the frame may carry.
pub(crate) fn push_brake() -> usize {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("CKPT_MIGRATE_PUSH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
        return 4096;
    }
    MAX_PAYLOAD - 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_kinds_round_trip() {
        for k in (1..=9u8).chain(20..=23) {
            assert_eq!(Kind::from_u8(k).map(|k| k as u8), Some(k));
        }
        assert!(Kind::from_u8(0).is_none());
        assert!(Kind::from_u8(255).is_none());
    }

    #[test]
    fn frames_cross_a_socket_and_a_bad_checksum_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut c = Conn::new(s).unwrap();
            c.handshake(false).unwrap();
            let f = c.expect(Kind::Data).unwrap();
            assert_eq!(f.payload, b"pages");
            // A frame whose checksum is wrong.
            let mut raw = Vec::new();
            raw.extend_from_slice(&MAGIC.to_le_bytes());
            raw.push(Kind::Data as u8);
            raw.extend_from_slice(&3u32.to_le_bytes());
            raw.extend_from_slice(b"abc");
            raw.extend_from_slice(&0u64.to_le_bytes());
            c.stream.write_all(&raw).unwrap();
        });
        let mut c = Conn::new(TcpStream::connect(addr).unwrap()).unwrap();
        c.handshake(true).unwrap();
        c.send(Kind::Data, b"pages").unwrap();
        let e = c.recv().err().unwrap_or_default();
        assert!(e.contains("bad checksum"), "{e}");
        t.join().unwrap();
    }
}
