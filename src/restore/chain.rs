//! Incremental images (`ckpt dump --parent`): following an image's chain of parents and
//! making one full image of it, which restore and check then read as any other.
//!
//! Each link is verified before anything is restored: the parent found at the recorded
//! path (or `--parent`) must have the identity the child recorded (record count and
//! chained hash of its end record), and every image of the chain is read to its end,
//! so every record's checksum and the end record's chain are checked too. The full
//! image has the newest image's metadata (without its parent) and, for each process,
//! its own page data followed by the pages it inherited, taken from the nearest
//! ancestor that stored them (`Process::inherited`, intersected down the chain). It is
//! an unnamed file in the image's directory (or /tmp), gone when closed.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{RestoreError, Result};
use crate::image::{FLAG_REQUIRED, ImageReader, ImageWriter, tag};
use crate::model::{Checkpoint, ParentImage};

/// Images in a chain at most (a loop of images naming each other ends here).
const MAX_CHAIN: usize = 1000;

fn open(path: &Path) -> Result<File> {
    File::open(path)
        .map_err(|e| RestoreError::Malformed(format!("cannot open {}: {e}", path.display())))
}

/// The metadata of the image at `path` (its first record).
pub fn meta_of(path: &Path) -> Result<Checkpoint> {
    let mut r = ImageReader::new(BufReader::new(open(path)?))?;
    super::read_checkpoint(&mut r)
}

/// The parent the image at `path` names, if it is incremental.
pub fn parent_of(path: &Path) -> Result<Option<ParentImage>> {
    Ok(meta_of(path)?.parent)
}

/// Whether the image at `path` is incremental, from its file header alone (the required
/// feature `FEATURE_PARENT`, which decoding the metadata checks to agree with its
/// `parent`): a restore of a full image then decodes its metadata once, not twice
/// (about 0.4 ms of a `--lazy=touch` copy's start).
fn is_incremental(path: &Path) -> Result<bool> {
    let r = ImageReader::new(open(path)?)?;
    Ok(r.required_features() & crate::image::FEATURE_PARENT != 0)
}

/// The identity of the image at `path` (its end record), as `ParentImage` holds it.
fn identity(path: &Path) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut f = open(path)?;
    let mut tail = vec![0u8; crate::image::END_RECORD_LEN];
    f.seek(SeekFrom::End(-(crate::image::END_RECORD_LEN as i64)))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| {
            RestoreError::Malformed(format!("cannot read the end of {}: {e}", path.display()))
        })?;
    Ok(crate::image::identity(&tail)?)
}

/// The chain of the image at `path`: itself first, then each parent, with its metadata.
/// `first_parent` replaces the path the image records for its parent.
pub fn chain(path: &Path, first_parent: Option<&Path>) -> Result<Vec<(PathBuf, Checkpoint)>> {
    chain_with(path, &|depth, _| match (depth, first_parent) {
        (1, Some(f)) => Some(f.to_path_buf()),
        _ => None,
    })
}

/// Where a parent image is found: given how far up the chain it is (1: the image's own
/// parent) and what the child recorded of it, a path, or None for the recorded one.
pub type Resolve<'a> = &'a dyn Fn(usize, &ParentImage) -> Option<PathBuf>;

/// [`chain`], each parent found by `resolve` (`ckpt receive` keeps the images it was
/// sent under names of its own). Every link is verified just the same.
pub fn chain_with(path: &Path, resolve: Resolve) -> Result<Vec<(PathBuf, Checkpoint)>> {
    let mut out = vec![(path.to_path_buf(), meta_of(path)?)];
    while let Some(p) = out.last().and_then(|(_, c)| c.parent.clone()) {
        if out.len() >= MAX_CHAIN {
            return Err(RestoreError::Malformed(format!(
                "the chain of parents of {} is longer than {MAX_CHAIN} images",
                path.display()
            )));
        }
        let child = out
            .last()
            .map(|(c, _)| c.display().to_string())
            .unwrap_or_default();
        let at = resolve(out.len(), &p).unwrap_or_else(|| PathBuf::from(&p.path));
        let id = identity(&at).map_err(|e| {
            RestoreError::Malformed(format!(
                "{child} is incremental: its parent {} cannot be read ({e}); give it with \
                 --parent FILE",
                at.display()
            ))
        })?;
        if id != (p.records, p.hash) {
            return Err(RestoreError::Malformed(format!(
                "{child} was made from an image with hash {:016x} ({} records), but {} \
                 has hash {:016x} ({} records): not its parent",
                p.hash,
                p.records,
                at.display(),
                id.1,
                id.0
            )));
        }
        let meta = meta_of(&at)?;
        out.push((at, meta));
    }
    Ok(out)
}

