//! The atomics and cells the crate's concurrent code uses: the standard ones, or loom's when the
//! crate is built with `--cfg melon_loom` so that loom can explore its schedules.

#[cfg(not(melon_loom))]
pub(crate) use core::sync::atomic::{AtomicBool, Ordering};
#[cfg(melon_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};

/// Tells the processor (or loom's scheduler) that this thread is waiting for another.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(melon_loom)]
    loom::thread::yield_now();
    #[cfg(not(melon_loom))]
    core::hint::spin_loop();
}

/// A cell whose every access goes through a closure, so that loom can check that no two threads
/// touch it at once.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(melon_loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(melon_loom))] core::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    #[cfg(not(melon_loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    #[cfg(melon_loom)]
    pub(crate) fn new(value: T) -> Self {
        Self(loom::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to the value.
    ///
    /// # Safety
    /// No other access to the value happens while `f` runs.
    #[inline]
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(melon_loom)]
        return self.0.with_mut(f);
        #[cfg(not(melon_loom))]
        f(self.0.get())
    }
}
