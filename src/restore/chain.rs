//! Incremental images (`ckpt dump --parent`): following an image's chain of parents,
//! each link verified, for [`Composite`](super::composite::Composite), which restore and
//! check read the chain through (no full image is written).
//!
//! Each link is verified before anything is restored: the parent found at the recorded
//! path (or `--parent`) must have the identity the child recorded (record count and
//! chained hash of its end record), and every image of the chain is indexed
//! (`image::index::scan`: its header, every record header, the record count and chained
//! hash of the end record), on the descriptor that is then read, so a link swapped
//! after its check is not read. Every record's payload checksum is checked when the
//! composite reads it, before the restore's point of no return (`restore --lazy`: when
//! served, as for a full image).

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{RestoreError, Result};
use crate::image::index::{self, IndexEntry};
use crate::image::{ImageReader, ImageWriter, tag};
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
pub(crate) fn is_incremental(path: &Path) -> Result<bool> {
    let r = ImageReader::new(open(path)?)?;
    Ok(r.required_features() & crate::image::FEATURE_PARENT != 0)
}

/// The identity of the image in `f` (its end record), as `ParentImage` holds it.
fn identity(f: &File) -> Result<(u64, u64)> {
    let len = f.metadata().map_err(crate::image::ImageError::Io)?.len();
    let n = crate::image::END_RECORD_LEN as u64;
    let mut tail = vec![0u8; n as usize];
    if len < n {
        return Err(RestoreError::Malformed("shorter than an end record".into()));
    }
    f.read_exact_at(&mut tail, len - n)
        .map_err(crate::image::ImageError::Io)?;
    Ok(crate::image::identity(&tail)?)
}

/// One image of a chain: where it is, its open file (every read is of this descriptor),
/// its records and its metadata.
pub(crate) struct Link {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) entries: Vec<IndexEntry>,
    pub(crate) meta: Checkpoint,
    /// Its identity (record count and chained hash of its end record), as a child
    /// records it in `ParentImage`.
    pub(crate) id: (u64, u64),
}

impl Link {
    /// Index the image in `file` (found at `path`) and decode its metadata; errors name
    /// the file.
    pub(crate) fn index(path: &Path, file: File) -> Result<Self> {
        let named =
            |e: &dyn std::fmt::Display| RestoreError::Malformed(format!("{}: {e}", path.display()));
        let (entries, id) = index::scan_with_identity(&file).map_err(|e| named(&e))?;
        let first = entries
            .first()
            .filter(|e| e.tag == tag::CHECKPOINT)
            .ok_or_else(|| named(&"the image starts without its metadata"))?;
        let mut buf = Vec::new();
        index::read_payload(&file, first, &mut buf).map_err(|e| named(&e))?;
        let meta: Checkpoint =
            crate::image::decode_meta(tag::CHECKPOINT, &buf).map_err(|e| named(&e))?;
        let mut h = [0u8; 8];
        file.read_exact_at(&mut h, 16).map_err(|e| named(&e))?;
        crate::image::check_features(u64::from_le_bytes(h), meta.parent.is_some())
            .map_err(|e| named(&e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            meta,
            id,
        })
    }
}

/// Where a parent image is found: given how far up the chain it is (1: the image's own
/// parent) and what the child recorded of it, a path, or None for the recorded one.
pub type Resolve<'a> = &'a dyn Fn(usize, &ParentImage) -> Option<PathBuf>;

/// The chain of the image at `path`: itself first, then each parent, every link
/// verified (see the module comment). `first_parent` replaces the path the image
/// records for its parent.
pub(crate) fn links(path: &Path, first_parent: Option<&Path>) -> Result<Vec<Link>> {
    links_with(path, &|depth, _| match (depth, first_parent) {
        (1, Some(f)) => Some(f.to_path_buf()),
        _ => None,
    })
}

/// [`links`], each parent found by `resolve`.
pub(crate) fn links_with(path: &Path, resolve: Resolve) -> Result<Vec<Link>> {
    let mut out = vec![Link::index(path, open(path)?)?];
    while let Some(p) = out.last().and_then(|l| l.meta.parent.clone()) {
        if out.len() >= MAX_CHAIN {
            return Err(RestoreError::Malformed(format!(
                "the chain of parents of {} is longer than {MAX_CHAIN} images",
                path.display()
            )));
        }
        let child = out
            .last()
            .map(|l| l.path.display().to_string())
            .unwrap_or_default();
        let at = resolve(out.len(), &p).unwrap_or_else(|| PathBuf::from(&p.path));
        let opened = open(&at).and_then(|f| identity(&f).map(|id| (f, id)));
        let (file, id) = opened.map_err(|e| {
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
        // The index checks the end record against every record, so the identity just
        // compared is that of the records read.
        out.push(Link::index(&at, file)?);
    }
    Ok(out)
}

/// The full image `c` stands for, written into an unnamed file in `dir` from its
/// records, each checked as it is read. `ckpt receive` compacts its log of rounds with
/// it, rarely (see `migrate::receive::Store`).
pub(crate) fn merge(c: &super::composite::Composite, dir: &Path) -> Result<File> {
    let out = unnamed_file(&dir.join("full"))?;
    let mut w = ImageWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        out.try_clone().map_err(io_err)?,
    ))?;
    w.write_meta(tag::CHECKPOINT, c.meta())?;
    let mut src = super::composite::CompositeSource::new(c, false);
    // A record's pieces are put together again (one record per run of pages).
    let mut run: Vec<u8> = Vec::new();
    while let Some(rec) = crate::kinds::mem::pages::RecordSource::next_record(&mut src)? {
        if rec.tag != tag::PAGES {
            w.write_record(rec.tag, rec.flags, rec.arg, &rec.payload, false)?;
            continue;
        }
        if rec.part == 0 {
            run.clear();
        }
        run.extend_from_slice(&rec.payload);
        if rec.part + rec.payload.len() as u64 >= rec.record_len {
            w.write_record(tag::PAGES, rec.flags, rec.arg, &run, true)?;
        }
    }
    w.finish()?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    let mut out = out;
    std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(0)).map_err(io_err)?;
    Ok(out)
}

fn io_err(e: std::io::Error) -> RestoreError {
    RestoreError::Malformed(format!("cannot write the full image of the chain: {e}"))
}

/// An unnamed file for a whole image, in the directory of `near` or else in /tmp.
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

#[cfg(test)]
mod tests {
    use super::*;

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