/// Sorted ranges in both `a` and `b`.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn sorted(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    v
}

/// Make the full image of the chain of the image at `path` (see the module comment),
/// or None when it is not incremental.
pub fn materialize(path: &Path, first_parent: Option<&Path>) -> Result<Option<File>> {
    if !is_incremental(path)? {
        return Ok(None);
    }
    let chain = chain(path, first_parent)?;
    merge(path, &chain, unnamed_file(path)?).map(Some)
}

/// [`materialize`] with the parents found by `resolve` (see [`chain_with`]), the full
/// image an unnamed file in directory `dir`.
pub fn materialize_with(path: &Path, resolve: Resolve, dir: &Path) -> Result<Option<File>> {
    if !is_incremental(path)? {
        return Ok(None);
    }
    let chain = chain_with(path, resolve)?;
    merge(path, &chain, unnamed_file(&dir.join("full"))?).map(Some)
}

/// The full image of the incremental image at `path` whose parent is the full image at
/// `base` (the link verified: `base` must have the identity `path` records for its
/// parent, or be the full image made of that parent, `base_is_of`), an unnamed file in
/// `dir`. `ckpt receive` keeps one full image of the rounds so far and merges each
/// round onto it as it arrives, so the chain is never followed in the frozen window.
pub fn merge_onto(path: &Path, base: &Path, base_is_of: (u64, u64), dir: &Path) -> Result<File> {
    let meta = meta_of(path)?;
    let Some(p) = meta.parent.clone() else {
        return Err(RestoreError::Malformed(format!(
            "{} is not an incremental image",
            path.display()
        )));
    };
    if (p.records, p.hash) != base_is_of {
        return Err(RestoreError::Malformed(format!(
            "{} was made from an image with hash {:016x} ({} records), not from the one \
             {} was made of",
            path.display(),
            p.hash,
            p.records,
            base.display()
        )));
    }
    let base_meta = meta_of(base)?;
    if base_meta.parent.is_some() {
        return Err(RestoreError::Malformed(format!(
            "{} is not a full image",
            base.display()
        )));
    }
    let chain = [(path.to_path_buf(), meta), (base.to_path_buf(), base_meta)];
    merge(path, &chain, unnamed_file(&dir.join("full"))?)
}

/// Write the full image of `chain` (that of the image at `path`) into `out`.
fn merge(path: &Path, chain: &[(PathBuf, Checkpoint)], out: File) -> Result<File> {
    let mut w = ImageWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        out.try_clone().map_err(io_err)?,
    ))?;
    let mut full = chain[0].1.clone();
    full.parent = None;
    for p in full.processes.iter_mut() {
        p.inherited.clear();
    }
    w.write_meta(tag::CHECKPOINT, &full)?;
    let mut r = ImageReader::new(BufReader::new(open(path)?))?;
    super::read_checkpoint(&mut r)?;
    let mut current: Option<i32> = None;
    while let Some(rec) = r.next_record()? {
        if rec.tag == tag::PAGES_PID {
            if let Some(pid) = current.take() {
                inherited_pages(chain, pid, &mut w)?;
            }
            current = Some(rec.arg as i64 as i32);
        }
        w.write_record(rec.tag, rec.flags, rec.arg, rec.payload, is_pages(rec.tag))?;
    }
    if let Some(pid) = current {
        inherited_pages(chain, pid, &mut w)?;
    }
    w.finish()?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    let mut out = out;
    out.seek(SeekFrom::Start(0)).map_err(io_err)?;
    Ok(out)
}

fn is_pages(t: u32) -> bool {
    t == tag::PAGES || t == tag::PAGES_LZ4 || t == tag::PAGES_ZSTD
}

