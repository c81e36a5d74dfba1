//! Drives a shared pool's directory of names, its typed boxes and its offsets against a model:
//! a map of the names and the values under them, and the boxes this process owns. Every answer
//! must match the model (a name there or not, the value under it, a type mismatch exactly when
//! the type differs), an offset that names no value must be refused, and `check()` must hold
//! after every step.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use melon_alloc_shm::{ShmBox, ShmError, ShmOffset, ShmPool};

/// Capacity of the pool: small, so that a full pool and a full directory are both reached.
const CAPACITY: usize = 1 << 20;

/// The types a name may hold: each its own shape, but for `U64` and `I64`, which only their
/// names tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    U32(u32),
    U64(u64),
    I64(i64),
    Bytes([u8; 40]),
}

/// A name from the fuzzer's byte: few enough that they collide often, long and short.
fn name(byte: u8) -> String {
    let stem = ["a", "session", "x", "a-name-of-sixty-four-bytes-that-fills-an-entry-to-its-end"];
    format!("{}{byte}", stem[usize::from(byte % 4)])
}

fn insert(shm: &ShmPool, name: &str, value: Value) -> Result<u64, ShmError> {
    match value {
        Value::U32(v) => shm.insert_named(name, v).map(ShmOffset::raw),
        Value::U64(v) => shm.insert_named(name, v).map(ShmOffset::raw),
        Value::I64(v) => shm.insert_named(name, v).map(ShmOffset::raw),
        Value::Bytes(v) => shm.insert_named(name, v).map(ShmOffset::raw),
    }
}

/// What `named` answers for `name` read as the type of `like`.
fn read(shm: &ShmPool, name: &str, like: Value) -> Result<Option<Value>, ShmError> {
    Ok(match like {
        Value::U32(_) => shm.named::<u32>(name)?.map(|v| Value::U32(*v)),
        Value::U64(_) => shm.named::<u64>(name)?.map(|v| Value::U64(*v)),
        Value::I64(_) => shm.named::<i64>(name)?.map(|v| Value::I64(*v)),
        Value::Bytes(_) => shm.named::<[u8; 40]>(name)?.map(|v| Value::Bytes(*v)),
    })
}

fn remove(shm: &ShmPool, name: &str, like: Value) -> Result<bool, ShmError> {
    // SAFETY: no reference to a named value outlives the step that made it.
    unsafe {
        match like {
            Value::U32(_) => shm.remove_named::<u32>(name),
            Value::U64(_) => shm.remove_named::<u64>(name),
            Value::I64(_) => shm.remove_named::<i64>(name),
            Value::Bytes(_) => shm.remove_named::<[u8; 40]>(name),
        }
    }
}

fn same_type(a: Value, b: Value) -> bool {
    core::mem::discriminant(&a) == core::mem::discriminant(&b)
}

fuzz_target!(|data: &[u8]| {
    let shm = ShmPool::new(CAPACITY).unwrap();
    let mut names: HashMap<String, Value> = HashMap::new();
    let mut boxes: Vec<ShmBox<'_, u64>> = Vec::new();
    for step in data.chunks_exact(3) {
        let [op, a, b] = [step[0], step[1], step[2]];
        let name = name(a);
        let value = match b % 4 {
            0 => Value::U32(u32::from(a) << 8 | u32::from(b)),
            1 => Value::U64(u64::from(a) << 32 | u64::from(b)),
            2 => Value::I64(-(i64::from(a) << 32 | i64::from(b))),
            _ => Value::Bytes([b; 40]),
        };
        match op % 6 {
            0 => match (insert(&shm, &name, value), names.contains_key(&name)) {
                (Ok(_), false) => {
                    names.insert(name, value);
                }
                (Err(ShmError::NameTaken), true) => {}
                (Err(ShmError::DirectoryFull), false) => {
                    assert_eq!(names.len(), ShmPool::NAME_SLOTS, "full with fewer names")
                }
                (Err(ShmError::OutOfMemory { .. } | ShmError::Fragmented { .. }), false) => {}
                (other, there) => panic!("insert {name}: {other:?}, in the model: {there}"),
            },
            1 => match (read(&shm, &name, value), names.get(&name)) {
                (Ok(None), None) => {}
                (Ok(Some(found)), Some(&placed)) => assert_eq!(found, placed, "{name}"),
                (Err(ShmError::TypeMismatch { .. }), Some(&placed)) => {
                    assert!(!same_type(placed, value), "{name}: a mismatch of the same type")
                }
                (other, placed) => panic!("read {name}: {other:?}, in the model: {placed:?}"),
            },
            2 => match (remove(&shm, &name, value), names.get(&name).copied()) {
                (Ok(false), None) => {}
                (Ok(true), Some(placed)) if same_type(placed, value) => {
                    names.remove(&name);
                }
                (Err(ShmError::TypeMismatch { .. }), Some(placed)) if !same_type(placed, value) => {
                }
                (other, placed) => panic!("remove {name}: {other:?}, in the model: {placed:?}"),
            },
            3 => {
                if let Ok(boxed) = ShmBox::new_in(u64::from(b), &shm) {
                    boxes.push(boxed);
                }
            }
            4 if !boxes.is_empty() => {
                // A box given up as an offset and taken up again holds the same value.
                let boxed = boxes.swap_remove(usize::from(a) % boxes.len());
                let value = *boxed;
                let offset = boxed.into_offset();
                // SAFETY: the offset was given up just above, and is taken up once.
                let again = unsafe { ShmBox::from_offset(&shm, offset) }.expect("taken up again");
                assert_eq!(*again, value);
                if b % 2 == 0 {
                    boxes.push(again);
                }
            }
            _ => {
                // An offset the fuzzer makes up: a value of a live box or refused, never a crash.
                let raw = u64::from(a) << 12 | u64::from(b) << 4 | u64::from(op >> 4);
                let offset = ShmOffset::<u64>::from_raw(raw);
                // SAFETY: an offset the checks let through starts a block in use of the pool,
                // at least 8 bytes, aligned to 8, which this single thread does not write while
                // it reads it; whatever value lies there, its bytes are a `u64`.
                if let Ok(value) = unsafe { shm.get(offset) } {
                    let _ = core::hint::black_box(*value);
                }
            }
        }
        if let Err(error) = shm.check() {
            panic!("check after {step:?}: {error}");
        }
        assert_eq!(shm.name_count().unwrap(), names.len());
    }
});
