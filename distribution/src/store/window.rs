//! Windows of the store's address space (docs/store.md §3). Every pack file holds its blob at
//! `base`, the start of a window of whole 128 MiB slots no other pack shares, so that the
//! device-relative addresses of different packs never touch and the kernel's file-backed EROFS
//! cannot merge reads across pack files. Slot 0 is never given out: a descriptor's own
//! (primary-device) data then never touches a pack's window either.

/// Size of a slot of the store's address space.
pub const SLOT: u64 = 128 << 20;

/// Slots a blob of `blob_len` bytes takes: enough that its window ends strictly before the
/// next window starts (a blob of exactly one slot takes two).
pub fn slots_for(blob_len: u64) -> u64 {
    blob_len / SLOT + 1
}

/// The lowest first slot of `need` consecutive free slots, slot 0 excluded, given the windows
/// in use as `(first slot, slot count)` (in any order, possibly overlapping if files are
/// damaged).
pub fn allocate(used: &[(u64, u64)], need: u64) -> u64 {
    let mut used: Vec<(u64, u64)> = used.to_vec();
    used.sort_unstable();
    let mut candidate = 1u64;
    for &(first, count) in &used {
        if first >= candidate.saturating_add(need) {
            break;
        }
        candidate = candidate.max(first.saturating_add(count));
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_never_touch() {
        assert_eq!(slots_for(4096), 1);
        assert_eq!(slots_for(SLOT - 4096), 1);
        assert_eq!(slots_for(SLOT), 2);
        assert_eq!(slots_for(3 * SLOT + 1), 4);
    }

    #[test]
    fn lowest_free_run_is_taken_and_freed_slots_are_reused() {
        assert_eq!(allocate(&[], 1), 1);
        assert_eq!(allocate(&[(1, 1)], 1), 2);
        assert_eq!(allocate(&[(1, 1), (3, 1)], 1), 2);
        assert_eq!(allocate(&[(3, 1), (1, 1)], 2), 4);
        assert_eq!(allocate(&[(2, 2)], 1), 1);
        assert_eq!(allocate(&[(2, 2)], 2), 4);
        assert_eq!(allocate(&[(1, 5), (2, 1)], 1), 6);
        // A random sequence of allocations and frees never overlaps.
        let mut x = 12345u64;
        let mut live: Vec<(u64, u64)> = Vec::new();
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 && !live.is_empty() {
                live.swap_remove((x as usize / 3) % live.len());
                continue;
            }
            let need = 1 + x % 3;
            let first = allocate(&live, need);
            assert!(first >= 1);
            for &(f, c) in &live {
                assert!(
                    first + need <= f || f + c <= first,
                    "{first}+{need} vs {f}+{c}"
                );
            }
            live.push((first, need));
        }
    }
}
