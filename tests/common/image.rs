//! Comparing outputs and images (`ckpt inspect --json`), and test data: pattern files,
//! damaged copies of images, free PIDs.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::*;

// ---------------------------------------------------------------------------------------
// Comparing outputs

/// Assert two outputs are byte for byte equal; on failure show where they part.
/// What a process restored with `--detach` printed on `ckpt restore`'s stdout (which it
/// shares): that output without the line with its PID, which ckpt printed there.
pub fn without_pid_line(out: &[u8], pid: i32) -> Vec<u8> {
    let pid = pid.to_string();
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.trim() != pid)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

pub fn assert_same_output(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    panic!("{what}: output differs\n{}", diff_report(expected, actual));
}

/// A restored run ended as an uninterrupted one: the output before the dump and the
/// restored process's together are the reference's (`step`: where the dump was), and
/// ckpt restore exited 0.
pub fn assert_restored_run_same(
    tag: &str,
    step: &str,
    reference: &Finished,
    output: &[u8],
    fin: &Finished,
) {
    assert_same_output(
        &format!("{tag} (dumped after {step}, restored)"),
        &reference.stdout,
        output,
    );
    assert_eq!(
        fin.status.code(),
        Some(0),
        "{tag}: ckpt restore's exit status; stderr:\n{}",
        String::from_utf8_lossy(&fin.stderr)
    );
}

/// A readable account of where `a` (expected) and `b` (actual) differ.
pub fn diff_report(a: &[u8], b: &[u8]) -> String {
    let al: Vec<&[u8]> = a.split_inclusive(|&c| c == b'\n').collect();
    let bl: Vec<&[u8]> = b.split_inclusive(|&c| c == b'\n').collect();
    let first = al
        .iter()
        .zip(bl.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(al.len().min(bl.len()));
    let byte = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(3);
    let show = |lines: &[&[u8]]| -> String {
        let mut s = String::new();
        for (i, l) in lines.iter().enumerate().skip(from).take(8) {
            let mark = if i == first { ">>" } else { "  " };
            s.push_str(&format!(
                "{mark} {:4} | {}\n",
                i + 1,
                String::from_utf8_lossy(l).trim_end_matches('\n')
            ));
        }
        if lines.len() <= first {
            s.push_str(&format!(">> {:4} | <end of output>\n", lines.len() + 1));
        }
        s
    };
    format!(
        "expected {} bytes / {} lines, got {} bytes / {} lines; first difference at byte {byte}, \
         line {}\n--- expected (uninterrupted run):\n{}--- actual:\n{}",
        a.len(),
        al.len(),
        b.len(),
        bl.len(),
        first + 1,
        show(&al),
        show(&bl)
    )
}

/// With `--leave-running`, the original goes on after the dump; the restored copy must
/// print exactly the rest of the reference output from the point of the dump. Check that
/// `restored` is a suffix of `reference` whose start is at a line boundary no earlier than
/// `min_prefix` bytes (what had been printed before the dump began) and no later than
/// what the original printed in all, and that the original printed a prefix of the
/// reference.
pub fn assert_continues_from_dump(
    what: &str,
    reference: &[u8],
    original: &[u8],
    restored: &[u8],
    min_prefix: usize,
) {
    assert!(
        reference.starts_with(original),
        "{what}: the original (dumped with --leave-running) strayed from the reference\n{}",
        diff_report(&reference[..original.len().min(reference.len())], original)
    );
    let ok = restored.len() <= reference.len() && reference.ends_with(restored);
    assert!(
        ok,
        "{what}: the restored output is not the tail of the reference output\n{}",
        diff_report(
            &reference[reference.len().saturating_sub(restored.len())..],
            restored
        )
    );
    let split = reference.len() - restored.len();
    assert!(
        original.len() >= split,
        "{what}: the restored process resumed at byte {split} of the reference output, \
         beyond the {} bytes the original had printed by the time it was killed",
        original.len()
    );
    assert!(
        split >= min_prefix && (split == 0 || reference[split - 1] == b'\n'),
        "{what}: the restored process resumed at byte {split} of the reference output, but \
         {min_prefix} bytes had been printed before the dump (it must resume at the dump \
         point, on a line boundary)"
    );
}

// ---------------------------------------------------------------------------------------
// Comparing images (`ckpt inspect --json`)

/// JSON paths (see [`json_diff`]) that legitimately differ between an image of a process
/// and an image of its restored copy. Everything else must be equal.
pub const LEGIT_IMAGE_DIFFS: &[&str] = &[
    // when the image was made
    "**.created_unix",
    "**.created",
    // the restored process is a child of ckpt restore (or of the subreaper after
    // --detach) and joins ckpt restore's session and process group
    "**.ppid",
    "**.pgid",
    "**.sid",
    // fds 0-2 leading outside: they are ckpt restore's pipes now, not the original's
    "**.Inherited.what",
];

/// Compare two JSON documents; returns one line per difference, naming its path
/// (`processes[0].threads[0].sigmask`), skipping paths matched by a pattern of `ignore`.
/// Patterns are dot-separated segments; `*` matches one key or index, `**` any number
/// of segments; an index segment is written `[3]` or `[*]`.
pub fn json_diff(a: &Value, b: &Value, ignore: &[&str]) -> Vec<String> {
    let pats: Vec<Vec<&str>> = ignore.iter().map(|p| split_pattern(p)).collect();
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk_json(&mut path, a, b, &pats, &mut out);
    out
}

fn split_pattern(p: &str) -> Vec<&str> {
    let mut v = Vec::new();
    for seg in p.split('.') {
        // "threads[*]" -> "threads", "[*]"
        match seg.find('[') {
            Some(i) if i > 0 => {
                v.push(&seg[..i]);
                v.push(&seg[i..]);
            }
            _ => v.push(seg),
        }
    }
    v
}

fn seg_matches(pat: &str, seg: &str) -> bool {
    pat == "*" || pat == seg || (pat == "[*]" && seg.starts_with('['))
}

fn glob_match(pat: &[&str], path: &[String]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| glob_match(rest, &path[i..])),
        Some((p, rest)) => {
            !path.is_empty() && seg_matches(p, &path[0]) && glob_match(rest, &path[1..])
        }
    }
}

