//! The few facts about an ELF file that the dynamic loader uses to find libraries, and the
//! `.modinfo` section of kernel modules.
//!
//! Dynamic information is read through the program headers (`PT_INTERP`, `PT_DYNAMIC`, the
//! `PT_LOAD` segment holding the string table), exactly like `ld.so` does, so it works on
//! binaries whose section headers were stripped. Every offset is bounds-checked by the `object`
//! crate; anything inconsistent is an [`ElfError`], never a panic.

use object::elf::{FileHeader32, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

use crate::error::ElfError;

/// `EI_CLASS`: 32- or 64-bit objects. The loader never mixes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElfClass {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

/// What the dynamic loader needs to know about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    /// 32- or 64-bit.
    pub class: ElfClass,
    /// Byte order.
    pub little_endian: bool,
    /// `e_machine` (62 is x86-64).
    pub machine: u16,
    /// `e_type` (2 executable, 3 shared object or PIE, 1 relocatable such as a kernel module).
    pub file_type: u16,
    /// The `PT_INTERP` path, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH`, split at `:` (unexpanded).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH`, split at `:` (unexpanded).
    pub runpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
}

impl ElfInfo {
    /// True when the loader would accept `other` as a library for an object like `self`:
    /// same class, byte order and machine.
    pub fn is_compatible_with(&self, other: &ElfInfo) -> bool {
        self.class == other.class
            && self.little_endian == other.little_endian
            && self.machine == other.machine
    }

    /// A static executable (or a static PIE) needs nothing from the file system.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Parses the loader-relevant parts of an ELF file.
pub fn parse_elf(data: &[u8]) -> Result<ElfInfo, ElfError> {
    match elf_class(data)? {
        ElfClass::Elf32 => parse_dynamic::<FileHeader32<Endianness>>(data, ElfClass::Elf32),
        ElfClass::Elf64 => parse_dynamic::<FileHeader64<Endianness>>(data, ElfClass::Elf64),
    }
}

/// The contents of the named section (e.g. `.modinfo`), `None` when there is no such section.
pub fn section_data<'data>(data: &'data [u8], name: &str) -> Result<Option<&'data [u8]>, ElfError> {
    match elf_class(data)? {
        ElfClass::Elf32 => find_section::<FileHeader32<Endianness>>(data, name),
        ElfClass::Elf64 => find_section::<FileHeader64<Endianness>>(data, name),
    }
}

