//! Size classes: which block size serves a request, and how a chunk of that class is laid out.
//!
//! Small requests are rounded up to one of [`CLASS_COUNT`] block sizes: every multiple of 16 up
//! to 256 bytes (so the common small sizes waste nothing), then four classes per power of two up
//! to 2 KiB (at most 25 % rounding), then the sizes that split a chunk's data bytes exactly into
//! 6, 5, 4, 3 and 2 blocks, up to [`MAX_SMALL`]. Larger requests get a chunk of their own.
//!
//! With the `small-chunks` feature (4 KiB chunks) the four classes per power of two stop at
//! 1 KiB, and the last two classes split the chunk's data bytes into 3 and 2 blocks.

use crate::chunk::{CHUNK_SIZE, HEADER_SIZE};

/// Number of small size classes.
pub const CLASS_COUNT: usize = CLASS_SIZES.len();

/// The largest request served from a size class; larger ones get a chunk of their own.
pub const MAX_SMALL: usize = CLASS_SIZES[CLASS_COUNT - 1];

/// Alignment of every block handed out by `alloc`: what `malloc` promises on x86_64.
pub const MIN_ALIGN: usize = 16;

/// Block size of each class, in bytes.
#[cfg(not(feature = "small-chunks"))]
pub const CLASS_SIZES: [usize; 33] = [
    16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, // step 16
    320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, // four per doubling
    // The chunk's 16,320 data bytes in 6, 5, 4, 3 and 2 blocks: nothing wasted at the class size,
    // and at most a third (a half for the last) for a request just above the class below.
    2720, 3264, 4080, 5440, 8160,
];

/// Block size of each class, in bytes.
#[cfg(feature = "small-chunks")]
pub const CLASS_SIZES: [usize; 26] = [
    16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, // step 16
    320, 384, 448, 512, 640, 768, 896, 1024, // four per doubling
    // The chunk's 4,032 data bytes in 3 and 2 blocks, as above.
    1344, 2016,
];

/// Class index for every request size rounded up to 16, indexed by `(size + 15) / 16`.
const LOOKUP: [u8; MAX_SMALL / MIN_ALIGN + 1] = {
    let mut table = [0u8; MAX_SMALL / MIN_ALIGN + 1];
    let mut slot = 0;
    let mut class = 0;
    while slot < table.len() {
        while CLASS_SIZES[class] < slot * MIN_ALIGN {
            class += 1;
        }
        table[slot] = class as u8;
        slot += 1;
    }
    table
};

/// Offset of the first block in a chunk of each class. Power-of-two classes start at their own
/// size so that every block is aligned to it, which is what lets `alloc_layout` serve large
/// alignments from small classes without a chunk of its own.
pub(crate) const FIRST_OFFSET: [usize; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        let size = CLASS_SIZES[class];
        table[class] =
            if size.is_power_of_two() && size > HEADER_SIZE { size } else { HEADER_SIZE };
        class += 1;
    }
    table
};

/// Number of blocks in a chunk of each class.
pub(crate) const CAPACITY: [u16; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        table[class] = ((CHUNK_SIZE - FIRST_OFFSET[class]) / CLASS_SIZES[class]) as u16;
        class += 1;
    }
    table
};

/// Number of blocks in a page of a paged chunk of each class; 0 for a class whose blocks do not
/// fit a page, which only ever has whole chunks.
pub(crate) const PAGE_CAPACITY: [u16; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT && crate::chunk::PAGES > 1 {
        let page = crate::chunk::PAGE_SIZE;
        if FIRST_OFFSET[class] < page {
            table[class] = ((page - FIRST_OFFSET[class]) / CLASS_SIZES[class]) as u16;
        }
        class += 1;
    }
    table
};

/// The alignment every block of each class is guaranteed to have.
pub(crate) const BLOCK_ALIGN: [usize; CLASS_COUNT] = {
    let mut table = [0; CLASS_COUNT];
    let mut class = 0;
    while class < CLASS_COUNT {
        let first = FIRST_OFFSET[class].trailing_zeros();
        let size = CLASS_SIZES[class].trailing_zeros();
        table[class] = 1 << if first < size { first } else { size };
        class += 1;
    }
    table
};

