//! A small reader for the kernel's raw BTF (BPF Type Format).
//!
//! Rust eBPF programs get no CO-RE relocations, so a kernel program cannot name a kernel struct
//! field and have the loader fix up its offset. Instead the agent looks the offsets up here, in
//! the running kernel's BTF, at start-up and hands them to the programs as globals. The same BTF
//! tells which tracepoints the kernel has: each one has a `btf_trace_<name>` typedef.
//!
//! Only what those two jobs need is decoded: the header, the string section, the type records,
//! struct/union members and the few kinds a member's type resolves through. The format is
//! described in the kernel's Documentation/bpf/btf.rst. Type records have variable length, so one
//! pass over the type section is needed to find each type id's record; that pass also indexes
//! struct/union names and tracepoint typedefs, and everything else is decoded on demand.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where a kernel built with `CONFIG_DEBUG_INFO_BTF=y` exposes its own BTF.
pub const SYS_FS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
/// `struct btf_header`: magic, version, flags, hdr_len, then four u32 section offsets/lengths.
const HEADER_LEN: usize = 24;
const SUPPORTED_VERSION: u8 = 1;
/// `struct btf_type`: name_off, info, size_or_type.
const TYPE_RECORD_LEN: usize = 12;
/// `struct btf_member`: name_off, type, offset.
const MEMBER_LEN: usize = 12;
/// Bounds every walk along type references (typedef chains, anonymous members, array
/// dimensions) so that a corrupt, cyclic BTF gives an error instead of hanging or overflowing
/// the stack. Real kernel types nest a handful of levels at most.
const MAX_DEPTH: u32 = 64;
const TRACEPOINT_TYPEDEF_PREFIX: &str = "btf_trace_";

// BTF_KIND_* values from include/uapi/linux/btf.h.
pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors from loading kernel BTF or looking members up in it.
///
/// Every message names the file, struct or member involved and says what to do about it, since
/// these surface to the operator at start-up.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// `/sys/kernel/btf/vmlinux` does not exist.
    #[error(
        "kernel BTF not found at {path}: this kernel was built without CONFIG_DEBUG_INFO_BTF; \
         observer needs BTF (kernel >= 5.4 built with CONFIG_DEBUG_INFO_BTF=y)"
    )]
    KernelBtfMissing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The BTF file exists (or was named explicitly) but could not be read.
    #[error("cannot read BTF from {path}: check that the file exists and is readable by this user")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The data does not start with the BTF magic number.
    #[error(
        "{origin} is not BTF: it starts with {found:#06x} instead of the BTF magic 0xeb9f; \
         pass the kernel's BTF (e.g. {SYS_FS_VMLINUX})"
    )]
    BadMagic {
        /// The file the data came from, or "in-memory data" for [`Btf::parse`].
        origin: String,
        /// The first two bytes, read little-endian.
        found: u16,
    },
    /// The BTF was produced for a big-endian machine.
    #[error(
        "{origin} is big-endian BTF; observer only reads little-endian BTF, as its eBPF programs \
         only run on little-endian kernels (x86_64, aarch64)"
    )]
    BigEndian {
        /// The file the data came from, or "in-memory data" for [`Btf::parse`].
        origin: String,
    },
    /// The header announces a BTF version this parser does not know.
    #[error(
        "{origin} has BTF version {version}, but observer only understands version \
         {SUPPORTED_VERSION}; a newer observer is needed for this kernel"
    )]
    UnsupportedVersion {
        /// The file the data came from, or "in-memory data" for [`Btf::parse`].
        origin: String,
        /// The version byte found in the header.
        version: u8,
    },
    /// The data is truncated or internally inconsistent.
    #[error(
        "malformed BTF ({origin}): {reason}; the data is truncated or corrupt \
         (if this is {SYS_FS_VMLINUX}, please report it with the kernel version)"
    )]
    Malformed {
        /// The file the data came from, or "in-memory data" for [`Btf::parse`].
        origin: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// A member path was empty or had an empty component (`"a..b"`).
    #[error(
        "invalid member path `{path}` for struct `{struct_name}`: expected member names \
         separated by dots, e.g. `__sk_common.skc_daddr`"
    )]
    InvalidPath {
        /// The struct the path was meant for.
        struct_name: String,
        /// The offending path.
        path: String,
    },
    /// No struct or union of that name exists in the kernel's BTF.
    #[error(
        "struct or union `{struct_name}` not found in the kernel's BTF; this kernel does not \
         define it (it may be too old, or built without the subsystem that declares it)"
    )]
    StructNotFound {
        /// The struct or union name looked up.
        struct_name: String,
    },
    /// A step of the member path names no member.
    #[error(
        "kernel struct `{struct_name}` has no member `{path}`: {container} has no member \
         `{member}`; this kernel's layout differs from what observer expects"
    )]
    MemberNotFound {
        /// The struct the lookup started from.
        struct_name: String,
        /// The full member path looked up.
        path: String,
        /// The struct or union searched for `member`, e.g. "struct sock_common".
        container: String,
        /// The path component that was not found.
        member: String,
    },
    /// A step of the member path goes through something that has no members.
    #[error(
        "cannot resolve `{struct_name}.{path}`: `{struct_name}.{prefix}` is a {kind}, not a \
         struct or union, so it has no member `{member}`"
    )]
    NotAStruct {
        /// The struct the lookup started from.
        struct_name: String,
        /// The full member path looked up.
        path: String,
        /// The part of the path that resolved to a non-struct type.
        prefix: String,
        /// The BTF kind of that type, e.g. "pointer".
        kind: &'static str,
        /// The path component that could not be looked up.
        member: String,
    },
    /// The member is a bitfield, which has no byte offset or byte size of its own.
    #[error(
        "`{struct_name}.{path}` is a bitfield ({bits} bits at bit offset {bit_offset}); it is \
         not byte-addressable, so an eBPF program cannot read it at a byte offset"
    )]
    Bitfield {
        /// The struct the lookup started from.
        struct_name: String,
        /// The member path looked up.
        path: String,
        /// The bitfield's offset in bits from the start of `struct_name`.
        bit_offset: u64,
        /// The bitfield's width in bits.
        bits: u32,
    },
    /// The member's type has no size (e.g. a function or `void`).
    #[error(
        "cannot tell the size of `{struct_name}.{path}`: its type is a {kind}, which has no size"
    )]
    NoSize {
        /// The struct the lookup started from.
        struct_name: String,
        /// The member path looked up.
        path: String,
        /// The BTF kind of the member's type.
        kind: &'static str,
    },
}

