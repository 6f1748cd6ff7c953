//! The system calls the mount helper needs that `nix` does not wrap: the new mount API
//! (`fsopen`, `fsconfig`, `fsmount`, `move_mount`) and the loop-device ioctls. The only module
//! of the helper with `unsafe`: each call passes pointers to live, correctly sized values and
//! takes ownership of the descriptors the kernel returns.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// <linux/mount.h>
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `MOUNT_ATTR_*` flags for [`fsmount`] (`<linux/mount.h>`).
pub mod attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x0000_0001;
    /// Ignore set-user-id and set-group-id bits.
    pub const NOSUID: u64 = 0x0000_0002;
    /// Refuse access to device files.
    pub const NODEV: u64 = 0x0000_0004;
    /// Refuse execution.
    pub const NOEXEC: u64 = 0x0000_0008;
    /// Do not update access times.
    pub const NOATIME: u64 = 0x0000_0010;
    /// Always update access times.
    pub const STRICTATIME: u64 = 0x0000_0020;
    /// Do not update directory access times.
    pub const NODIRATIME: u64 = 0x0000_0080;
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fsopen(fstype, FSOPEN_CLOEXEC)`: a filesystem context to configure.
pub fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is a valid NUL-terminated string for the duration of the call.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// `fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0)`.
pub fn fsconfig_string(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call; the
    // descriptor is open (borrowed).
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
}

/// `fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0)`.
pub fn fsconfig_flag(fs: BorrowedFd<'_>, key: &CStr) -> io::Result<()> {
    // SAFETY: `key` is valid and NUL-terminated; a flag takes no value (NULL, 0).
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
}

/// `fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0)`: creates the superblock (the kernel
/// opens the source and devices and reads the superblock here).
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the command takes no pointers.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
}

/// `fsmount(fs, FSMOUNT_CLOEXEC, attrs)`: a detached mount of the created superblock.
pub fn fsmount(fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// `move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached mount
/// at `target`.
pub fn move_mount(mnt: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

// <linux/loop.h>
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// The loop device refuses writes.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// The loop device detaches itself when its last user closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// `ioctl(control, LOOP_CTL_GET_FREE)`: the number of a free loop device (created if needed).
pub fn loop_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: the request takes no argument.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    u32::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// `ioctl(dev, LOOP_CONFIGURE, &config)`: binds `backing` to the loop device `dev` with
/// `flags`, recording `name` (truncated to 63 bytes) as its file name.
pub fn loop_configure(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    flags: u32,
    name: &[u8],
) -> io::Result<()> {
    let mut file_name = [0u8; LO_NAME_SIZE];
    let n = name.len().min(LO_NAME_SIZE - 1);
    file_name[..n].copy_from_slice(&name[..n]);
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("bad descriptor"))?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised `struct loop_config` that outlives the call; the
    // kernel only reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clears `FD_CLOEXEC` on `fd`. Async-signal-safe: used between `fork` and `exec` to hand
/// descriptors to the reader daemon.
pub fn clear_cloexec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFD/F_SETFD takes and returns plain integers; an invalid
    // descriptor gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` with the descriptors `keep` (open with `FD_CLOEXEC` in this process) left open
/// in the child under the same numbers.
pub fn spawn_keeping(
    cmd: &mut std::process::Command,
    keep: &[libc::c_int],
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let keep = keep.to_vec();
    // SAFETY: the closure runs between fork and exec and only calls fcntl, which is
    // async-signal-safe; it allocates nothing (`keep` was allocated before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                clear_cloexec(fd)?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Forks. Returns `None` in the child and the child's pid in the parent. Only for a process
/// that has a single thread (the reader daemon right after `exec`), where the child may run
/// anything.
pub fn fork_single_threaded() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller guarantees the process has one thread, so the child inherits no lock
    // held by another thread and may allocate and run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Takes ownership of descriptor `fd`, inherited from the process that started this one (which
/// named it on the command line), after checking that it is open.
pub fn take_inherited_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor's flags.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("descriptor {fd} is not open")));
    }
    // SAFETY: the descriptor is open and was inherited for this process to own: nothing else
    // in this process refers to it (the caller takes each number once).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor above 2 except `keep`: a daemon must not hold its starter's pipes
/// and files open (a caller waiting for end-of-file on a pipe would wait for the daemon).
/// Call before anything in this process opens descriptors it still needs.
pub fn close_fds_except(keep: &[libc::c_int]) {
    let open: Vec<libc::c_int> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor this process owns but will never use; the one
            // read_dir used for the listing is already closed (and closing it again only
            // fails with EBADF).
            unsafe { libc::close(fd) };
        }
    }
}