fn io_err(e: std::io::Error) -> RestoreError {
    RestoreError::Malformed(format!("cannot write the full image of the chain: {e}"))
}

/// An unnamed file for the full image, in the directory of `near` or else in /tmp.
pub(crate) fn unnamed_file(near: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = crate::sys::tmpfile::dir_of(near).to_path_buf();
    let mut last = None;
    for d in [dir, PathBuf::from("/tmp")] {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(&d)
        {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(io_err(
        last.unwrap_or_else(|| std::io::Error::other("no directory")),
    ))
}

/// Write the pages process `pid` of the newest image inherited, from the images before
/// it: each ancestor gives its own pages in what is still to be found, and passes on
/// what it inherited itself.
fn inherited_pages<W: std::io::Write>(
    chain: &[(PathBuf, Checkpoint)],
    pid: i32,
    w: &mut ImageWriter<W>,
) -> Result<()> {
    let proc_of = |c: &Checkpoint| c.processes.iter().find(|p| p.pid == pid).cloned();
    let Some(newest) = proc_of(&chain[0].1) else {
        return Ok(());
    };
    let mut want = sorted(newest.inherited.clone());
    for (path, meta) in &chain[1..] {
        if want.is_empty() {
            break;
        }
        let Some(p) = proc_of(meta) else {
            return Err(RestoreError::Malformed(format!(
                "process {pid} inherits pages from {}, which has no process {pid}",
                path.display()
            )));
        };
        copy_pages(path, pid, &want, w)?;
        want = intersect(&want, &sorted(p.inherited.clone()));
    }
    Ok(())
}

/// Copy the page data of process `pid` in image `path` that lies in `want` (sorted
/// ranges) into `w`, reading the whole image (so its end record is checked).
fn copy_pages<W: std::io::Write>(
    path: &Path,
    pid: i32,
    want: &[(u64, u64)],
    w: &mut ImageWriter<W>,
) -> Result<()> {
    let mut r = ImageReader::new(BufReader::new(open(path)?))?;
    super::read_checkpoint(&mut r)?;
    let mut mine = false;
    let mut plain = Vec::new();
    while let Some(rec) = r.next_record()? {
        match rec.tag {
            tag::PAGES_PID => mine = rec.arg as i64 as i32 == pid,
            t if mine && is_pages(t) => {
                let data: &[u8] = match t {
                    tag::PAGES_LZ4 => {
                        plain.clear();
                        crate::image::decompress_pages(rec.payload, &mut plain)?;
                        &plain
                    }
                    tag::PAGES_ZSTD => {
                        plain.clear();
                        crate::image::decompress_pages_zstd(rec.payload, &mut plain)?;
                        &plain
                    }
                    _ => rec.payload,
                };
                let start = rec.arg;
                let end = start + data.len() as u64;
                for (s, e) in intersect(&[(start, end)], want) {
                    let slice = &data[(s - start) as usize..(e - start) as usize];
                    w.write_record(tag::PAGES, FLAG_REQUIRED, s, slice, true)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_of_sorted_ranges() {
        assert_eq!(
            intersect(&[(0, 10), (20, 30)], &[(5, 25), (28, 40)]),
            vec![(5, 10), (20, 25), (28, 30)]
        );
        assert!(intersect(&[(0, 10)], &[]).is_empty());
    }

    /// Whether an image is incremental is read from its file header; a file that is
    /// no image is an error, not a full image.
    #[test]
    fn incremental_images_are_told_by_their_header() {
        let dir = std::env::temp_dir().join(format!("ckpt-chain-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (features, want) in [(0, false), (crate::image::FEATURE_PARENT, true)] {
            let mut w = ImageWriter::with_features(Vec::new(), features).unwrap();
            w.write_meta(tag::CHECKPOINT, &vec![1u32]).unwrap();
            let p = dir.join(format!("img-{features}"));
            std::fs::write(&p, w.finish().unwrap()).unwrap();
            assert_eq!(is_incremental(&p).unwrap(), want);
        }
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not an image at all, not even a header of one....").unwrap();
        assert!(is_incremental(&junk).is_err());
        assert!(is_incremental(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