pub fn json_path_string(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if !seg.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(seg);
    }
    if s.is_empty() { "(root)".into() } else { s }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        format!(
            "{}...({} chars)",
            &s[..s.char_indices().nth(150).map_or(s.len(), |c| c.0)],
            s.len()
        )
    } else {
        s
    }
}

fn walk_json(
    path: &mut Vec<String>,
    a: &Value,
    b: &Value,
    pats: &[Vec<&str>],
    out: &mut Vec<String>,
) {
    if pats.iter().any(|p| glob_match(p, path)) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(k.clone());
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk_json(path, va, vb, pats, out),
                    (va, vb) => {
                        if !pats.iter().any(|p| glob_match(p, path)) {
                            out.push(format!(
                                "{}: {} vs {}",
                                json_path_string(path),
                                va.map_or("(absent)".into(), short),
                                vb.map_or("(absent)".into(), short)
                            ));
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{}: {} elements vs {}",
                    json_path_string(path),
                    x.len(),
                    y.len()
                ));
            }
            for (i, (va, vb)) in x.iter().zip(y.iter()).enumerate() {
                path.push(format!("[{i}]"));
                walk_json(path, va, vb, pats, out);
                path.pop();
            }
        }
        _ => {
            if a != b {
                out.push(format!(
                    "{}: {} vs {}",
                    json_path_string(path),
                    short(a),
                    short(b)
                ));
            }
        }
    }
}

/// Assert two `inspect --json` documents agree except where `ignore` says.
pub fn assert_same_image_state(what: &str, a: &Value, b: &Value, ignore: &[&str]) {
    let d = json_diff(a, b, ignore);
    if d.is_empty() {
        return;
    }
    let n = d.len();
    let shown: Vec<&str> = d.iter().take(40).map(String::as_str).collect();
    panic!(
        "{what}: {n} difference(s) between the image of the original and the image of the \
         restored process (first / second), ignoring {ignore:?}:\n  {}{}",
        shown.join("\n  "),
        if n > 40 { "\n  ..." } else { "" }
    );
}

/// Does `v` contain, anywhere, the key `key` with the integer value `want`?
pub fn json_has_int(v: &Value, key: &str, want: i64) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| (k == key && x.as_i64() == Some(want)) || json_has_int(x, key, want)),
        Value::Array(a) => a.iter().any(|x| json_has_int(x, key, want)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Test data

/// Write a file of `len` deterministic bytes (for targets to map or read).
pub fn write_pattern_file(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| ((i as u64 * 31 + u64::from(seed)) % 251) as u8)
        .collect();
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A copy of `src` at `dst` with the byte at `offset` flipped.
pub fn flip_byte(src: &Path, dst: &Path, offset: usize) {
    let mut d = fs::read(src).expect("read image");
    assert!(
        offset < d.len(),
        "offset {offset} beyond image of {} bytes",
        d.len()
    );
    d[offset] ^= 0x10;
    fs::write(dst, d).expect("write corrupted image");
}

/// A copy of the first `len` bytes of `src` at `dst`.
pub fn truncated_copy(src: &Path, dst: &Path, len: usize) {
    let d = fs::read(src).expect("read image");
    fs::write(dst, &d[..len.min(d.len())]).expect("write truncated image");
}

/// A pid that no process has right now (a child of ours that has just been reaped).
pub fn free_pid() -> i32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id() as i32;
    c.wait().expect("wait true");
    assert!(!pid_exists(pid));
    pid
}
