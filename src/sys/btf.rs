//! A reader of the kernel's BTF (/sys/kernel/btf/vmlinux): the types the running kernel
//! was built with, for the layout of the kernel structures the BPF socket reader
//! (`sys::bpf`) walks (offsets of fields, sizes of structures) and the ID of the
//! iterator function a BPF iterator program attaches to. Only what ckpt needs is
//! understood: the types' kinds, names, sizes, struct/union members (with anonymous
//! members looked through) and what modifiers and typedefs stand for.
//!
//! The format (include/uapi/linux/btf.h): a header, then the type section (records of
//! 12 bytes, each followed by its kind's own data) and the string section; type IDs
//! count from 1 in the order of the records (0 is void).

use super::{Result, SysError};

const MAGIC: u16 = 0xeb9f;

/// BTF kinds ckpt tells apart (the others are only skipped).
pub const KIND_INT: u32 = 1;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_VOLATILE: u32 = 9;
pub const KIND_CONST: u32 = 10;
pub const KIND_RESTRICT: u32 = 11;
pub const KIND_FUNC: u32 = 12;
pub const KIND_TYPE_TAG: u32 = 18;

/// One type record.
#[derive(Debug, Clone, Default)]
struct Type {
    kind: u32,
    name_off: u32,
    /// The size (ints, structs, unions, enums, datasecs) or the type it refers to
    /// (pointers, modifiers, typedefs, functions).
    size_or_type: u32,
    /// Struct and union members: (name offset, type, offset in bits).
    members: Vec<(u32, u32, u32)>,
    /// An array's element type and number of elements.
    array: Option<(u32, u32)>,
}

/// The types of one BTF blob.
#[derive(Debug, Default)]
pub struct Btf {
    /// Index = type ID (0: void).
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn bad(why: &str) -> SysError {
    SysError::Other(format!("kernel BTF: {why}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| bad("a record runs past the end"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn vmlinux() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let b = std::fs::read(path).map_err(|e| SysError::io(format!("read {path}"), e))?;
        Btf::parse(&b)
    }

    /// Parse a BTF blob (little-endian, as on the machines ckpt runs on).
    pub fn parse(b: &[u8]) -> Result<Btf> {
        let magic = b
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| bad("too short"))?;
        if magic != MAGIC {
            return Err(bad("not BTF (wrong magic or byte order)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let tstart = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| bad("bad type section"))?;
        let tsec = tstart
            .checked_add(type_len)
            .and_then(|end| b.get(tstart..end))
            .ok_or_else(|| bad("the type section runs past the end"))?;
        let sstart = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| bad("bad string section"))?;
        let strings = sstart
            .checked_add(str_len)
            .and_then(|end| b.get(sstart..end))
            .ok_or_else(|| bad("the string section runs past the end"))?
            .to_vec();
        let mut types = vec![Type::default()];
        let mut at = 0usize;
        while at < tsec.len() {
            let name_off = u32_at(tsec, at)?;
            let info = u32_at(tsec, at + 4)?;
            let size_or_type = u32_at(tsec, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut t = Type {
                kind,
                name_off,
                size_or_type,
                ..Type::default()
            };
            at += match kind {
                KIND_INT => 4,
                KIND_ARRAY => {
                    t.array = Some((u32_at(tsec, at)?, u32_at(tsec, at + 8)?));
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let off = u32_at(tsec, m + 8)?;
                        // With kind_flag, the top 8 bits are a bitfield's size.
                        let bits = if kind_flag { off & 0x00ff_ffff } else { off };
                        t.members
                            .push((u32_at(tsec, m)?, u32_at(tsec, m + 4)?, bits));
                    }
                    12 * vlen
                }
                6 => 8 * vlen,             // ENUM
                13 => 8 * vlen,            // FUNC_PROTO
                14 => 4,                   // VAR
                15 => 12 * vlen,           // DATASEC
                17 => 4,                   // DECL_TAG
                19 => 12 * vlen,           // ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, modifiers, FUNC, FLOAT, TYPE_TAG
                k => return Err(bad(&format!("unknown kind {k}"))),
            };
            types.push(t);
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        &s[..end]
    }

    fn get(&self, id: u32) -> Result<&Type> {
        self.types
            .get(id as usize)
            .ok_or_else(|| bad(&format!("type {id} does not exist")))
    }

    /// The ID of the type of kind `kind` named `name`.
    pub fn find(&self, kind: u32, name: &str) -> Result<u32> {
        self.types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name_off) == name.as_bytes())
            .map(|i| i as u32)
            .ok_or_else(|| bad(&format!("no type {name} (kind {kind})")))
    }

    /// Type `id` with modifiers and typedefs looked through.
    fn resolve(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(bad("a chain of modifiers too long"))
    }

    /// The size in bytes of the struct or union named `name`.
    pub fn size_of(&self, name: &str) -> Result<u32> {
        let id = self
            .find(KIND_STRUCT, name)
            .or_else(|_| self.find(KIND_UNION, name))?;
        Ok(self.get(id)?.size_or_type)
    }

    /// The byte offset of member `path` (names separated by dots: "a.b") in struct
    /// `strukt`, looking through anonymous struct and union members as C does.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32> {
        let mut id = self
            .find(KIND_STRUCT, strukt)
            .or_else(|_| self.find(KIND_UNION, strukt))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (off, ty) = self
                .member(id, part.as_bytes(), 0)?
                .ok_or_else(|| bad(&format!("struct {strukt} has no member {path}")))?;
            bits += off;
            id = self.resolve(ty)?;
        }
        if bits % 8 != 0 {
            return Err(bad(&format!("{strukt}.{path} is a bitfield")));
        }
        Ok(bits / 8)
    }

