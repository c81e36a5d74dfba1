//! What a heap pool gives a request, derived from the layout the engine documents rather than
//! from its code: the oracle of the model test and of the fuzz target, which include this file.

use melon_alloc_core::{CHUNK_SIZE, CLASS_COUNT, CLASS_SIZES, MAX_SMALL, MIN_ALIGN};

/// What the model expects a request to get.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Expect {
    /// A block of a size class.
    Small { usable: usize },
    /// A chunk of its own, `span` bytes long with its header.
    Large { usable: usize, span: usize },
    /// Nothing, whatever the limits: an alignment of a whole chunk or more, or a size no
    /// allocator can serve.
    Never,
}

impl Expect {
    pub(crate) fn usable(self) -> usize {
        match self {
            Self::Small { usable } | Self::Large { usable, .. } => usable,
            Self::Never => unreachable!(),
        }
    }

    /// The length of a large block's own chunk.
    pub(crate) fn span(self) -> Option<usize> {
        match self {
            Self::Large { span, .. } => Some(span),
            _ => None,
        }
    }

    /// Checks the usable size of a block served for this expectation, and returns the length of
    /// its chunk if it is large. A large block of a pool over the global allocator may lie in a
    /// kept chunk up to a quarter longer than its own (rounded down to 16), and then has that
    /// much more room; every other block has exactly the usable size expected.
    pub(crate) fn check_served(
        self,
        usable: usize,
        over_global: bool,
    ) -> Result<Option<usize>, String> {
        match self {
            Self::Large { usable: want, span } if over_global => {
                let most = (span + span / 4) & !15;
                match usable.checked_sub(want).map(|extra| span + extra) {
                    Some(got) if got <= most => Ok(Some(got)),
                    _ => Err(format!("usable {usable}, expected {want} to {}", want + most - span)),
                }
            }
            Self::Small { usable: want } | Self::Large { usable: want, .. } if usable == want => {
                Ok(self.span())
            }
            _ => Err(format!("usable {usable}, expected {}", self.usable())),
        }
    }

    /// This expectation in a pool whose source takes its memory in whole `granule`s (a power of
    /// two; `ChunkSource::granule`): a large block's chunk is its span rounded up to it, all of
    /// it the block's.
    // Only the fuzz target has pools over a source with a granule above 16, a shared pool.
    #[allow(dead_code)]
    pub(crate) fn in_granule(self, granule: usize) -> Self {
        match self {
            Self::Large { usable, span } => {
                let whole = span.next_multiple_of(granule);
                Self::Large { usable: usable + (whole - span), span: whole }
            }
            other => other,
        }
    }

    /// Bytes each pool of the chain must be able to take for the request to be served: a new
    /// chunk for a small block (it may not need one), the whole chunk for a large one.
    pub(crate) fn need(self) -> usize {
        match self {
            Self::Small { .. } => CHUNK_SIZE,
            Self::Large { span, .. } => span,
            Self::Never => usize::MAX,
        }
    }
}

/// The alignment every block of a class has: blocks start after the 64-byte chunk header, except
/// that power-of-two classes above 64 bytes start at their own size.
fn class_align(class: usize) -> usize {
    let size = CLASS_SIZES[class];
    let first = if size.is_power_of_two() && size > 64 { size } else { 64 };
    1 << first.trailing_zeros().min(size.trailing_zeros())
}

/// What a request of `size` bytes aligned to `align` gets.
pub(crate) fn expect(size: usize, align: usize) -> Expect {
    if align >= CHUNK_SIZE {
        return Expect::Never;
    }
    if size <= MAX_SMALL {
        let class = (0..CLASS_COUNT)
            .find(|&class| CLASS_SIZES[class] >= size && class_align(class) >= align);
        if let Some(class) = class {
            return Expect::Small { usable: CLASS_SIZES[class] };
        }
    }
    if size > 1 << 40 {
        return Expect::Never;
    }
    let usable = size.max(MIN_ALIGN).next_multiple_of(MIN_ALIGN);
    Expect::Large { usable, span: align.max(64) + usable }
}
