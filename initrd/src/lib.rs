//! Reproducible initramfs builder (newc cpio): regular files, directories, symlinks, device
//! nodes, the ELF shared-library closure of a binary, the kernel-module closure from
//! `modules.dep`, and zstd or gzip compression.