    /// Member `name` of struct or union `id` (anonymous members looked through):
    /// (offset in bits, type).
    fn member(&self, id: u32, name: &[u8], depth: u32) -> Result<Option<(u32, u32)>> {
        let t = self.get(self.resolve(id)?)?;
        if (t.kind != KIND_STRUCT && t.kind != KIND_UNION) || depth > 8 {
            return Ok(None);
        }
        for &(n, ty, off) in &t.members {
            let mname = self.name(n);
            if mname == name {
                return Ok(Some((off, ty)));
            }
            if mname.is_empty() {
                if let Some((o, t)) = self.member(ty, name, depth + 1)? {
                    return Ok(Some((off + o, t)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (raw records) and `strings`.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tlen = (types.len() * 4) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, tlen, tlen, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for t in types {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn members_through_anonymous_unions_and_typedefs() {
        // Strings: 1 "int", 5 "outer", 11 "a", 13 "b", 15 "inner", 21 "c", 23 "t".
        let strings = b"\0int\0outer\0a\0b\0inner\0c\0t\0";
        let info = |kind: u32, vlen: u32, flag: bool| (u32::from(flag) << 31) | kind << 24 | vlen;
        let types = [
            // 1: int (4 bytes)
            1,
            info(KIND_INT, 0, false),
            4,
            32,
            // 2: struct inner { int c; } (4 bytes)
            15,
            info(KIND_STRUCT, 1, false),
            4,
            21,
            1,
            0,
            // 3: anonymous union { int b; struct inner in; } at 64 bits in outer
            0,
            info(KIND_UNION, 2, false),
            4,
            13,
            1,
            0,
            15,
            2,
            0,
            // 4: struct outer { int a; <pad>; union {...}; } (12 bytes), bitfield flag
            5,
            info(KIND_STRUCT, 2, true),
            12,
            11,
            1,
            (32 << 24),
            0,
            3,
            64,
            // 5: typedef t = struct inner
            23,
            info(KIND_TYPEDEF, 0, false),
            2,
        ];
        let btf = Btf::parse(&blob(&types, strings)).expect("parse");
        assert_eq!(btf.find(KIND_STRUCT, "outer").ok(), Some(4));
        assert_eq!(btf.size_of("outer").ok(), Some(12));
        assert_eq!(btf.offset_of("outer", "a").ok(), Some(0));
        assert_eq!(btf.offset_of("outer", "b").ok(), Some(8));
        assert_eq!(btf.offset_of("outer", "inner.c").ok(), Some(8));
        assert!(btf.offset_of("outer", "zz").is_err());
        assert_eq!(btf.resolve(5).ok(), Some(2));
    }

    #[test]
    fn truncated_and_foreign_blobs_are_errors_not_panics() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(b"\x9f\xeb\x01\x00").is_err());
        let mut b = blob(&[1, (KIND_STRUCT << 24) | 3, 4], b"\0x\0");
        assert!(Btf::parse(&b).is_err(), "members past the end");
        b[0] = 0;
        assert!(Btf::parse(&b).is_err(), "wrong magic");
    }

    /// The running kernel's BTF, where there is one: the structures the socket reader
    /// walks are there.
    #[test]
    fn the_running_kernels_btf_has_the_socket_structures() {
        let Ok(btf) = Btf::vmlinux() else {
            return;
        };
        assert!(btf.find(KIND_FUNC, "bpf_iter_unix").is_ok());
        let rq = btf
            .offset_of("sock", "sk_receive_queue")
            .expect("sk_receive_queue");
        assert!(rq > 0);
        assert!(btf.size_of("sk_buff").expect("sk_buff") > 100);
        assert_eq!(btf.offset_of("unix_sock", "sk").ok(), Some(0));
    }
}
