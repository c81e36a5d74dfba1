//! What the firmware tells the host: a line per phase on the semihosting console, and the exit
//! code QEMU passes on (0 when every check held).

use core::fmt::{self, Write as _};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_semihosting::{debug, hio};

/// The message with which `alloc` reports an allocation it could not serve, from its default
/// error handler on targets without `std`.
const ALLOC_ERROR: &str = "memory allocation of ";

/// Set by a program that runs its allocator dry on purpose: from then on, reaching the
/// allocation error handler is the expected end of the run.
pub(crate) static EXHAUSTING: AtomicBool = AtomicBool::new(false);

/// Writes one line to the host's console; nothing if the host has none.
pub(crate) fn say(line: fmt::Arguments<'_>) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = writeln!(out, "{line}");
    }
}

/// Reports a phase that passed.
#[allow(dead_code, reason = "the test firmware reports phases; the comparison does not")]
pub(crate) fn pass(phase: &str) {
    say(format_args!("ok: {phase}"));
}

/// Reports a failed check and ends the run with a failure.
pub(crate) fn fail(phase: &str, what: fmt::Arguments<'_>) -> ! {
    say(format_args!("FAILED: {phase}: {what}"));
    exit(false)
}

/// Ends the run with the exit code QEMU passes on.
pub(crate) fn exit(success: bool) -> ! {
    debug::exit(if success { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Only reached where the host does not end the program.
    loop {
        cortex_m::asm::bkpt();
    }
}

/// A buffer that keeps the first bytes written to it, to read a panic's message.
struct Start {
    bytes: [u8; 64],
    len: usize,
}

impl fmt::Write for Start {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let taken = text.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.len += taken;
        Ok(())
    }
}

/// A panic: after [`EXHAUSTING`] is set, the allocation error handler's panic is the expected
/// end of the run, which passes; any other panic fails it.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut start = Start { bytes: [0; 64], len: 0 };
    let _ = write!(start, "{}", info.message());
    let alloc_error = start.bytes[..start.len].starts_with(ALLOC_ERROR.as_bytes());
    if EXHAUSTING.load(Ordering::SeqCst) && alloc_error {
        say(format_args!("ok: the allocation error handler was reached: {}", info.message()));
        say(format_args!("all checks passed"));
        exit(true)
    }
    say(format_args!("FAILED: panic: {info}"));
    exit(false)
}