/// The kernel's BTF type information, parsed once and then queried for struct member offsets,
/// member sizes and tracepoint names.
pub struct Btf {
    /// Where the data came from, for error messages.
    origin: String,
    /// The whole BTF blob; type records and strings are decoded from it on demand.
    data: Vec<u8>,
    /// Start and end of the string section within `data`.
    strings: (usize, usize),
    /// One record per type id; index 0 is the implicit `void`, as BTF type ids start at 1.
    types: Vec<TypeRecord>,
    /// Struct and union names to type ids. A name can map to several ids: vmlinux BTF may hold
    /// duplicates or empty definitions next to the real one.
    composites: HashMap<Box<str>, Vec<u32>>,
    /// Tracepoint names, from the `btf_trace_<name>` typedefs.
    /// Tracepoint name -> id of its `btf_trace_<name>` typedef.
    tracepoints: HashMap<Box<str>, u32>,
    /// Pointer width in bytes, from the kernel's `long` type: BTF pointers do not record their
    /// size, and the kernel's width need not match this process's.
    pointer_size: Option<u32>,
}

/// The fixed part of a type record, plus where its kind-specific data starts in `Btf::data`.
#[derive(Clone, Copy)]
struct TypeRecord {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    extra: usize,
}

impl TypeRecord {
    const VOID: Self = Self {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    /// Bits 24..28 of `info`.
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    /// Bits 0..15 of `info`: member count for structs and unions.
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    /// Bit 31 of `info`: for structs and unions, member offsets pack a bitfield size.
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// One decoded `struct btf_member`.
struct Member {
    name_off: u32,
    type_id: u32,
    offset: u32,
}

/// Where a member was found.
struct Located {
    /// Offset in bits from the start of the struct the search began in.
    bit_offset: u64,
    /// The member's type id, before skipping typedefs and modifiers.
    type_id: u32,
    /// Bitfield width from a `kind_flag` struct's member offset; 0 when not a bitfield.
    bitfield_bits: u32,
}

impl fmt::Debug for Btf {
    // The derived form would dump megabytes of raw data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("origin", &self.origin)
            .field("types", &self.types.len().saturating_sub(1))
            .field("struct_names", &self.composites.len())
            .field("tracepoints", &self.tracepoints.len())
            .finish_non_exhaustive()
    }
}

impl Btf {
    /// Reads and parses the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    ///
    /// A missing file gets its own error ([`BtfError::KernelBtfMissing`]) that explains the
    /// kernel configuration observer needs.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = Path::new(SYS_FS_VMLINUX);
        match std::fs::read(path) {
            Ok(data) => Self::parse_owned(data, path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BtfError::KernelBtfMissing {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(BtfError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads and parses a raw BTF file, e.g. a copy of another machine's
    /// `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_owned(data, path.display().to_string())
    }

    /// Parses raw little-endian BTF from memory.
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::parse_owned(bytes.to_vec(), "in-memory data".to_owned())
    }

    /// Byte offset of `path` inside struct (or union) `struct_name`.
    ///
    /// `path` is member names separated by dots (`"a.b.c"`); each step follows the member's type
    /// through typedefs and `const`/`volatile`/`restrict` to a struct or union. Anonymous struct
    /// and union members are searched transparently, as C does: `sock.__sk_common.skc_daddr`
    /// resolves although `skc_daddr` sits in an anonymous union inside an anonymous struct.
    ///
    /// If the BTF has several structs named `struct_name`, complete definitions are tried first
    /// and the first one that has the member wins.
    ///
    /// Fails if the struct or a member does not exist, or if the member is a bitfield, which has
    /// no byte offset.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let found = self.locate(struct_name, path)?;
        self.ensure_byte_addressable(struct_name, path, &found)?;
        u32::try_from(found.bit_offset / 8).map_err(|_| {
            self.malformed(format!(
                "offset of `{struct_name}.{path}` ({} bits) does not fit in 32 bits",
                found.bit_offset
            ))
        })
    }

    /// Size in bytes of the type of member `path` of struct `struct_name`, resolved through
    /// typedefs and modifiers, so that callers can check a field has the width their eBPF program
    /// reads. Arrays count all their elements; pointers have the kernel's pointer width.
    ///
    /// `path` is interpreted as in [`Btf::member_offset`], with the same errors, plus
    /// [`BtfError::NoSize`] for members whose type has no size.
    pub fn member_size(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let found = self.locate(struct_name, path)?;
        self.ensure_byte_addressable(struct_name, path, &found)?;
        self.type_size(found.type_id, 0)?
            .ok_or_else(|| BtfError::NoSize {
                struct_name: struct_name.to_owned(),
                path: path.to_owned(),
                kind: self
                    .skip_modifiers(found.type_id)
                    .and_then(|id| self.record(id))
                    .map_or("type", |t| kind_name(t.kind())),
            })
    }

    /// Whether the kernel has a BTF-enabled tracepoint `name` (e.g. `"sched_switch"`), which the
    /// kernel records as a typedef `btf_trace_<name>`.
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.tracepoints.contains_key(name)
    }

