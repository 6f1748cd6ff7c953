//! What the store asks the kernel about processes and boots: the boot id (a state file written
//! in another boot needs repair, docs/store.md §4), whether the process that made a record or a
//! temporary file still lives (the same pid and start time), and whether a mount still exists.

use std::io;

/// Where the running kernel's boot id is.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The running kernel's boot id (a random UUID made at boot), as 16 bytes.
pub(crate) fn boot_id() -> io::Result<[u8; 16]> {
    let text = std::fs::read_to_string(BOOT_ID_PATH)?;
    parse_uuid(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{BOOT_ID_PATH}: not a UUID: {text:?}"),
        )
    })
}

/// The 16 bytes of a UUID written `8-4-4-4-12` in hex.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// This process's id and start time: what records name so that a reused pid is not taken for
/// the process that wrote them.
pub(crate) fn this_process() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat` field 22), or
/// `None` if there is no such process.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True if process `pid` lives and started at `start` (clock ticks since boot).
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && start_time(pid) == Some(start)
}

/// True if this process's mount table holds mount `mount_id` on `mount_point`.
pub(crate) fn mounted(mount_id: u64, mount_point: &str) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table.lines().any(|line| {
        let mut fields = line.split(' ');
        let id = fields.next().and_then(|f| f.parse::<u64>().ok());
        // Fields: id, parent, major:minor, root, mount point (octal-escaped).
        let point = fields.nth(3).map(unescape_mountinfo);
        id == Some(mount_id) && point.as_deref() == Some(mount_point)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let (pid, start) = this_process();
        assert!(start > 0);
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(!alive(0, 0));
    }

    #[test]
    fn boot_id_is_read_and_stable() {
        let a = boot_id().unwrap();
        assert_ne!(a, [0; 16]);
        assert_eq!(a, boot_id().unwrap());
        assert_eq!(
            parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap()[15],
            0xff
        );
        assert!(parse_uuid("not a uuid").is_none());
    }

    #[test]
    fn root_is_mounted_and_escapes_are_undone() {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap();
        let id: u64 = root.split(' ').next().unwrap().parse().unwrap();
        assert!(mounted(id, "/"));
        assert!(!mounted(id, "/nowhere"));
        assert_eq!(unescape_mountinfo(r"/a\040b\\"), r"/a b\\");
    }
}
