//! The atomics that the pool's lock and undo log share between processes: the standard ones, or
//! loom's when the crate is built with `--cfg melon_loom`, so that loom can explore the
//! schedules of the lock and of an operation whose holder dies.

#[cfg(not(melon_loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(melon_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
