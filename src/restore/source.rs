//! Where restore's records come from after the metadata: straight from the image
//! reader ([`Direct`]), or from a thread that reads and checks the next records while
//! the previous ones are copied into the new processes ([`Prefetched`]), so that reading
//! the image and filling memory run on two cores.

use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::{RestoreError, Result};
use crate::image::{ImageError, ImageReader, OwnedRecord};
pub(crate) use crate::kinds::mem::pages::RecordSource;

/// Page records are handed over in pieces of at most this many bytes, so that copying
/// the first piece into its process overlaps reading the next, and ckpt's buffers stay
/// small whatever the size of a record. Small enough that the buffers in flight stay in
/// the reading core's cache: reading the image into buffers that are not runs at a
/// quarter of the speed here, and with `UFFDIO_COPY` filling the processes that read
/// was the slower side (1 GiB restore, medians of 5: 256 KiB pieces 845-1106 ms,
/// 64 KiB 673 ms; 256 MiB 227 -> 163 ms).
pub const PIECE: u64 = 64 << 10;

/// Records read by the caller's thread.
pub struct Direct<'a, R: Read> {
    reader: &'a mut ImageReader<R>,
    spare: Vec<u8>,
}

impl<'a, R: Read> Direct<'a, R> {
    pub fn new(reader: &'a mut ImageReader<R>) -> Self {
        Self {
            reader,
            spare: Vec::new(),
        }
    }
}

/// Compressed page records become plain ones (their pages decompressed into a buffer
/// of their own).
fn expand(
    r: std::result::Result<Option<OwnedRecord>, ImageError>,
) -> std::result::Result<Option<OwnedRecord>, ImageError> {
    match r {
        Ok(Some(mut rec))
            if rec.tag == crate::image::tag::PAGES_LZ4
                || rec.tag == crate::image::tag::PAGES_ZSTD =>
        {
            let mut pages = Vec::new();
            if rec.tag == crate::image::tag::PAGES_LZ4 {
                crate::image::decompress_pages(&rec.payload, &mut pages)?;
            } else {
                crate::image::decompress_pages_zstd(&rec.payload, &mut pages)?;
            }
            rec.tag = crate::image::tag::PAGES;
            rec.record_len = pages.len() as u64;
            rec.payload = pages;
            Ok(Some(rec))
        }
        other => other,
    }
}

impl<R: Read> RecordSource for Direct<'_, R> {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        let spare = std::mem::take(&mut self.spare);
        Ok(expand(self.reader.next_piece_owned(spare, PIECE))?)
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.spare = buf;
    }
}

/// How many records (or pieces of page records) the reading thread may have read ahead;
/// this bounds ckpt's memory too.
const AHEAD: usize = 3;

/// Records read by a thread of their own (see [`prefetch`]).
pub struct Prefetched {
    rx: Receiver<Result<Option<OwnedRecord>>>,
    back: Sender<Vec<u8>>,
    done: bool,
}

impl RecordSource for Prefetched {
    fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(Ok(Some(r))) => Ok(Some(r)),
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
            Err(_) => Err(RestoreError::Stage(
                "the image reading thread stopped unexpectedly".into(),
            )),
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        let _ = self.back.send(buf);
    }
}

/// Read `source`'s records on a thread of `scope`, up to [`AHEAD`] in advance (an
/// image read as a stream: [`Direct`]; an incremental chain read in place:
/// `composite::CompositeSource`). The thread ends at the end of the records, at the
/// first error (which it passes on), or when the returned source is dropped.
pub fn prefetch<'scope, 'env, S: RecordSource + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    mut source: S,
) -> Prefetched {
    let (tx, rx) = sync_channel(AHEAD);
    let (back, back_rx) = channel::<Vec<u8>>();
    scope.spawn(move || read_ahead(&mut source, &tx, &back_rx));
    Prefetched {
        rx,
        back,
        done: false,
    }
}

fn read_ahead(
    source: &mut dyn RecordSource,
    tx: &SyncSender<Result<Option<OwnedRecord>>>,
    back: &Receiver<Vec<u8>>,
) {
    loop {
        while let Ok(b) = back.try_recv() {
            source.recycle(b);
        }
        let r = source.next_record();
        let last = !matches!(r, Ok(Some(_)));
        if tx.send(r).is_err() || last {
            return;
        }
    }
}
