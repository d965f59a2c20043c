//! The pages still missing of one memory, as pieces of page records, and how the
//! program's `munmap`, `madvise(DONTNEED)` and `mremap` change them.

/// Pages of one page record still to be copied: `len` bytes at `addr` (where they are
/// now), from byte `skip` of the pages of the record at `rec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) rec: u64,
    pub(crate) skip: u64,
}

impl Piece {
    pub(super) fn end(&self) -> u64 {
        self.addr + self.len
    }

    /// The part of it inside `[start, end)`, if any.
    pub(super) fn cut(&self, start: u64, end: u64) -> Option<Piece> {
        let s = self.addr.max(start);
        let e = self.end().min(end);
        (s < e).then(|| Piece {
            addr: s,
            len: e - s,
            rec: self.rec,
            skip: self.skip + (s - self.addr),
        })
    }
}

/// Remove `[start, end)` from sorted, non-overlapping `pieces`.
pub(super) fn remove_range(pieces: &mut Vec<Piece>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for p in pieces.drain(..) {
        if p.end() <= start || p.addr >= end {
            out.push(p);
            continue;
        }
        out.extend(p.cut(p.addr, start));
        out.extend(p.cut(end, p.end()));
    }
    *pieces = out;
}

/// `mremap` moved `[from, from + len)` to `to`: the pieces there move with it (what was
/// at the target is gone).
pub(super) fn move_range(pieces: &mut Vec<Piece>, from: u64, to: u64, len: u64) {
    let moved: Vec<Piece> = pieces
        .iter()
        .filter_map(|p| p.cut(from, from + len))
        .map(|p| Piece {
            addr: p.addr - from + to,
            ..p
        })
        .collect();
    remove_range(pieces, from, from + len);
    remove_range(pieces, to, to + len);
    pieces.extend(moved);
    pieces.sort_by_key(|p| p.addr);
}

/// The index of the piece holding `addr`.
pub(super) fn find(pieces: &[Piece], addr: u64) -> Option<usize> {
    let i = pieces.partition_point(|p| p.end() <= addr);
    pieces.get(i).filter(|p| p.addr <= addr).map(|_| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(addr: u64, len: u64, rec: u64, skip: u64) -> Piece {
        Piece {
            addr,
            len,
            rec,
            skip,
        }
    }

    #[test]
    fn remove_splits_pieces() {
        let mut v = vec![p(0x1000, 0x4000, 7, 0), p(0x8000, 0x1000, 8, 0)];
        remove_range(&mut v, 0x2000, 0x3000);
        assert_eq!(
            v,
            vec![
                p(0x1000, 0x1000, 7, 0),
                p(0x3000, 0x2000, 7, 0x2000),
                p(0x8000, 0x1000, 8, 0)
            ]
        );
        remove_range(&mut v, 0, 0x10000);
        assert!(v.is_empty());
    }

    #[test]
    fn remap_moves_the_pieces_inside_only() {
        let mut v = vec![p(0x1000, 0x4000, 7, 0), p(0x20000, 0x1000, 9, 0)];
        // The second half of the first piece moves to 0x10000; the target had the
        // third piece's neighbour only.
        move_range(&mut v, 0x3000, 0x10000, 0x2000);
        assert_eq!(
            v,
            vec![
                p(0x1000, 0x2000, 7, 0),
                p(0x10000, 0x2000, 7, 0x2000),
                p(0x20000, 0x1000, 9, 0)
            ]
        );
        // What was at the target goes.
        move_range(&mut v, 0x1000, 0x20000, 0x1000);
        assert_eq!(
            v,
            vec![
                p(0x2000, 0x1000, 7, 0x1000),
                p(0x10000, 0x2000, 7, 0x2000),
                p(0x20000, 0x1000, 7, 0)
            ]
        );
    }

    #[test]
    fn find_gives_the_piece_holding_an_address() {
        let v = vec![p(0x1000, 0x2000, 1, 0), p(0x8000, 0x1000, 2, 0)];
        assert_eq!(find(&v, 0x1000), Some(0));
        assert_eq!(find(&v, 0x2fff), Some(0));
        assert_eq!(find(&v, 0x3000), None);
        assert_eq!(find(&v, 0x8000), Some(1));
        assert_eq!(find(&v, 0x9000), None);
    }
}