    /// How many arguments tracepoint `name` passes to a BTF program (its `btf_trace_<name>`
    /// typedef is a pointer to a function whose first parameter is the context, not an
    /// argument), or `None` if there is no such tracepoint. Tracepoints gain arguments across
    /// kernel versions; a program must not read one the kernel does not pass.
    pub fn tracepoint_args(&self, name: &str) -> Result<Option<usize>, BtfError> {
        let Some(&typedef) = self.tracepoints.get(name) else {
            return Ok(None);
        };
        let pointer = self.record(self.skip_modifiers(typedef)?)?;
        let proto = self.record(self.skip_modifiers(pointer.size_or_type)?)?;
        if pointer.kind() != KIND_PTR || proto.kind() != KIND_FUNC_PROTO {
            return Err(self.malformed(format!(
                "btf_trace_{name} is not a pointer to a function prototype"
            )));
        }
        Ok(Some(proto.vlen().saturating_sub(1)))
    }

    fn parse_owned(data: Vec<u8>, origin: String) -> Result<Self, BtfError> {
        let malformed = |reason: String| BtfError::Malformed {
            origin: origin.clone(),
            reason,
        };

        let Some(&magic) = data.first_chunk::<2>() else {
            return Err(malformed(format!(
                "{} bytes is too short for a BTF header",
                data.len()
            )));
        };
        match u16::from_le_bytes(magic) {
            MAGIC => {}
            found if found.swap_bytes() == MAGIC => return Err(BtfError::BigEndian { origin }),
            found => return Err(BtfError::BadMagic { origin, found }),
        }
        if data.len() < HEADER_LEN {
            return Err(malformed(format!(
                "{} bytes is too short for the {HEADER_LEN}-byte BTF header",
                data.len()
            )));
        }
        let header_word = |at: usize| {
            u32_at(&data, at)
                .map(|w| w as usize)
                .ok_or_else(|| malformed("truncated header".to_owned()))
        };
        let version = data.get(2).copied().unwrap_or_default();
        if version != SUPPORTED_VERSION {
            return Err(BtfError::UnsupportedVersion { origin, version });
        }
        // Sections are placed relative to the end of the header, whose length the header itself
        // gives so that it can grow; fields we do not know are skipped.
        let hdr_len = header_word(4)?;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(malformed(format!(
                "header length {hdr_len} is outside {HEADER_LEN}..={}",
                data.len()
            )));
        }
        let section = |name: &str, off_at: usize, len_at: usize| {
            let (off, len) = (header_word(off_at)?, header_word(len_at)?);
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= data.len())
                .ok_or_else(|| {
                    malformed(format!(
                        "{name} section (offset {off}, length {len}) runs past the end of the \
                         {}-byte data",
                        data.len()
                    ))
                })
        };
        let (type_start, type_end) = section("type", 8, 12)?;
        let strings = section("string", 16, 20)?;

        // The string section starts with the empty string (name offset 0 means "anonymous") and
        // every string is NUL-terminated, so the last byte must be NUL too.
        let string_bytes = data.get(strings.0..strings.1).unwrap_or_default();
        if string_bytes.first() != Some(&0) || string_bytes.last() != Some(&0) {
            return Err(malformed(
                "string section does not start and end with a NUL byte".to_owned(),
            ));
        }

        let type_bytes = data.get(type_start..type_end).unwrap_or_default();
        // Most records are a bare 12-byte header or carry a few members; this avoids most
        // reallocation without overshooting much.
        let mut types = Vec::with_capacity(type_bytes.len() / 32 + 1);
        types.push(TypeRecord::VOID);
        let mut composites: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut tracepoints = HashMap::new();
        let mut pointer_size = None;
        let mut pos = 0;
        while pos < type_bytes.len() {
            // Type ids fit in u32: each record takes at least 12 bytes of a u32-sized section.
            let id = types.len() as u32;
            let (Some(name_off), Some(info), Some(size_or_type)) = (
                u32_at(type_bytes, pos),
                u32_at(type_bytes, pos + 4),
                u32_at(type_bytes, pos + 8),
            ) else {
                return Err(malformed(format!(
                    "type id {id}: record header truncated at the end of the type section"
                )));
            };
            let extra = pos + TYPE_RECORD_LEN;
            let record = TypeRecord {
                name_off,
                info,
                size_or_type,
                extra: type_start + extra,
            };
            let kind = record.kind();
            let Some(extra_len) = extra_len(kind, record.vlen()) else {
                return Err(malformed(format!(
                    "type id {id} has unknown kind {kind}; this BTF is newer than observer"
                )));
            };
            let next = extra + extra_len;
            if next > type_bytes.len() {
                return Err(malformed(format!(
                    "type id {id} ({}) runs past the end of the type section",
                    kind_name(kind)
                )));
            }

            let name = || {
                str_at(string_bytes, name_off)
                    .ok_or_else(|| malformed(format!("type id {id} has a bad name offset")))
            };
            match kind {
                KIND_STRUCT | KIND_UNION if name_off != 0 => {
                    let name = name()?;
                    // Look up before inserting so that only new names allocate a key.
                    match composites.get_mut(name) {
                        Some(ids) => ids.push(id),
                        None => {
                            composites.insert(name.into(), vec![id]);
                        }
                    }
                }
                KIND_TYPEDEF => {
                    if let Some(tracepoint) = name()?.strip_prefix(TRACEPOINT_TYPEDEF_PREFIX) {
                        tracepoints.insert(tracepoint.into(), id);
                    }
                }
                // The names pahole and the kernel's own BTF use for `long`.
                KIND_INT if matches!(name()?, "long int" | "long unsigned int") => {
                    pointer_size = Some(size_or_type);
                }
                _ => {}
            }
            types.push(record);
            pos = next;
        }

