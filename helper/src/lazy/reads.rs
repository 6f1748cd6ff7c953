//! What a pre-content event's range says about the frames a kernel read needs (docs/lazy.md
//! rule 10).
//!
//! The kernel's EROFS reads a pack file from the first page of the first compressed extent it
//! decodes, so the first page of a read may hold the tail of the frame before, which the read
//! does not decode: filling that frame would fetch it for nothing (21 of the 120 chunks a lazy
//! python start touched). A frame the read does need never starts before the read: EROFS reads
//! every extent it decodes whole, from its first page, and when it cuts a long read into
//! several (one event each), the piece holding a frame's first bytes comes first and the frame
//! is filled while that piece's event waits.

use std::ops::Range;

/// The granularity of the kernel's reads of a pack file.
pub const PAGE: u64 = 4096;

/// True if `frame` (pack-file bytes) is the tail of a frame before a read of `read`: it starts
/// before the read and ends within the read's first page, so the read does not need it.
pub fn is_tail_before(frame: &Range<u64>, read: &Range<u64>) -> bool {
    let first_page_end = (read.start / PAGE + 1) * PAGE;
    frame.start < read.start && frame.end <= first_page_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_frame_ending_in_the_first_page_and_starting_before_the_read_is_a_tail() {
        let read = 8192..20480;
        // Ends inside the read's first page, started before it: the frame before.
        assert!(is_tail_before(&(5000..9000), &read));
        assert!(is_tail_before(&(100..12288), &read));
        // Starts at or after the read's start: maybe the frame the read is for.
        assert!(!is_tail_before(&(8192..9000), &read));
        assert!(!is_tail_before(&(8500..9000), &read));
        // Goes on past the first page: a long frame read in pieces, or needed anyway.
        assert!(!is_tail_before(&(5000..12289), &read));
        assert!(!is_tail_before(&(0..30000), &read));
        // A read that does not start on a page: its first page is the one it starts in.
        assert!(is_tail_before(&(0..8300), &(8200..9000)));
        assert!(!is_tail_before(&(0..12300), &(8200..9000)));
    }
}
