//! Helpers for end-to-end tests: network namespaces that clean up after themselves, real
//! client processes, QEMU nodes.
