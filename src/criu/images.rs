//! The CRIU files ckpt writes next to its own image in a `criu` image directory, in
//! CRIU's binary image format, for the tools that read them (Podman refuses to restore
//! without `inventory.img`; containerd reads `stats-dump`; `podman --print-stats`
//! reads both stats files).
//!
//! Format (CRIU images v1.1): a file starts with magic numbers, 32-bit little-endian:
//! the inventory with its own magic only; the stats files ("service" files) with the
//! service magic, then their own. Then each entry is a 32-bit little-endian length
//! followed by that many bytes of protobuf message.

use std::path::Path;

use prost::Message;

use super::rpc::{InventoryEntry, StatsEntry};

/// Images v1.1: the common magic at the head of every image but the inventory.
pub const IMAGES_V1_1: u32 = 2;
/// The head of service files (stats).
pub const SERVICE_MAGIC: u32 = 0x5510_5940;
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;
pub const STATS_MAGIC: u32 = 0x5709_3306;

/// ckpt's own image in the directory.
pub const CKPT_IMAGE: &str = "ckpt.img";
pub const INVENTORY: &str = "inventory.img";
pub const STATS_DUMP: &str = "stats-dump";
pub const STATS_RESTORE: &str = "stats-restore";

/// The bytes of a file holding `magics` and the one entry `msg`.
pub fn encode(magics: &[u32], msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(4 * magics.len() + 4 + body.len());
    for m in magics {
        out.extend_from_slice(&m.to_le_bytes());
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The one entry of a file that must start with `magics`.
pub fn decode<M: Message + Default>(magics: &[u32], bytes: &[u8]) -> Result<M, String> {
    let mut rest = bytes;
    let mut word = |what: &str| -> Result<u32, String> {
        let (w, r) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("the file ends before its {what}"))?;
        rest = r;
        Ok(u32::from_le_bytes(*w))
    };
    for m in magics {
        let got = word("magic")?;
        if got != *m {
            return Err(format!("magic {got:#x} where {m:#x} was expected"));
        }
    }
    let len = word("entry's length")? as usize;
    let body = rest
        .get(..len)
        .ok_or_else(|| format!("an entry of {len} bytes in a file of {}", bytes.len()))?;
    M::decode(body).map_err(|e| format!("bad entry: {e}"))
}

/// Write `name` in `dir` (replacing it).
fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// The inventory of a dump made now.
pub fn inventory() -> InventoryEntry {
    InventoryEntry {
        img_version: IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        ns_per_id: Some(true),
        lsmtype: Some(0),
        dump_uptime: uptime_us(),
    }
}

/// This host's uptime (CLOCK_BOOTTIME) in microseconds, from /proc/uptime.
fn uptime_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1e6) as u64)
}

pub fn write_inventory(dir: &Path) -> Result<(), String> {
    write(dir, INVENTORY, &encode(&[INVENTORY_MAGIC], &inventory()))
}

pub fn write_stats(dir: &Path, name: &str, stats: &StatsEntry) -> Result<(), String> {
    write(dir, name, &encode(&[SERVICE_MAGIC, STATS_MAGIC], stats))
}

/// [`write_stats`] into a directory held open (`shown`: its path, for the message).
pub fn write_stats_at(
    dir: &std::fs::File,
    shown: &Path,
    name: &str,
    stats: &StatsEntry,
) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = encode(&[SERVICE_MAGIC, STATS_MAGIC], stats);
    crate::sys::pathfd::write_file_at(dir, std::ffi::OsStr::new(name).as_bytes(), &bytes)
        .map_err(|e| format!("cannot write {}: {e}", shown.join(name).display()))
}

pub fn read_inventory(dir: &Path) -> Result<InventoryEntry, String> {
    let p = dir.join(INVENTORY);
    let b = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    decode(&[INVENTORY_MAGIC], &b).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn read_stats(dir: &Path, name: &str) -> Result<StatsEntry, String> {
    let p = dir.join(name);
    let b = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    decode(&[SERVICE_MAGIC, STATS_MAGIC], &b).map_err(|e| format!("{}: {e}", p.display()))
}

/// Microseconds, saturated to CRIU's 32-bit fields.
pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::rpc::{DumpStatsEntry, RestoreStatsEntry};
    use super::*;

    #[test]
    fn inventory_round_trip_and_layout() {
        let b = encode(&[INVENTORY_MAGIC], &inventory());
        assert_eq!(&b[..4], &INVENTORY_MAGIC.to_le_bytes());
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        assert_eq!(len, b.len() - 8);
        // img_version is field 1, varint: key byte 0x08, value 2.
        assert_eq!(&b[8..10], &[0x08, 0x02]);
        let back: InventoryEntry = decode(&[INVENTORY_MAGIC], &b).unwrap();
        assert_eq!(back.img_version, IMAGES_V1_1);
        assert!(decode::<InventoryEntry>(&[STATS_MAGIC], &b).is_err());
        assert!(decode::<InventoryEntry>(&[INVENTORY_MAGIC], &b[..b.len() - 1]).is_err());
    }

    #[test]
    fn stats_round_trip() {
        let s = StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: 1,
                frozen_time: 2,
                memdump_time: 3,
                memwrite_time: 4,
                pages_scanned: 5,
                pages_skipped_parent: 0,
                pages_written: 6,
                irmap_resolve: None,
                pages_lazy: 0,
            }),
            restore: Some(RestoreStatsEntry {
                pages_compared: 0,
                pages_skipped_cow: 0,
                forking_time: 7,
                restore_time: 8,
                pages_restored: Some(9),
            }),
        };
        let b = encode(&[SERVICE_MAGIC, STATS_MAGIC], &s);
        assert_eq!(&b[..8], &[0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57]);
        assert_eq!(
            decode::<StatsEntry>(&[SERVICE_MAGIC, STATS_MAGIC], &b),
            Ok(s)
        );
    }
}
