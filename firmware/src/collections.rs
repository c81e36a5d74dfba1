//! The collections both firmware programs build through their global allocator: a `Vec` grown
//! by pushes, a `BTreeMap` of scattered keys, a `String` grown by appends.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The three collections, live.
pub(crate) struct Collections {
    samples: Vec<u32>,
    by_key: BTreeMap<u32, u32>,
    text: String,
}

impl Collections {
    pub(crate) fn build() -> Self {
        let mut samples = Vec::new();
        for reading in 0..1000 {
            samples.push(reading * 3);
        }
        let mut by_key = BTreeMap::new();
        for key in 0..500u32 {
            by_key.insert(key.wrapping_mul(2_654_435_761), key);
        }
        let mut text = String::new();
        for word in ["melon", "alloc", "on", "a", "microcontroller"] {
            text.push_str(word);
            text.push(' ');
        }
        Self { samples, by_key, text }
    }

    /// Whether they hold what [`build`](Collections::build) put in them.
    pub(crate) fn intact(&self) -> bool {
        let keys_in_order = self.by_key.keys().zip(self.by_key.keys().skip(1)).all(|(a, b)| a < b);
        self.samples.iter().sum::<u32>() == 1_498_500
            && self.by_key.len() == 500
            && keys_in_order
            && self.text == "melon alloc on a microcontroller "
    }
}