fn elf_class(data: &[u8]) -> Result<ElfClass, ElfError> {
    if data.len() < 5 || data[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    match data[4] {
        object::elf::ELFCLASS32 => Ok(ElfClass::Elf32),
        object::elf::ELFCLASS64 => Ok(ElfClass::Elf64),
        other => Err(ElfError::Malformed(format!("unknown ELF class {other}"))),
    }
}

fn malformed(error: impl std::fmt::Display) -> ElfError {
    ElfError::Malformed(error.to_string())
}

fn parse_dynamic<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    class: ElfClass,
) -> Result<ElfInfo, ElfError> {
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let segments = header.program_headers(endian, data).map_err(malformed)?;

    let mut interpreter = None;
    let mut dynamic = None;
    for segment in segments {
        if let Some(path) = segment.interpreter(endian, data).map_err(malformed)? {
            interpreter = Some(utf8(path, "PT_INTERP")?);
        }
        if let Some(entries) = segment.dynamic(endian, data).map_err(malformed)? {
            dynamic = Some(entries);
        }
    }

    let mut info = ElfInfo {
        class,
        little_endian: endian == Endianness::Little,
        machine: header.e_machine(endian),
        file_type: header.e_type(endian),
        interpreter,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
        soname: None,
    };
    let Some(entries) = dynamic else {
        return Ok(info);
    };

    // First pass: where the string table is. Second pass: the strings.
    let mut strtab_address = None;
    let mut strtab_size = None;
    for entry in entries {
        let tag: u64 = entry.d_tag(endian).into();
        let value: u64 = entry.d_val(endian).into();
        match u32::try_from(tag) {
            Ok(object::elf::DT_NULL) => break,
            Ok(object::elf::DT_STRTAB) => strtab_address = Some(value),
            Ok(object::elf::DT_STRSZ) => strtab_size = Some(value),
            _ => {}
        }
    }
    let mut strings: Option<&[u8]> = None;
    let mut string_at = |offset: u64, what: &str| -> Result<String, ElfError> {
        if strings.is_none() {
            let (Some(address), Some(size)) = (strtab_address, strtab_size) else {
                return Err(ElfError::Malformed(format!(
                    "{what} present but DT_STRTAB/DT_STRSZ missing"
                )));
            };
            strings = Some(
                load_segment_bytes::<Elf>(header, endian, data, address, size)?.ok_or_else(
                    || ElfError::Malformed("DT_STRTAB is outside every PT_LOAD segment".into()),
                )?,
            );
        }
        let table = strings.unwrap_or_default();
        let start = usize::try_from(offset)
            .ok()
            .filter(|start| *start < table.len())
            .ok_or_else(|| ElfError::Malformed(format!("{what} string offset out of range")))?;
        let length = table[start..]
            .iter()
            .position(|&byte| byte == 0)
            .ok_or_else(|| ElfError::Malformed(format!("{what} string is not terminated")))?;
        utf8(&table[start..start + length], what)
    };
    for entry in entries {
        let tag: u64 = entry.d_tag(endian).into();
        let value: u64 = entry.d_val(endian).into();
        match u32::try_from(tag) {
            Ok(object::elf::DT_NULL) => break,
            Ok(object::elf::DT_NEEDED) => info.needed.push(string_at(value, "DT_NEEDED")?),
            Ok(object::elf::DT_SONAME) => info.soname = Some(string_at(value, "DT_SONAME")?),
            Ok(object::elf::DT_RPATH) => {
                info.rpath = split_path_list(&string_at(value, "DT_RPATH")?)
            }
            Ok(object::elf::DT_RUNPATH) => {
                info.runpath = split_path_list(&string_at(value, "DT_RUNPATH")?)
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The file bytes backing `[address, address + size)` of the loaded image.
fn load_segment_bytes<'data, Elf: FileHeader<Endian = Endianness>>(
    header: &Elf,
    endian: Endianness,
    data: &'data [u8],
    address: u64,
    size: u64,
) -> Result<Option<&'data [u8]>, ElfError> {
    let segments = header.program_headers(endian, data).map_err(malformed)?;
    for segment in segments {
        if segment.p_type(endian) != object::elf::PT_LOAD {
            continue;
        }
        match segment.data_range(endian, data, address, size) {
            Ok(Some(bytes)) => return Ok(Some(bytes)),
            Ok(None) => continue,
            Err(()) => return Err(ElfError::Malformed("PT_LOAD segment out of bounds".into())),
        }
    }
    Ok(None)
}

fn find_section<'data, Elf: FileHeader<Endian = Endianness>>(
    data: &'data [u8],
    name: &str,
) -> Result<Option<&'data [u8]>, ElfError> {
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let sections = header.sections(endian, data).map_err(malformed)?;
    match sections.section_by_name(endian, name.as_bytes()) {
        Some((_, section)) => section.data(endian, data).map(Some).map_err(malformed),
        None => Ok(None),
    }
}