        Ok(Self {
            origin,
            data,
            strings,
            types,
            composites,
            tracepoints,
            pointer_size,
        })
    }

    /// Finds `path` in struct `struct_name`, trying same-named structs in order of preference.
    fn locate(&self, struct_name: &str, path: &str) -> Result<Located, BtfError> {
        let steps: Vec<&str> = path.split('.').collect();
        if steps.iter().any(|step| step.is_empty()) {
            return Err(BtfError::InvalidPath {
                struct_name: struct_name.to_owned(),
                path: path.to_owned(),
            });
        }
        let mut candidates = self
            .composites
            .get(struct_name)
            .cloned()
            .unwrap_or_default();
        // Complete definitions first; the sort is stable, so BTF order decides among equals.
        candidates.sort_by_key(|&id| {
            self.record(id)
                .map_or(true, |t| t.size_or_type == 0 || t.vlen() == 0)
        });
        let Some((&first, rest)) = candidates.split_first() else {
            return Err(BtfError::StructNotFound {
                struct_name: struct_name.to_owned(),
            });
        };
        // The preferred definition's error is the one worth reporting if no candidate has the
        // member.
        let first_result = self.walk(struct_name, first, &steps, path);
        if first_result.is_ok() {
            return first_result;
        }
        rest.iter()
            .find_map(|&id| self.walk(struct_name, id, &steps, path).ok())
            .map_or(first_result, Ok)
    }

    /// Follows `steps` from struct `root_id`, summing member offsets.
    fn walk(
        &self,
        struct_name: &str,
        root_id: u32,
        steps: &[&str],
        path: &str,
    ) -> Result<Located, BtfError> {
        let mut located = Located {
            bit_offset: 0,
            type_id: root_id,
            bitfield_bits: 0,
        };
        for (i, &step) in steps.iter().enumerate() {
            let id = self.skip_modifiers(located.type_id)?;
            let record = self.record(id)?;
            if !matches!(record.kind(), KIND_STRUCT | KIND_UNION) {
                return Err(BtfError::NotAStruct {
                    struct_name: struct_name.to_owned(),
                    path: path.to_owned(),
                    prefix: steps.get(..i).unwrap_or_default().join("."),
                    kind: kind_name(record.kind()),
                    member: step.to_owned(),
                });
            }
            let Some(member) = self.find_member(id, step, 0)? else {
                return Err(BtfError::MemberNotFound {
                    struct_name: struct_name.to_owned(),
                    path: path.to_owned(),
                    container: self.describe(id)?,
                    member: step.to_owned(),
                });
            };
            located = Located {
                bit_offset: located.bit_offset + member.bit_offset,
                ..member
            };
        }
        Ok(located)
    }

    /// Finds member `name` of struct or union `id`, descending into anonymous struct and union
    /// members the way C name lookup does. Offsets are relative to `id`.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Result<Option<Located>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!(
                "anonymous members of type id {id} nest more than {MAX_DEPTH} levels deep"
            )));
        }
        let record = self.record(id)?;
        let kind_flag = record.kind_flag();
        for member in self.members(&record)? {
            let (bit_offset, bitfield_bits) = if kind_flag {
                (member.offset & 0xff_ffff, member.offset >> 24)
            } else {
                (member.offset, 0)
            };
            let member_name = self.name(member.name_off)?;
            if member_name == name {
                return Ok(Some(Located {
                    bit_offset: bit_offset.into(),
                    type_id: member.type_id,
                    bitfield_bits,
                }));
            }
            if member_name.is_empty() {
                let inner = self.skip_modifiers(member.type_id)?;
                if matches!(self.record(inner)?.kind(), KIND_STRUCT | KIND_UNION)
                    && let Some(found) = self.find_member(inner, name, depth + 1)?
                {
                    return Ok(Some(Located {
                        bit_offset: found.bit_offset + u64::from(bit_offset),
                        ..found
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Rejects bitfields: those of `kind_flag` structs carry their width in the member offset,
    /// older encodings use an unaligned offset or an INT type narrower than its storage.
    fn ensure_byte_addressable(
        &self,
        struct_name: &str,
        path: &str,
        found: &Located,
    ) -> Result<(), BtfError> {
        let mut bits = found.bitfield_bits;
        if bits == 0 {
            let record = self.record(self.skip_modifiers(found.type_id)?)?;
            if record.kind() == KIND_INT {
                // INT data: bits 0..7 width in bits, bits 16..23 bit offset within the storage.
                let encoding = self.u32_at(record.extra)?;
                let width = encoding & 0xff;
                if (encoding >> 16) & 0xff != 0
                    || u64::from(width) != u64::from(record.size_or_type) * 8
                {
                    bits = width;
                }
            }
        }
        if bits != 0 || !found.bit_offset.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                struct_name: struct_name.to_owned(),
                path: path.to_owned(),
                bit_offset: found.bit_offset,
                bits,
            });
        }
        Ok(())
    }

    /// Size in bytes of type `id`, or `None` for types without one (void, functions, ...).
    fn type_size(&self, id: u32, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!(
                "array type id {id} nests more than {MAX_DEPTH} levels deep"
            )));
        }
        let id = self.skip_modifiers(id)?;
        let record = self.record(id)?;
        Ok(match record.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(record.size_or_type)
            }
            KIND_PTR => Some(self.pointer_size.ok_or_else(|| {
                self.malformed("no `long` type to tell the kernel's pointer size".to_owned())
            })?),
            KIND_ARRAY => {
                // ARRAY data: element type, index type, number of elements.
                let element = self.u32_at(record.extra)?;
                let count = self.u32_at(record.extra + 8)?;
                match self.type_size(element, depth + 1)? {
                    Some(size) => Some(size.checked_mul(count).ok_or_else(|| {
                        self.malformed(format!("array type id {id} is larger than 4 GiB"))
                    })?),
                    None => None,
                }
            }
            _ => None,
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            let record = self.record(id)?;
            match record.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = record.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(self.malformed(format!(
            "type id {id} is reached through more than {MAX_DEPTH} typedefs/qualifiers (a cycle?)"
        )))
    }

    /// The members of a struct or union record.
    fn members(&self, record: &TypeRecord) -> Result<impl Iterator<Item = Member>, BtfError> {
        let len = record.vlen() * MEMBER_LEN;
        let bytes = self
            .data
            .get(record.extra..record.extra + len)
            .ok_or_else(|| self.malformed("member list out of bounds".to_owned()))?;
        let (members, _) = bytes.as_chunks::<MEMBER_LEN>();
        Ok(members
            .iter()
            .map(|&[n0, n1, n2, n3, t0, t1, t2, t3, o0, o1, o2, o3]| Member {
                name_off: u32::from_le_bytes([n0, n1, n2, n3]),
                type_id: u32::from_le_bytes([t0, t1, t2, t3]),
                offset: u32::from_le_bytes([o0, o1, o2, o3]),
            }))
    }

    /// "struct sock_common", or "anonymous union" for a nameless one, for error messages.
    fn describe(&self, id: u32) -> Result<String, BtfError> {
        let record = self.record(id)?;
        let kind = kind_name(record.kind());
        Ok(match self.name(record.name_off)? {
            "" => format!("anonymous {kind} (type id {id})"),
            name => format!("{kind} {name}"),
        })
    }

    fn record(&self, id: u32) -> Result<TypeRecord, BtfError> {
        self.types.get(id as usize).copied().ok_or_else(|| {
            self.malformed(format!(
                "reference to type id {id}, but there are only {} types",
                self.types.len() - 1
            ))
        })
    }

    fn name(&self, name_off: u32) -> Result<&str, BtfError> {
        self.data
            .get(self.strings.0..self.strings.1)
            .and_then(|strings| str_at(strings, name_off))
            .ok_or_else(|| self.malformed(format!("bad name offset {name_off}")))
    }

    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        u32_at(&self.data, at)
            .ok_or_else(|| self.malformed(format!("type data at byte {at} out of bounds")))
    }

    fn malformed(&self, reason: String) -> BtfError {
        BtfError::Malformed {
            origin: self.origin.clone(),
            reason,
        }
    }
}

