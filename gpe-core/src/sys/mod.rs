//! The one place in gpe-core where `unsafe` is allowed: shared-memory slots, inherited fds and
//! local time (`localtime_r`).
#![allow(unsafe_code)]

pub(crate) mod fd;
pub(crate) mod mmap;
pub(crate) mod time;