/// Splits an RPATH/RUNPATH string. Empty elements (meaning the current directory) are dropped:
/// they depend on where the program is started, which is not a property of the image.
fn split_path_list(list: &str) -> Vec<String> {
    list.split(':')
        .filter(|element| !element.is_empty())
        .map(str::to_string)
        .collect()
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, ElfError> {
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| ElfError::Malformed(format!("{what} is not valid UTF-8")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal, well-formed little-endian ELF for tests: one PT_LOAD covering the
    /// whole file at address 0, an optional PT_INTERP, and a PT_DYNAMIC with the given tags.
    pub(crate) struct TestElf {
        pub class: ElfClass,
        pub machine: u16,
        pub file_type: u16,
        pub interpreter: Option<String>,
        pub needed: Vec<String>,
        pub rpath: Option<String>,
        pub runpath: Option<String>,
        pub soname: Option<String>,
    }

    impl TestElf {
        pub(crate) fn library(soname: &str) -> TestElf {
            TestElf {
                class: ElfClass::Elf64,
                machine: object::elf::EM_X86_64,
                file_type: object::elf::ET_DYN,
                interpreter: None,
                needed: Vec::new(),
                rpath: None,
                runpath: None,
                soname: Some(soname.to_string()),
            }
        }

        pub(crate) fn executable(interpreter: &str, needed: &[&str]) -> TestElf {
            TestElf {
                interpreter: Some(interpreter.to_string()),
                needed: needed.iter().map(|n| n.to_string()).collect(),
                soname: None,
                file_type: object::elf::ET_DYN,
                ..TestElf::library("")
            }
        }

        pub(crate) fn needing(mut self, needed: &[&str]) -> TestElf {
            self.needed = needed.iter().map(|n| n.to_string()).collect();
            self
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let wide = self.class == ElfClass::Elf64;
            let (ehsize, phentsize, dynsize) = if wide { (64, 56, 16) } else { (52, 32, 8) };
            let mut strtab = vec![0u8];
            let mut add_string = |s: &str| {
                let offset = strtab.len() as u64;
                strtab.extend_from_slice(s.as_bytes());
                strtab.push(0);
                offset
            };
            let mut dynamic: Vec<(u64, u64)> = Vec::new();
            for name in &self.needed {
                dynamic.push((object::elf::DT_NEEDED.into(), add_string(name)));
            }
            if let Some(soname) = &self.soname {
                dynamic.push((object::elf::DT_SONAME.into(), add_string(soname)));
            }
            if let Some(rpath) = &self.rpath {
                dynamic.push((object::elf::DT_RPATH.into(), add_string(rpath)));
            }
            if let Some(runpath) = &self.runpath {
                dynamic.push((object::elf::DT_RUNPATH.into(), add_string(runpath)));
            }
            let interp_bytes = self.interpreter.as_ref().map(|i| {
                let mut bytes = i.as_bytes().to_vec();
                bytes.push(0);
                bytes
            });
            let phnum = 2 + usize::from(interp_bytes.is_some());
            let phoff = ehsize;
            let mut offset = phoff + phnum * phentsize;
            let interp_offset = offset;
            offset += interp_bytes.as_ref().map_or(0, Vec::len);
            let strtab_offset = offset;
            offset += strtab.len();
            offset = offset.div_ceil(8) * 8;
            let dynamic_offset = offset;
            dynamic.push((object::elf::DT_STRTAB.into(), strtab_offset as u64));
            dynamic.push((object::elf::DT_STRSZ.into(), strtab.len() as u64));
            dynamic.push((object::elf::DT_NULL.into(), 0));
            let total = dynamic_offset + dynamic.len() * dynsize;

            let mut out = Vec::with_capacity(total);
            let word = |out: &mut Vec<u8>, value: u64| {
                if wide {
                    out.extend_from_slice(&value.to_le_bytes());
                } else {
                    out.extend_from_slice(&(value as u32).to_le_bytes());
                }
            };
            out.extend_from_slice(b"\x7fELF");
            out.push(if wide { 2 } else { 1 });
            out.extend_from_slice(&[1, 1, 0]);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&self.file_type.to_le_bytes());
            out.extend_from_slice(&self.machine.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            word(&mut out, 0); // entry
            word(&mut out, phoff as u64);
            word(&mut out, 0); // shoff
            out.extend_from_slice(&0u32.to_le_bytes()); // flags
            out.extend_from_slice(&(ehsize as u16).to_le_bytes());
            out.extend_from_slice(&(phentsize as u16).to_le_bytes());
            out.extend_from_slice(&(phnum as u16).to_le_bytes());
            out.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
            assert_eq!(out.len(), ehsize);
            let program_header = |out: &mut Vec<u8>, p_type: u32, offset: usize, size: usize| {
                out.extend_from_slice(&p_type.to_le_bytes());
                if wide {
                    out.extend_from_slice(&4u32.to_le_bytes()); // flags
                    for value in [offset, offset, offset, size, size, 8] {
                        out.extend_from_slice(&(value as u64).to_le_bytes());
                    }
                } else {
                    for value in [offset, offset, offset, size, size] {
                        out.extend_from_slice(&(value as u32).to_le_bytes());
                    }
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&8u32.to_le_bytes());
                }
            };
            program_header(&mut out, object::elf::PT_LOAD, 0, total);
            if let Some(bytes) = &interp_bytes {
                program_header(&mut out, object::elf::PT_INTERP, interp_offset, bytes.len());
            }
            program_header(
                &mut out,
                object::elf::PT_DYNAMIC,
                dynamic_offset,
                dynamic.len() * dynsize,
            );
            if let Some(bytes) = &interp_bytes {
                out.extend_from_slice(bytes);
            }
            out.extend_from_slice(&strtab);
            out.resize(dynamic_offset, 0);
            for (tag, value) in dynamic {
                word(&mut out, tag);
                word(&mut out, value);
            }
            assert_eq!(out.len(), total);
            out
        }
    }

    #[test]
    fn parses_a_synthetic_executable() {
        let mut elf = TestElf::executable("/lib64/ld.so", &["libfoo.so.1", "libc.so.6"]);
        elf.runpath = Some("$ORIGIN/../lib::/opt/lib".into());
        let info = parse_elf(&elf.build()).unwrap();
        assert_eq!(info.class, ElfClass::Elf64);
        assert_eq!(info.machine, object::elf::EM_X86_64);
        assert_eq!(info.interpreter.as_deref(), Some("/lib64/ld.so"));
        assert_eq!(info.needed, ["libfoo.so.1", "libc.so.6"]);
        assert_eq!(info.runpath, ["$ORIGIN/../lib", "/opt/lib"]);
        assert!(info.rpath.is_empty());
        assert!(!info.is_static());
    }

    #[test]
    fn parses_a_32_bit_library() {
        let mut elf = TestElf::library("libbar.so.2");
        elf.class = ElfClass::Elf32;
        elf.machine = object::elf::EM_386;
        elf.rpath = Some("/x".into());
        let info = parse_elf(&elf.build()).unwrap();
        assert_eq!(info.class, ElfClass::Elf32);
        assert_eq!(info.soname.as_deref(), Some("libbar.so.2"));
        assert_eq!(info.rpath, ["/x"]);
        let other = parse_elf(&TestElf::library("x").build()).unwrap();
        assert!(!info.is_compatible_with(&other));
    }

    #[test]
    fn parses_this_machines_ls() {
        let Ok(bytes) = std::fs::read("/bin/ls") else {
            return;
        };
        let info = parse_elf(&bytes).unwrap();
        assert!(info.interpreter.is_some());
        assert!(info.needed.iter().any(|n| n == "libc.so.6"));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = TestElf::executable("/lib64/ld.so", &["libc.so.6"]).build();
        for length in 0..bytes.len() {
            assert!(parse_elf(&bytes[..length]).is_err(), "length {length}");
        }
        assert_eq!(parse_elf(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        let mut bad_class = bytes.clone();
        bad_class[4] = 7;
        assert!(matches!(parse_elf(&bad_class), Err(ElfError::Malformed(_))));
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = TestElf::executable("/lib64/ld.so", &["libc.so.6", "libm.so.6"]).build();
        // Flip every byte to a few values; the parser must return, whatever it returns.
        for index in 0..bytes.len() {
            for value in [0x00, 0x7f, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[index] = value;
                let _ = parse_elf(&corrupted);
                let _ = section_data(&corrupted, ".modinfo");
            }
        }
    }

    #[test]
    fn a_file_without_sections_has_no_modinfo() {
        let bytes = TestElf::library("x").build();
        assert_eq!(section_data(&bytes, ".modinfo").unwrap(), None);
    }
}