/// Length of the kind-specific data after a type record, or `None` for an unknown kind, whose
/// length, and so where the next record starts, cannot be known.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        _ => return None,
    })
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        0 => "void",
        KIND_INT => "integer",
        KIND_PTR => "pointer",
        KIND_ARRAY => "array",
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM | KIND_ENUM64 => "enum",
        KIND_FWD => "forward declaration",
        KIND_TYPEDEF => "typedef",
        KIND_VOLATILE => "volatile",
        KIND_CONST => "const",
        KIND_RESTRICT => "restrict",
        KIND_FUNC => "function",
        KIND_FUNC_PROTO => "function prototype",
        KIND_VAR => "variable",
        KIND_DATASEC => "data section",
        KIND_FLOAT => "float",
        KIND_DECL_TAG => "declaration tag",
        KIND_TYPE_TAG => "type tag",
        _ => "unknown kind",
    }
}

/// The little-endian u32 at byte `at` of `bytes`, if it is in bounds.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// The NUL-terminated UTF-8 string at `offset` in the string section.
fn str_at(strings: &[u8], offset: u32) -> Option<&str> {
    let tail = strings.get(offset as usize..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(tail.get(..len)?).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Instant;

    /// The running kernel's BTF, parsed once for all tests. `None` (with a notice) when the
    /// kernel has none, except under CI, where a missing BTF must fail the run rather than
    /// silently skip the tests that matter most.
    fn kernel_btf() -> Option<&'static Btf> {
        static BTF: OnceLock<Option<Btf>> = OnceLock::new();
        BTF.get_or_init(|| {
            if !Path::new(SYS_FS_VMLINUX).exists() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{SYS_FS_VMLINUX} is missing and CI is set: the BTF tests need a kernel \
                     built with CONFIG_DEBUG_INFO_BTF=y"
                );
                eprintln!("skipping kernel BTF test: {SYS_FS_VMLINUX} is missing");
                return None;
            }
            let start = Instant::now();
            let btf = Btf::from_sys_fs().expect("parse the running kernel's BTF");
            eprintln!("parsed {SYS_FS_VMLINUX} in {:?}: {btf:?}", start.elapsed());
            Some(btf)
        })
        .as_ref()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn pt_regs_layout_is_the_x86_64_abi() {
        let Some(btf) = kernel_btf() else { return };
        assert_eq!(btf.member_offset("pt_regs", "si").unwrap(), 104);
        assert_eq!(btf.member_offset("pt_regs", "di").unwrap(), 112);
        assert_eq!(btf.member_offset("pt_regs", "orig_ax").unwrap(), 120);
        assert_eq!(btf.member_size("pt_regs", "si").unwrap(), 8);
    }

    #[test]
    fn sock_common_addresses_and_ports() {
        let Some(btf) = kernel_btf() else { return };
        // Fixed for well over a decade: the address and port pairs lead struct sock_common so
        // that the socket hash lookups compare them as single words.
        let expected = [
            ("skc_daddr", 0, 4),
            ("skc_rcv_saddr", 4, 4),
            ("skc_dport", 12, 2),
            ("skc_num", 14, 2),
            ("skc_family", 16, 2),
            ("skc_state", 18, 1),
        ];
        for (field, offset, size) in expected {
            assert_eq!(
                btf.member_offset("sock_common", field).unwrap(),
                offset,
                "{field}"
            );
            assert_eq!(
                btf.member_size("sock_common", field).unwrap(),
                size,
                "{field}"
            );
            let through_sock = format!("__sk_common.{field}");
            assert_eq!(
                btf.member_offset("sock", &through_sock).unwrap(),
                offset,
                "{field}"
            );
        }
        // Where the IPv6 address lands depends on the kernel configuration; its size does not.
        let sock_common_size = btf.member_size("sock", "__sk_common").unwrap();
        let v6 = btf.member_offset("sock_common", "skc_v6_daddr").unwrap();
        assert_eq!(btf.member_size("sock_common", "skc_v6_daddr").unwrap(), 16);
        assert!(
            v6 + 16 <= sock_common_size,
            "skc_v6_daddr at {v6} of {sock_common_size}"
        );
        // Paths step into nested members: skc_v6_daddr is a struct in6_addr wrapping a union.
        assert_eq!(
            btf.member_size("sock_common", "skc_v6_daddr.in6_u")
                .unwrap(),
            16
        );
    }

    #[test]
    fn block_request_fields() {
        let Some(btf) = kernel_btf() else { return };
        assert_eq!(btf.member_size("request", "q").unwrap(), 8);
        btf.member_offset("request", "q").unwrap();
        assert_eq!(btf.member_size("request", "cmd_flags").unwrap(), 4);
        let size = btf.member_size("request_queue", "disk").unwrap();
        assert_eq!(size, 8);
        btf.member_offset("request_queue", "disk").unwrap();
        assert_eq!(btf.member_offset("gendisk", "major").unwrap(), 0);
        assert_eq!(btf.member_size("gendisk", "major").unwrap(), 4);
        assert_eq!(btf.member_offset("gendisk", "first_minor").unwrap(), 4);
        assert_eq!(btf.member_size("gendisk", "first_minor").unwrap(), 4);
    }

    #[test]
    fn kernel_tracepoints() {
        let Some(btf) = kernel_btf() else { return };
        for tracepoint in [
            "sched_switch",
            "sched_wakeup",
            "sched_wakeup_new",
            "block_rq_insert",
            "block_rq_issue",
            "block_rq_complete",
            "tcp_retransmit_skb",
            "contention_begin",
            "contention_end",
            "sys_enter",
            "sys_exit",
        ] {
            assert!(btf.has_tracepoint(tracepoint), "{tracepoint}");
        }
        assert!(!btf.has_tracepoint("no_such_tracepoint"));
        assert!(!btf.has_tracepoint(""));
        // Argument counts: stable ones exactly; tcp_retransmit_skb gained `err` in 6.x.
        let args = |tp| btf.tracepoint_args(tp).unwrap();
        assert_eq!(args("sched_switch"), Some(4));
        assert_eq!(args("sched_wakeup"), Some(1));
        assert_eq!(args("contention_begin"), Some(2));
        assert_eq!(args("sys_enter"), Some(2));
        assert!(matches!(args("tcp_retransmit_skb"), Some(2 | 3)));
        assert_eq!(args("no_such_tracepoint"), None);
    }

    #[test]
    fn kernel_lookup_errors_name_what_is_missing() {
        let Some(btf) = kernel_btf() else { return };
        let err = btf.member_offset("no_such_struct", "x").unwrap_err();
        assert!(matches!(err, BtfError::StructNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("`no_such_struct`"), "{err}");

        let err = btf
            .member_offset("sock", "__sk_common.no_such_member")
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, BtfError::MemberNotFound { .. }), "{err:?}");
        assert!(message.contains("`sock`"), "{message}");
        assert!(message.contains("struct sock_common"), "{message}");
        assert!(message.contains("`no_such_member`"), "{message}");

        // skc_prot is a pointer: following it would need a second read in the program.
        let err = btf
            .member_offset("sock", "__sk_common.skc_prot.name")
            .unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::NotAStruct {
                    kind: "pointer",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn kernel_bitfields_are_rejected() {
        let Some(btf) = kernel_btf() else { return };
        for (struct_name, field) in [
            ("sock_common", "skc_reuse"),
            ("task_struct", "sched_reset_on_fork"),
        ] {
            for result in [
                btf.member_offset(struct_name, field),
                btf.member_size(struct_name, field),
            ] {
                let err = result.unwrap_err();
                assert!(matches!(err, BtfError::Bitfield { .. }), "{err:?}");
                assert!(err.to_string().contains(field), "{err}");
            }
        }
    }

    #[test]
    fn truncated_kernel_btf_never_panics() {
        let Some(btf) = kernel_btf() else { return };
        let full = &btf.data;
        let mut lengths: Vec<usize> = (0..64).collect();
        lengths.extend((1..500).map(|i| full.len() / 500 * i));
        lengths.push(full.len() - 1);
        for len in lengths {
            let err = Btf::parse(&full[..len]).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn kernel_btf_with_a_short_type_section_never_panics() {
        let Some(btf) = kernel_btf() else { return };
        // Shrinking type_len cuts the type section at arbitrary points, mostly mid-record,
        // which the length checks on the whole file do not exercise.
        let type_len = u32_at(&btf.data, 12).unwrap();
        for i in 1..40 {
            let mut data = btf.data.clone();
            let cut = type_len / 40 * i + i % 7;
            data[12..16].copy_from_slice(&cut.to_le_bytes());
            if let Ok(short) = Btf::parse(&data) {
                // Lookups may fail on a half type table, but must not panic either.
                let _ = short.member_offset("sock", "__sk_common.skc_daddr");
                let _ = short.member_size("task_struct", "pid");
            }
        }
    }

    /// Assembles little-endian BTF from type records, for tests that need exact control (also
    /// the signals' tests of layouts this kernel does not have).
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        /// Appends a record without members and returns its type id.
        pub(crate) fn add(
            &mut self,
            name: &str,
            kind: u32,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            self.record(name, kind << 24, size_or_type, extra)
        }

        /// Appends a struct or union; members are (name, type id, offset as encoded).
        pub(crate) fn composite(
            &mut self,
            kind: u32,
            name: &str,
            kind_flag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut words = Vec::new();
            for &(member, type_id, offset) in members {
                words.extend([self.string(member), type_id, offset]);
            }
            let info = u32::from(kind_flag) << 31 | kind << 24 | members.len() as u32;
            self.record(name, info, size, &words)
        }

        fn record(&mut self, name: &str, info: u32, size_or_type: u32, extra: &[u32]) -> u32 {
            let name_off = self.string(name);
            for word in [name_off, info, size_or_type].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            offset
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[SUPPORTED_VERSION, 0]);
            let type_len = self.types.len() as u32;
            let str_len = self.strings.len() as u32;
            for word in [HEADER_LEN as u32, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// INT data for a plain integer of `bits` bits.
    const fn int_bits(bits: u32) -> [u32; 1] {
        [bits]
    }

    /// A small BTF covering the lookup rules, in C terms:
    /// ```c
    /// struct inner { int a; int b; };
    /// typedef const struct inner inner_t;
    /// struct dup {};                      // empty duplicate, listed first
    /// struct dup { long x; };
    /// struct outer {                      // kind_flag set: offsets pack bitfield sizes
    ///     long first;                     // 0
    ///     union {                         // 8, anonymous
    ///         int u1;
    ///         struct { short s1; short s2; };
    ///     };
    ///     inner_t nested;                 // 12
    ///     unsigned int flag: 3;           // bit 160
    ///     int *ptr;                       // 24
    ///     int arr[5];                     // 32
    ///     <function> func;                // 52, a member of FUNC type, which has no size
    /// };
    /// struct old_style { int whole; int narrow: 4 /* INT with nr_bits 4 */; };
    /// typedef int btf_trace_my_event;
    /// typedef loop2 loop1; typedef loop1 loop2;   // a cycle
    /// struct cyclic { loop1 looping; };
    /// ```
    fn synthetic() -> Btf {
        let mut b = Builder::new();
        let int = b.add("int", KIND_INT, 4, &int_bits(32));
        let long = b.add("long int", KIND_INT, 8, &int_bits(64));
        let short = b.add("short", KIND_INT, 2, &int_bits(16));
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            false,
            8,
            &[("a", int, 0), ("b", int, 32)],
        );
        let const_inner = b.add("", KIND_CONST, inner, &[]);
        let inner_t = b.add("inner_t", KIND_TYPEDEF, const_inner, &[]);
        b.composite(KIND_STRUCT, "dup", false, 0, &[]);
        b.composite(KIND_STRUCT, "dup", false, 8, &[("x", long, 0)]);
        let anon_struct = b.composite(
            KIND_STRUCT,
            "",
            false,
            4,
            &[("s1", short, 0), ("s2", short, 16)],
        );
        let anon_union = b.composite(
            KIND_UNION,
            "",
            false,
            4,
            &[("u1", int, 0), ("", anon_struct, 0)],
        );
        let ptr = b.add("", KIND_PTR, int, &[]);
        let arr = b.add("", KIND_ARRAY, 0, &[int, int, 5]);
        let proto = b.add("", KIND_FUNC_PROTO, int, &[]);
        let func = b.add("f", KIND_FUNC, proto, &[]);
        b.composite(
            KIND_STRUCT,
            "outer",
            true,
            56,
            &[
                ("first", long, 0),
                ("", anon_union, 64),
                ("nested", inner_t, 96),
                ("flag", int, 3 << 24 | 160),
                ("ptr", ptr, 192),
                ("arr", arr, 256),
                ("func", func, 416),
            ],
        );
        let int4 = b.add("int", KIND_INT, 4, &int_bits(4));
        b.composite(
            KIND_STRUCT,
            "old_style",
            false,
            8,
            &[("whole", int, 0), ("narrow", int4, 32)],
        );
        b.add("btf_trace_my_event", KIND_TYPEDEF, int, &[]);
        let loop1 = b.next_id;
        b.add("loop1", KIND_TYPEDEF, loop1 + 1, &[]);
        b.add("loop2", KIND_TYPEDEF, loop1, &[]);
        b.composite(KIND_STRUCT, "cyclic", false, 8, &[("looping", loop1, 0)]);
        Btf::parse(&b.build()).expect("synthetic BTF parses")
    }

    #[test]
    fn synthetic_offsets_and_sizes() {
        let btf = synthetic();
        let cases = [
            ("first", 0, 8),
            ("u1", 8, 4),
            ("s1", 8, 2),
            ("s2", 10, 2),
            ("nested", 12, 8),
            ("nested.a", 12, 4),
            ("nested.b", 16, 4),
            ("ptr", 24, 8),
            ("arr", 32, 20),
        ];
        for (path, offset, size) in cases {
            assert_eq!(btf.member_offset("outer", path).unwrap(), offset, "{path}");
            assert_eq!(btf.member_size("outer", path).unwrap(), size, "{path}");
        }
        assert_eq!(btf.member_offset("old_style", "whole").unwrap(), 0);
        // The complete `dup` wins over the empty one listed before it.
        assert_eq!(btf.member_offset("dup", "x").unwrap(), 0);
        assert_eq!(btf.member_size("dup", "x").unwrap(), 8);
    }

    #[test]
    fn synthetic_errors() {
        let btf = synthetic();
        for (struct_name, path) in [("outer", "flag"), ("old_style", "narrow")] {
            let err = btf.member_offset(struct_name, path).unwrap_err();
            assert!(matches!(err, BtfError::Bitfield { .. }), "{err:?}");
            let err = btf.member_size(struct_name, path).unwrap_err();
            assert!(matches!(err, BtfError::Bitfield { .. }), "{err:?}");
        }
        let err = btf.member_size("outer", "func").unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::NoSize {
                    kind: "function",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(btf.member_offset("outer", "func").unwrap(), 52);

        let err = btf.member_offset("outer", "nested.c").unwrap_err();
        assert!(
            err.to_string().contains("struct inner has no member `c`"),
            "{err}"
        );
        let err = btf.member_offset("outer", "first.x").unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::NotAStruct {
                    kind: "integer",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = btf.member_offset("dup", "y").unwrap_err();
        assert!(matches!(err, BtfError::MemberNotFound { .. }), "{err:?}");
        for path in ["", ".", "nested.", ".first", "nested..a"] {
            let err = btf.member_offset("outer", path).unwrap_err();
            assert!(
                matches!(err, BtfError::InvalidPath { .. }),
                "{path:?}: {err:?}"
            );
        }
        // Anonymous members are found through, not by an empty name.
        let err = btf.member_offset("inner", "x").unwrap_err();
        assert!(matches!(err, BtfError::MemberNotFound { .. }), "{err:?}");

        // A typedef cycle is reported, not followed forever.
        let err = btf.member_offset("cyclic", "looping.x").unwrap_err();
        assert!(matches!(err, BtfError::Malformed { .. }), "{err:?}");
        assert!(btf.has_tracepoint("my_event"));
        assert!(!btf.has_tracepoint("btf_trace_my_event"));
    }

    #[test]
    fn bad_headers_are_reported() {
        let valid = {
            let mut b = Builder::new();
            b.add("int", KIND_INT, 4, &int_bits(32));
            b.build()
        };
        Btf::parse(&valid).unwrap();

        let mut big_endian = valid.clone();
        big_endian[..2].copy_from_slice(&MAGIC.to_be_bytes());
        let mut version = valid.clone();
        version[2] = 2;
        let mut short_header = valid.clone();
        short_header[4..8].copy_from_slice(&8u32.to_le_bytes());
        let mut type_section_too_long = valid.clone();
        type_section_too_long[12..16].copy_from_slice(&1000u32.to_le_bytes());
        let mut half_record = valid.clone();
        half_record[12..16].copy_from_slice(&14u32.to_le_bytes());
        let mut unknown_kind = valid.clone();
        unknown_kind[HEADER_LEN + 7] = 31;
        let mut unterminated_strings = valid.clone();
        *unterminated_strings.last_mut().unwrap() = b'x';
        let mut huge_offset = valid.clone();
        huge_offset[8..12].copy_from_slice(&u32::MAX.to_le_bytes());

        let cases: [(&str, &[u8], &str); 12] = [
            ("empty", &[], "too short"),
            ("one byte", &[0x9f], "too short"),
            ("magic only", &[0x9f, 0xeb], "too short"),
            ("ELF file", b"\x7fELF\x02\x01\x01", "not BTF"),
            ("big endian", &big_endian, "big-endian"),
            ("version 2", &version, "version 2"),
            ("header length 8", &short_header, "header length"),
            (
                "type section past the end",
                &type_section_too_long,
                "type section",
            ),
            ("half a record", &half_record, "type id 1"),
            ("unknown kind", &unknown_kind, "unknown kind 31"),
            ("unterminated strings", &unterminated_strings, "NUL"),
            ("offset overflow", &huge_offset, "type section"),
        ];
        for (what, bytes, expected) in cases {
            let err = Btf::parse(bytes).unwrap_err();
            assert!(err.to_string().contains(expected), "{what}: {err}");
        }
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let path = Path::new("/nonexistent/observer-btf-test");
        let err = Btf::from_file(path).unwrap_err();
        assert!(matches!(err, BtfError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/observer-btf-test"),
            "{err}"
        );
    }
}