static_assertions::const_assert!(CLASS_SIZES[CLASS_COUNT - 1] == MAX_SMALL);
static_assertions::const_assert!(CLASS_SIZES[0] == MIN_ALIGN);
// Every class fits at least two blocks in a chunk, so a chunk is never a waste of its header.
static_assertions::const_assert!((CHUNK_SIZE - HEADER_SIZE) / MAX_SMALL >= 2);

/// The class serving a request of `size` bytes with the minimum alignment, or `None` when the
/// request is larger than [`MAX_SMALL`].
///
/// # Examples
/// ```
/// use melon_alloc_core::{class_of, CLASS_SIZES, MAX_SMALL};
///
/// assert_eq!(CLASS_SIZES[class_of(100).unwrap()], 112);
/// assert_eq!(CLASS_SIZES[class_of(MAX_SMALL).unwrap()], MAX_SMALL);
/// assert_eq!(class_of(MAX_SMALL + 1), None);
/// ```
#[inline(always)]
pub fn class_of(size: usize) -> Option<usize> {
    if size <= MAX_SMALL {
        Some(LOOKUP[size.div_ceil(MIN_ALIGN)] as usize)
    } else {
        None
    }
}

/// The smallest class whose blocks hold `size` bytes aligned to `align`, if any.
#[inline]
pub(crate) fn class_for_layout(size: usize, align: usize) -> Option<usize> {
    let first = class_of(size)?;
    (first..CLASS_COUNT).find(|&class| BLOCK_ALIGN[class] >= align)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest power-of-two class: the classes above it split a chunk's data bytes exactly.
    const LAST_DOUBLING: usize = if cfg!(feature = "small-chunks") { 1024 } else { 2048 };

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        for size in 0..=MAX_SMALL {
            let class = class_of(size).unwrap();
            assert!(CLASS_SIZES[class] >= size, "size {size}");
            if class > 0 {
                assert!(
                    CLASS_SIZES[class - 1] < size.max(1),
                    "size {size} could use a smaller class"
                );
            }
        }
        assert_eq!(class_of(MAX_SMALL + 1), None);
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn class_layouts_fit_in_a_chunk() {
        for class in 0..CLASS_COUNT {
            let end = FIRST_OFFSET[class] + CAPACITY[class] as usize * CLASS_SIZES[class];
            assert!(end <= CHUNK_SIZE);
            assert!(FIRST_OFFSET[class] >= HEADER_SIZE);
            assert_eq!(FIRST_OFFSET[class] % BLOCK_ALIGN[class], 0);
            assert_eq!(CLASS_SIZES[class] % BLOCK_ALIGN[class], 0);
            assert!(BLOCK_ALIGN[class] >= MIN_ALIGN);
        }
    }

    #[test]
    fn the_classes_above_the_last_doubling_fill_their_chunks_exactly() {
        let last_doubling = CLASS_SIZES.iter().position(|&size| size == LAST_DOUBLING).unwrap();
        for class in last_doubling + 1..CLASS_COUNT {
            assert_eq!(FIRST_OFFSET[class], HEADER_SIZE);
            let used = CAPACITY[class] as usize * CLASS_SIZES[class];
            assert_eq!(used, CHUNK_SIZE - HEADER_SIZE, "class {}", CLASS_SIZES[class]);
        }
    }

    #[test]
    fn aligned_layouts_pick_an_aligned_class() {
        assert_eq!(class_for_layout(16, 16), Some(0));
        let class = class_for_layout(16, 128).unwrap();
        assert_eq!(CLASS_SIZES[class], 128);
        let class = class_for_layout(100, 64).unwrap();
        assert_eq!(CLASS_SIZES[class], 128);
        assert_eq!(class_for_layout(16, 4096), None);
        assert_eq!(class_for_layout(MAX_SMALL + 1, 16), None);
    }
}
