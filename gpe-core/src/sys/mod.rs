//! The one place in gpe-core where `unsafe` is allowed: shared-memory slots and inherited fds.
#![allow(unsafe_code)]

pub(crate) mod fd;
pub(crate) mod mmap;
